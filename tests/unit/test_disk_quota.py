"""The per-key disk quota's accounting (store/quota.py): what a workspace holds in outputs, VC
inputs and voices, counted from the owner each records, and the check a write must pass."""
from __future__ import annotations

import json

import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.store import quota


def put(path, size: int, meta: dict | None = None, meta_path=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if meta is not None:
        (meta_path or path.with_name(path.name + ".json")).write_text(json.dumps(meta))


def test_a_workspace_counts_only_what_it_owns(tmp_path):
    outputs, vc, voices = tmp_path / "outputs", tmp_path / "vc_inputs", tmp_path / "voices"
    put(outputs / "tts_1.wav", 1000, {"owner": "alice"}, outputs / "tts_1.json")
    put(outputs / "tts_1.mp3", 300)                                   # same base name: alice's too
    put(outputs / "proj" / "tts_2.wav", 5000, {"owner": "bob"}, outputs / "proj" / "tts_2.json")
    put(outputs / "tts_3.wav", 7000)                                  # no metadata: nobody's
    put(vc / "talk.wav", 2000, {"owner": "alice"})
    put(vc / "other.wav", 9000, {"owner": None})
    put(voices / "team" / "narrator.wav", 4000, {"owner": "alice"}, voices / "team" / "narrator.json")
    put(voices / "bobs.wav", 8000, {"owner": "bob", "shared": True}, voices / "bobs.json")
    sidecars = {path: path.stat().st_size for path in tmp_path.rglob("*.json")}
    alice = sum(size for path, size in sidecars.items() if '"alice"' in path.read_text())
    assert quota.workspace_bytes(str(outputs), str(vc), str(voices), "alice") == 1000 + 300 + 2000 + 4000 + alice
    assert quota.output_bytes(str(outputs), "bob") == 5000 + sidecars[outputs / "proj" / "tts_2.json"]
    assert quota.sidecar_bytes(str(voices), "bob", ".wav") == 8000 + sidecars[voices / "bobs.json"]
    assert quota.workspace_bytes(str(outputs), str(vc), str(voices), "carol") == 0
    assert quota.workspace_bytes(str(tmp_path / "none"), str(vc), str(voices), "carol") == 0


def test_a_write_past_the_quota_is_refused_naming_the_setting():
    quota.check(900, 100, 1000)                 # exactly full: allowed
    quota.check(999, None, 1000)                # a generation while below: allowed (it may pass by one)
    quota.check(5000, -10, 1000)                # a smaller replacement frees room: allowed
    quota.check(10**12, 10**9, 0)               # 0: no quota
    for used, adding in ((900, 101), (1000, None), (2000, 1)):
        with pytest.raises(ApiError) as caught:
            quota.check(used, adding, 1000)
        assert caught.value.status == 507 and "CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES" in caught.value.message
        assert caught.value.code == "quota_exceeded"
