"""Per-key disk quota (CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES): the bytes one workspace holds in
outputs, VC inputs and voices, counted from the owner each of them records, and the check a write
must pass. Long-text job audio is not counted (it has its own retention). No Flask or gevent here.
"""
from __future__ import annotations

import os

from chatterbox_server.errors import ApiError
from chatterbox_server.store import files, paths
from chatterbox_server.store.outputs import SIDECAR_SUFFIX

SETTING = "CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES"


def _owner(meta: dict | None) -> str | None:
    owner = (meta or {}).get("owner")
    return owner if isinstance(owner, str) else None


def _size(path: str) -> int:
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:           # deleted (another instance, retention) while we counted
        return 0


def output_bytes(directory: str, owner: str) -> int:
    """Every output file (and metadata) of a base name whose metadata records `owner`."""
    owners: dict[str, str | None] = {}
    total = 0
    for folder, name in paths.walk_files(directory):
        key = paths.join(folder, name.split(".", 1)[0])
        if key not in owners:
            owners[key] = _owner(files.read_json(os.path.join(directory, key + SIDECAR_SUFFIX)))
        if owners[key] == owner:
            total += _size(os.path.join(directory, folder, name))
    return total


def sidecar_bytes(directory: str, owner: str, audio_suffix: str | None = None) -> int:
    """Files with a `{name}.json` beside them that records `owner` (VC inputs: any audio name;
    voices: `{stem}.wav` beside `{stem}.json`), their metadata included."""
    found = set(paths.walk_files(directory))
    total = 0
    for folder, name in found:
        if name.endswith(".json"):
            continue
        if audio_suffix is not None:
            if not name.endswith(audio_suffix):
                continue
            meta_name = name[:-len(audio_suffix)] + ".json"
        else:
            meta_name = name + ".json"
        if (folder, meta_name) not in found:
            continue
        meta_path = os.path.join(directory, folder, meta_name)
        if _owner(files.read_json(meta_path)) == owner:
            total += _size(os.path.join(directory, folder, name)) + _size(meta_path)
    return total


def workspace_bytes(outputs_dir: str, vc_inputs_dir: str, voices_dir: str, owner: str) -> int:
    return (output_bytes(outputs_dir, owner) + sidecar_bytes(vc_inputs_dir, owner)
            + sidecar_bytes(voices_dir, owner, ".wav"))


def check(used: int, adding: int | None, quota: int) -> None:
    """507 naming the setting when a write of `adding` bytes would take the workspace past `quota`
    (a write that adds nothing, e.g. a smaller replacement, always passes). A write of unknown size
    (a generation: None) is refused once the workspace is full; the quota is checked before the
    work, so no synthesis is thrown away, and one generation may pass it."""
    if quota <= 0:
        return
    if (adding is None and used >= quota) or (adding is not None and adding > 0 and used + adding > quota):
        more = f" and this write adds {adding}" if adding else ""
        raise ApiError(507, f"this key's workspace holds {used} bytes of outputs, VC inputs and voices{more}; "
                            f"{SETTING} is {quota}: delete some of them to make room",
                       code="quota_exceeded")
