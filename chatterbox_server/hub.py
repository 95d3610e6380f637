"""Keeping a gevent front worker responsive while it does CPU or disk work."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import gevent

T = TypeVar("T")


def off_hub(function: Callable[..., T], *args: Any) -> T:
    """Run `function` in the hub's native threadpool: decoding uploads and encoding audio (FFmpeg
    releases the GIL) then no longer stall the other requests of this front worker."""
    return gevent.get_hub().threadpool.apply(function, args)
