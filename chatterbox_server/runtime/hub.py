"""Keeping a gevent front worker responsive while it does CPU or disk work."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import gevent

from chatterbox_server.errors import ApiError
from chatterbox_server.text.header_text import header_value

T = TypeVar("T")
log = logging.getLogger("chatterbox.hub")


class _Raised:
    """An exception carried out of the threadpool as a value: gevent prints the traceback of
    anything that escapes a pool thread, so a refused upload (a 400) used to fill the log."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _capture(function: Callable[..., T], args: tuple[Any, ...]) -> T | _Raised:
    try:
        return function(*args)
    except Exception as exc:  # noqa: BLE001 - re-raised in the calling greenlet, with its traceback
        return _Raised(exc)


def off_hub(function: Callable[..., T], *args: Any) -> T:
    """Run `function` in the hub's native threadpool: decoding uploads and encoding audio (FFmpeg
    releases the GIL) then no longer stall the other requests of this front worker. What it raises
    is raised here; an expected refusal (a 4xx) is logged as one warning line."""
    result = gevent.get_hub().threadpool.apply(_capture, (function, args))
    if isinstance(result, _Raised):
        error = result.error
        if isinstance(error, ApiError) and error.status < 500:
            log.warning("%s refused: %s %s", getattr(function, "__qualname__", function), error.status,
                        header_value(error.message))
        raise error
    return result
