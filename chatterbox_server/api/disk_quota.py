"""The per-key disk quota at the routes that write to a workspace (see store/quota.py): checked
before any work, so a refused request loses nothing. The check reserves what the write adds until
the request ends (its write done), so two concurrent writes by one key cannot both pass a check
before either is on disk (quota.Reservations; its docstring says what bound remains across
several front worker processes)."""
from __future__ import annotations

import functools
from collections.abc import Callable

from flask import current_app, g
from flask.signals import request_tearing_down
from gevent import monkey

from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.store import quota

# OS locks (not gevent's, if the worker patched threading): they are taken in native threads only
RESERVATIONS = quota.Reservations(monkey.get_original("_thread", "allocate_lock"))


def held_to_quota() -> tuple[str, int] | None:
    """(workspace, quota) when the caller's writes count against a quota: a non-admin key with
    CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES set; None otherwise (no keys, an admin key, no quota)."""
    limit = current_app.config["SETTINGS"].disk_quota_per_key_bytes
    owner = guards.workspace()
    if not limit or owner is None or guards.sees_all():
        return None
    return owner, limit


def _counter(owner: str) -> Callable[[], int]:
    """What the workspace of `owner` holds on disk, to call in a native thread (read here, on the hub)."""
    svc = services()
    return functools.partial(quota.workspace_bytes, svc.outputs.directory, svc.vc_inputs.directory,
                             svc.voices.directory, owner, svc.jobs_root)


def _held_by_this_request() -> list[quota.Reservation]:
    """This request's reservations, released when it ends (request_tearing_down, below)."""
    if "quota_reservations" not in g:
        g.quota_reservations = []
    return g.quota_reservations


def _release(sender: object, **extra: object) -> None:
    for reservation in g.pop("quota_reservations", ()):
        reservation.release()


request_tearing_down.connect(_release)      # also after an error, and after a streamed body ends


def require_room(adding: int | None = None) -> None:
    """507 when this write (of `adding` bytes; None: a generation of unknown size) would pass the
    quota; otherwise its bytes stay reserved until the request ends."""
    held = held_to_quota()
    if held is not None:
        owner, limit = held
        reservation = off_hub(RESERVATIONS.reserve, owner, adding, limit, _counter(owner))
        _held_by_this_request().append(reservation)


def room_check() -> Callable[[int], None] | None:
    """For a store that knows its write's size only once decoded (voices, called in a native
    thread): check-and-reserve of that size. None when the caller has no quota."""
    held = held_to_quota()
    if held is None:
        return None
    owner, limit = held
    count, mine = _counter(owner), _held_by_this_request()
    return lambda size: mine.append(RESERVATIONS.reserve(owner, size, limit, count))
