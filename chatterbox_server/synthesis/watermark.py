"""`disable_watermark` on /api/v1 (TTS and voice conversion): honoured only when the operator allows
it (CHATTERBOX_ALLOW_DISABLE_WATERMARK), and every answer says what happened in one header."""
from __future__ import annotations

HEADER = "X-Chatterbox-Watermark"
WATERMARKING_ENGINES = ("chatterbox",)     # Perth runs on Chatterbox's S3Gen output only


def keeps_watermark(disable_requested: bool, allowed: bool) -> bool:
    """Whether the engine applies the watermark to this request's audio."""
    return not (disable_requested and allowed)


def watermark_note(engine: str, disable_requested: bool, allowed: bool) -> str:
    """The value of X-Chatterbox-Watermark."""
    if engine not in WATERMARKING_ENGINES:
        return f"none (the {engine} engine does not watermark)"
    if not disable_requested:
        return "applied"
    if not allowed:
        return "applied; disable_watermark refused (CHATTERBOX_ALLOW_DISABLE_WATERMARK is off)"
    return "disabled"
