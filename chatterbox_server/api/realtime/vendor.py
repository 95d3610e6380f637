"""What the vendors' translators share: each context's wire encoding, and their names for our voices."""
from __future__ import annotations

import logging
from typing import Any

from chatterbox_server.api.realtime.common import SAMPLE_RATES, WireAudio, context_settings, load_options
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.synthesis.realtime import Audio, ContextSettings, SessionError
from chatterbox_server.text.segmenter import SegmentPolicy
from workers.engines.base import EngineInfo

log = logging.getLogger("chatterbox.realtime")


def our_voice(name: Any, info: EngineInfo) -> str | None:
    """A vendor client's voice id as one of ours: a library voice or built-in name it matches, else the
    default voice (clients keep their vendor's voice ids when only the URL changes; see docs/api.md)."""
    if not isinstance(name, str) or not name:
        return None
    try:
        services().voices.resolve(name, info, owns=guards.owner_check())
    except ApiError:
        log.info("realtime: voice %r is not one of ours; using the default voice", name[:80])
        return None
    return name


def check_rate(rate: int, what: str) -> int:
    if rate not in SAMPLE_RATES:
        raise SessionError(f"{what}: sample rate {rate} is not served; use one of "
                           f"{', '.join(map(str, SAMPLE_RATES))}", code="invalid_value", param=what)
    return rate


class Wires:
    """The wire encoding of each context, by its serial."""

    def __init__(self, info: EngineInfo) -> None:
        self.info = info
        self.by_serial: dict[int, WireAudio] = {}

    def open(self, serial: int, fmt: str, rate: int) -> None:
        self.by_serial[serial] = WireAudio(fmt, self.info.sample_rate, rate)

    def feed(self, event: Audio) -> bytes:
        wire = self.by_serial.get(event.serial)
        return wire.feed(event.pcm) if wire is not None else b""

    def finish(self, serial: int) -> bytes:
        wire = self.by_serial.pop(serial, None)
        return wire.finish() if wire is not None else b""

    def forget(self, serial: int) -> None:
        self.by_serial.pop(serial, None)


def vendor_context(info: EngineInfo, options: dict[str, Any], policy: SegmentPolicy,
                   context_id: str) -> ContextSettings:
    """A context's settings from the options a vendor's message amounts to, checked as ours are."""
    return context_settings(load_options(options), info, policy, context_id)
