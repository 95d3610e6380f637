"""Engine registry. Engines import their runtimes lazily: only model workers ever load one."""
from __future__ import annotations

import dataclasses
import logging

from chatterbox_server.settings import Settings
from workers.engines.base import Engine, EngineInfo

log = logging.getLogger("chatterbox.engine")


def create_engine(name: str, settings: Settings, device: str, model: str | None = None) -> Engine:
    """An engine object for one served model; no weights are read yet (`Engine.load` does that)."""
    model = model or settings.model
    if name == "hibari":
        from workers.engines.hibari import HibariEngine
        return HibariEngine()
    if name == "tone":
        from workers.engines.tone import ToneEngine
        return ToneEngine(model)
    if name == "chatterbox":
        try:
            from workers.engines.chatterbox import ChatterboxEngine
        except ImportError as exc:
            raise ImportError(f"the Chatterbox engine stack is not installed (make install-chatterbox): {exc}") from exc
        return ChatterboxEngine(model=model, device=device,
                                checkpoint_dir=settings.checkpoint_dir or None,
                                max_new_tokens=settings.max_new_tokens, stream_tokens=settings.stream_tokens,
                                dtype=settings.dtype, compile_decode=settings.compile,
                                s3gen_batch={"auto": None, "on": True, "off": False}[settings.s3gen_batch])
    raise ValueError(f"unknown engine {name!r}")


@dataclasses.dataclass
class ServedEngine:
    """The engine of one model worker and what it says about itself, before and after loading.
    CHATTERBOX_ENGINE=auto falls back to hibari when Chatterbox cannot be imported (at once) or its
    weights cannot be loaded (at the load), with the reason kept in the info."""
    settings: Settings
    model: str
    device: str
    engine: Engine = dataclasses.field(init=False)
    fallback_reason: str | None = None

    def __post_init__(self) -> None:
        name = "chatterbox" if self.settings.engine == "auto" else self.settings.engine
        try:
            self.engine = create_engine(name, self.settings, self.device, self.model)
        except ImportError as exc:
            if self.settings.engine != "auto":
                raise
            self._fall_back(exc)

    def describe(self) -> EngineInfo:
        return self._mark(self.engine.describe())

    def load(self) -> EngineInfo:
        try:
            return self._mark(self.engine.load())
        except Exception as exc:
            if self.settings.engine != "auto" or self.fallback_reason is not None:
                raise
            self._fall_back(exc)
        return self._mark(self.engine.load())

    def _fall_back(self, exc: BaseException) -> None:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0]}" if str(exc) else type(exc).__name__
        log.warning("engine auto: Chatterbox unavailable (%s); using the embedded hibari engine", reason)
        self.fallback_reason = reason[:500]
        self.engine = create_engine("hibari", self.settings, self.device, self.model)

    def _mark(self, info: EngineInfo) -> EngineInfo:
        return dataclasses.replace(info, group=self.model, fallback_reason=self.fallback_reason)


def load_engine(settings: Settings, device: str, model: str | None = None) -> tuple[Engine, EngineInfo]:
    """Create and load one model's engine at once (tools and tests; model workers load on demand)."""
    served = ServedEngine(settings, model or settings.model_specs[0].name, device)
    info = served.load()
    return served.engine, info
