"""Engine registry. Engines import their runtimes lazily: only model workers ever load one."""
from __future__ import annotations

import dataclasses
import logging

from chatterbox_server.settings import Settings
from workers.engines.base import Engine, EngineInfo

log = logging.getLogger("chatterbox.engine")


def create_engine(name: str, settings: Settings, device: str) -> Engine:
    if name == "hibari":
        from workers.engines.hibari import HibariEngine
        return HibariEngine()
    if name == "tone":
        from workers.engines.tone import ToneEngine
        return ToneEngine()
    if name == "chatterbox":
        try:
            from workers.engines.chatterbox import ChatterboxEngine
        except ImportError as exc:
            raise ImportError(f"the Chatterbox engine stack is not installed (make install-chatterbox): {exc}") from exc
        return ChatterboxEngine(model=settings.model, device=device,
                                checkpoint_dir=settings.checkpoint_dir or None,
                                max_new_tokens=settings.max_new_tokens, stream_tokens=settings.stream_tokens,
                                dtype=settings.dtype, compile_decode=settings.compile,
                                s3gen_batch={"auto": None, "on": True, "off": False}[settings.s3gen_batch])
    raise ValueError(f"unknown engine {name!r}")


def load_engine(settings: Settings, device: str) -> tuple[Engine, EngineInfo]:
    """Create and load the configured engine; `auto` falls back from Chatterbox to hibari."""
    if settings.engine != "auto":
        engine = create_engine(settings.engine, settings, device)
        return engine, engine.load()
    try:
        engine = create_engine("chatterbox", settings, device)
        return engine, engine.load()
    except Exception as exc:  # noqa: BLE001 - any reason Chatterbox cannot run here means fall back
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
        log.warning("engine auto: Chatterbox unavailable (%s); using the embedded hibari engine", reason)
    engine = create_engine("hibari", settings, device)
    return engine, dataclasses.replace(engine.load(), fallback_reason=reason[:500])
