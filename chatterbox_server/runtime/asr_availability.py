"""Is Whisper available, and if not why: what /health says under `optional`. No I/O here: the
facts come from the speech-recognition process (AsrStatus) or from failing to reach it."""
from __future__ import annotations

from typing import Any

from workers.ipc.asr import AsrStatus

DEFAULT_MODEL = "medium"        # the peer's default whisper_model_name


def whisper_availability(status: AsrStatus | None, unreachable: str | None = None,
                         model: str = DEFAULT_MODEL) -> dict[str, Any]:
    """{"available": True/False/None, "code", "reason", "effect"}: None means it will be known on
    first use (a model not on disk yet that may be downloaded). `code` is a fixed word; `reason` may
    name paths, so /health shows it to trusted callers only."""
    if status is None:
        return {"available": False, "code": "process_unreachable",
                "reason": f"the speech-recognition process cannot be reached: {unreachable}",
                "effect": "/api/v1/tts makes one unchecked take per chunk"}
    if status.loaded:
        return {"available": True, "code": "loaded", "reason": f"loaded: {', '.join(status.loaded)}"}
    if status.local:
        return {"available": True, "code": "on_disk", "reason": f"{model!r} loads from {status.local} on first use"}
    if status.failed:
        failed_model, why = status.failed[-1]
        return {"available": False, "code": "load_failed", "reason": f"Whisper {failed_model!r} failed to load: {why}",
                "effect": "/api/v1/tts makes one unchecked take per chunk"}
    if status.offline:
        return {"available": False, "code": "no_local_model",
                "reason": f"no local Whisper model for {model!r} (CHATTERBOX_WHISPER_MODEL_DIR or the Hugging Face "
                          "cache) and HF_HUB_OFFLINE is set",
                "effect": "/api/v1/tts makes one unchecked take per chunk"}
    return {"available": None, "code": "download_on_first_use",
            "reason": f"{model!r} is not on disk; the first /api/v1/tts request downloads it"}


def engine_availability(engine: str | None, configured: str, fallback_reason: str | None) -> dict[str, Any]:
    """The Chatterbox engine: off when CHATTERBOX_ENGINE=auto fell back to hibari, or was not asked for."""
    if engine == "chatterbox":
        return {"available": True, "code": "loaded", "reason": None}
    if engine is None:
        return {"available": None, "code": "loading", "reason": "no model worker has reported yet"}
    if configured == "auto":
        return {"available": False, "code": "fallback", "reason": f"fell back to {engine}: {fallback_reason}",
                "effect": f"requests are spoken by the embedded {engine} engine (no cloning, English only)"}
    return {"available": False, "code": "not_configured", "reason": f"CHATTERBOX_ENGINE={configured}"}
