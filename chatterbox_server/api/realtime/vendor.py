"""What the vendors' translators share: their names for our voices, and a context's settings from a vendor's message."""
from __future__ import annotations

import logging
from typing import Any

from chatterbox_server.api.realtime.common import context_settings, load_options
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import services
from chatterbox_server.synthesis.realtime import ContextSettings
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


def vendor_context(info: EngineInfo, options: dict[str, Any], policy: SegmentPolicy,
                   context_id: str) -> ContextSettings:
    """A context's settings from the options a vendor's message amounts to, checked as ours are."""
    return context_settings(load_options(options), info, policy, context_id)
