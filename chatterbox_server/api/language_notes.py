"""A language whose optional text-processing package is missing on the model workers is still
spoken, unprocessed; these say so in a request's answer and in /health. No I/O here."""
from __future__ import annotations

from typing import Any

from chatterbox_server.text.header_text import header_value
from workers.engines.base import EngineInfo

CAPABILITY = "language_extras"
HEADER = "X-Chatterbox-Language-Extras"


def language_note(info: EngineInfo, language: str | None) -> str | None:
    """Why this request's language goes without its extra processing, or None."""
    if language is None:
        return None
    note = info.language_extras_missing.get(language)
    return header_value(f"{language}: {note}") if note else None


def degraded_headers(note: str | None) -> dict[str, str]:
    return {"X-Chatterbox-Degraded": CAPABILITY, HEADER: note} if note else {}


def language_extras_availability(info: EngineInfo | None) -> dict[str, Any]:
    if info is None or not info.languages:
        return {"available": None, "code": "not_applicable", "reason": "the engine speaks one language"}
    missing = info.language_extras_missing
    if not missing:
        return {"available": True, "code": "installed", "reason": None}
    return {"available": False, "code": "missing", "languages": sorted(missing),
            "reason": "; ".join(f"{language}: {why}" for language, why in sorted(missing.items())),
            "effect": "requests in these languages are spoken without that processing"}
