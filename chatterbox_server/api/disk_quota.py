"""The per-key disk quota at the routes that write to a workspace (see store/quota.py): checked
before any work, so a refused request loses nothing."""
from __future__ import annotations

from collections.abc import Callable

from flask import current_app

from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store import quota


def held_to_quota() -> tuple[str, int] | None:
    """(workspace, quota) when the caller's writes count against a quota: a non-admin key with
    CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES set; None otherwise (no keys, an admin key, no quota)."""
    limit = current_app.config["SETTINGS"].disk_quota_per_key_bytes
    owner = guards.workspace()
    if not limit or owner is None or guards.sees_all():
        return None
    return owner, limit


def used_bytes(owner: str) -> int:
    svc = services()
    return off_hub(quota.workspace_bytes, svc.outputs.directory, svc.vc_inputs.directory, svc.voices.directory, owner)


def require_room(adding: int | None = None) -> None:
    """507 when this write (of `adding` bytes; None: a generation of unknown size) would pass the quota."""
    held = held_to_quota()
    if held is not None:
        quota.check(used_bytes(held[0]), adding, held[1])


def room_check() -> Callable[[int], None] | None:
    """For a store that knows its write's size only once decoded (voices): a check of that size
    against what the workspace holds now. None when the caller has no quota."""
    held = held_to_quota()
    if held is None:
        return None
    used, limit = used_bytes(held[0]), held[1]
    return lambda size: quota.check(used, size, limit)
