"""Resemble AI's Chatterbox TTS (standard, turbo, multilingual) as an engine.

Upstream `generate()` and `prepare_conditionals()` store the voice in the shared `model.conds`,
which mixes voices between requests. This engine builds the conditionals per request instead
(built-in voice, or a bounded LRU of reference-file conditionals), applies exaggeration to a
per-request copy, and runs the steps of upstream `generate()` itself with a token cap that scales
with the text. Only model-worker processes import this module.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from workers.engines.base import Engine, EngineError, EngineInfo, SynthesisSettings, Synthesized, VoiceRef

log = logging.getLogger(__name__)

# model -> (module, class) in the chatterbox-tts package
_MODELS = {
    "standard": ("chatterbox.tts", "ChatterboxTTS"),
    "turbo": ("chatterbox.tts_turbo", "ChatterboxTurboTTS"),
    "multilingual": ("chatterbox.mtl_tts", "ChatterboxMultilingualTTS"),
}
# Sampling settings upstream's generate() uses for each model.
_REPETITION_PENALTY = {"standard": 1.2, "turbo": 1.2, "multilingual": 2.0}
_MIN_P, _TOP_P, _TURBO_TOP_P, _TURBO_TOP_K = 0.05, 1.0, 0.95, 1000
_SPEECH_VOCAB = 6561        # speech tokens at or above this are control tokens; S3Gen cannot vocode them
_TURBO_TAIL_SILENCE = 3     # S3GEN_SIL tokens upstream turbo appends before vocoding
# Token cap. S3 speech tokens run at 25 per second and English speech at ~15 characters per second,
# i.e. ~1.7 tokens per character. 2.5 per character leaves room for speech ~1.5x slower than usual
# (exaggeration, pauses at punctuation) and the margin covers lead-in/out silence of short texts.
# Upstream generates up to 1000 tokens (40 s) for any text; random or derailed sampling runs to the
# cap, so a proportional cap bounds the damage. Scripts with more speech per character get more.
_TOKENS_PER_CHAR = 2.5
_TOKENS_PER_CHAR_BY_LANGUAGE = {"zh": 10.0, "ja": 8.0, "ko": 7.0}
_TOKEN_MARGIN = 50
_CONDITIONALS_CACHE_SIZE = 16


def token_cap(text: str, max_new_tokens: int, language: str | None = None) -> int:
    """Speech tokens a text may take: min(max_new_tokens, ceil(per_char * len(text)) + margin)."""
    per_char = _TOKENS_PER_CHAR_BY_LANGUAGE.get(language or "", _TOKENS_PER_CHAR)
    return max(1, min(max_new_tokens, math.ceil(per_char * len(text)) + _TOKEN_MARGIN))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cuda'/'cuda:N' must exist."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise RuntimeError(f"device {device!r} requested but CUDA reports "
                               f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} GPU(s)")
        torch.cuda.set_device(index)
        return device
    if device in ("cpu", "mps"):
        return device
    raise ValueError(f"unknown device {device!r} (auto, cpu, cuda, cuda:N, mps)")


def _seed(seed: int) -> None:
    torch.manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed & 0xFFFF_FFFF_FFFF_FFFF)


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _silence_progress_bars() -> None:
    """T3 sampling and the meanflow decoder draw a tqdm bar per generation: noise in a server log."""
    for name in ("chatterbox.models.t3.t3", "chatterbox.models.s3gen.flow_matching"):
        module = importlib.import_module(name)
        if hasattr(module, "tqdm"):
            module.tqdm = _no_progress_bar


def _no_progress_bar(iterable: Any, *args: Any, **kwargs: Any) -> Any:
    return iterable


class _ConditionalsCache:
    """Bounded LRU of reference-file conditionals keyed by (path, mtime, size)."""

    def __init__(self, capacity: int = _CONDITIONALS_CACHE_SIZE):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: tuple, build: Callable[[], Any]) -> tuple[Any, bool]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key], True
        value = build()
        with self._lock:
            self.misses += 1
            self._entries[key] = value
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return value, False

    def __len__(self) -> int:
        return len(self._entries)


class ChatterboxEngine(Engine):
    def __init__(self, model: str = "standard", device: str = "auto", checkpoint_dir: str | None = None,
                 max_new_tokens: int = 1000):
        if model not in _MODELS:
            raise ValueError(f"unknown chatterbox model {model!r} (one of {', '.join(_MODELS)})")
        self.model = model
        self.requested_device = device
        self.checkpoint_dir = checkpoint_dir
        self.max_new_tokens = max_new_tokens
        self.conditionals_cache = _ConditionalsCache()
        self.device = "cpu"
        self._tts: Any = None
        self._builtin: Any = None         # the checkpoint's conds.pt; never modified
        self._languages: tuple[str, ...] = ()
        self._generation_lock = threading.Lock()  # T3 keeps per-call state on the shared module

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> EngineInfo:
        self.device = resolve_device(self.requested_device)
        model_class = self._model_class()
        if self.checkpoint_dir:
            log.info("loading chatterbox-%s from %s on %s", self.model, self.checkpoint_dir, self.device)
            self._tts = model_class.from_local(self.checkpoint_dir, self.device)
        else:
            log.info("loading chatterbox-%s from the Hugging Face hub (downloads on first start) on %s",
                     self.model, self.device)
            self._tts = model_class.from_pretrained(self.device)
        self._builtin = self._tts.conds
        if self.model == "multilingual":
            self._languages = tuple(sorted(importlib.import_module("chatterbox.mtl_tts").SUPPORTED_LANGUAGES))
        _silence_progress_bars()
        return self._info()

    def _model_class(self) -> type:
        module_name, class_name = _MODELS[self.model]
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            from importlib.metadata import version
            raise RuntimeError(f"chatterbox-tts {version('chatterbox-tts')} has no {self.model} model "
                               f"({module_name}.{class_name}); install a release that has it") from exc

    def _info(self) -> EngineInfo:
        device = self.device
        if device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
        return EngineInfo(
            engine="chatterbox",
            model=f"chatterbox-{self.model}",
            device=device,
            sample_rate=self._tts.sr,
            model_names=("chatterbox", f"chatterbox-{self.model}"),
            default_voice="default",
            supports_cloning=True,
            supports_exaggeration=self.model != "turbo",
            supports_voice_conversion=self.model != "turbo",
            languages=self._languages,
            native_speed=None,
        )

    def memory_stats(self) -> dict | None:
        if not self.device.startswith("cuda"):
            return None
        return {"device": self.device, "allocated_bytes": torch.cuda.memory_allocated(),
                "reserved_bytes": torch.cuda.memory_reserved(),
                "peak_allocated_bytes": torch.cuda.max_memory_allocated()}

    def release_memory(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    # -- synthesis --------------------------------------------------------------------------

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        self._loaded()
        language = self._language(settings.language)
        if settings.temperature <= 0:
            raise EngineError("temperature must be above 0")
        conds, source = self._conditionals(voice)
        t3_cond = self._t3_cond(conds.t3, settings.exaggeration)
        text = self._punc_norm(text)
        cap = token_cap(text, self.max_new_tokens, language)
        with self._generation_lock, torch.inference_mode():
            text_tokens = self._tokenize(text, language)
            if text_tokens.shape[-1] + 2 > self._tts.t3.hp.max_text_tokens:
                raise EngineError(f"text too long for one chunk ({text_tokens.shape[-1]} tokens)")
            _seed(seed)
            if self.model == "turbo":
                speech_tokens = self._sample_turbo(t3_cond, text_tokens, settings, cap)
            else:
                speech_tokens = self._sample(t3_cond, text_tokens, settings, cap)
            audio = self._vocode(speech_tokens, conds.gen)
        vocoded = int((speech_tokens < _SPEECH_VOCAB).sum())
        return Synthesized(audio=audio, input_tokens=int(text_tokens.shape[-1]),
                           output_tokens=int(speech_tokens.numel()),
                           extra={"token_cap": cap, "vocoded_tokens": vocoded, "conditionals": source})

    def _loaded(self) -> Any:
        if self._tts is None:
            raise RuntimeError("ChatterboxEngine.load() has not run")
        return self._tts

    def _language(self, language: str | None) -> str | None:
        if self.model != "multilingual":
            if language and language.lower() not in ("en", "en-us", "en-gb", "english"):
                raise EngineError(f"chatterbox-{self.model} speaks English only, not {language!r}")
            return None
        code = (language or "en").lower()
        if code not in self._languages:
            raise EngineError(f"unsupported language {language!r}; chatterbox-multilingual speaks "
                              f"{', '.join(self._languages)}")
        return code

    def _punc_norm(self, text: str) -> str:
        return importlib.import_module(_MODELS[self.model][0]).punc_norm(text)

    def _tokenize(self, text: str, language: str | None) -> torch.Tensor:
        """(1, n) text tokens, without start/stop tokens."""
        tokenizer = self._tts.tokenizer
        if self.model == "turbo":
            tokens = tokenizer(text, return_tensors="pt", padding=True, truncation=True).input_ids
        elif self.model == "multilingual":
            tokens = tokenizer.text_to_tokens(text, language_id=language)
        else:
            tokens = tokenizer.text_to_tokens(text)
        return tokens.to(self.device)

    def _sample(self, t3_cond: Any, text_tokens: torch.Tensor, settings: SynthesisSettings, cap: int) -> torch.Tensor:
        """Standard/multilingual T3 sampling as upstream generate(); returns 1-D speech tokens."""
        from chatterbox.models.s3tokenizer import drop_invalid_tokens

        t3 = self._tts.t3
        # Always the (conditional, unconditional) pair: T3.inference builds a batch of two and fails
        # on a single row (upstream standard generate() crashes at cfg_weight=0); weight 0 = no CFG.
        tokens = torch.cat([text_tokens, text_tokens], dim=0)
        tokens = F.pad(tokens, (1, 0), value=t3.hp.start_text_token)
        tokens = F.pad(tokens, (0, 1), value=t3.hp.stop_text_token)
        with self._drop_new_attention_hooks():
            generated = t3.inference(
                t3_cond=t3_cond, text_tokens=tokens, max_new_tokens=cap,
                temperature=settings.temperature, cfg_weight=settings.cfg_weight,
                repetition_penalty=_REPETITION_PENALTY[self.model], min_p=_MIN_P, top_p=_TOP_P,
            )
        return drop_invalid_tokens(generated[0])

    def _sample_turbo(self, t3_cond: Any, text_tokens: torch.Tensor, settings: SynthesisSettings,
                      cap: int) -> torch.Tensor:
        # inference_turbo samples one token, then up to max_gen_len more
        generated = self._tts.t3.inference_turbo(
            t3_cond=t3_cond, text_tokens=text_tokens, temperature=settings.temperature,
            top_k=_TURBO_TOP_K, top_p=_TURBO_TOP_P, repetition_penalty=_REPETITION_PENALTY["turbo"],
            max_gen_len=max(cap - 1, 0),
        )
        return generated[0]

    def _drop_new_attention_hooks(self) -> _HookGuard:
        """Multilingual T3.inference registers alignment hooks on attention layers on every call and
        never removes them; left alone they pile up (slower, leaking) over a server's lifetime."""
        return _HookGuard([layer.self_attn for layer in self._tts.t3.tfmr.layers]
                          if self.model == "multilingual" else [])

    def _vocode(self, speech_tokens: torch.Tensor, gen: dict) -> np.ndarray:
        """S3Gen + Perth watermark, as upstream; float32 mono at 24 kHz."""
        from chatterbox.models.s3gen.const import S3GEN_SIL

        tokens = speech_tokens[speech_tokens < _SPEECH_VOCAB].to(self.device)
        options = {}
        if self.model == "turbo":
            silence = torch.full((_TURBO_TAIL_SILENCE,), S3GEN_SIL, dtype=torch.long, device=self.device)
            tokens = torch.cat([tokens, silence])
            options["n_cfm_timesteps"] = 2
        if tokens.numel() == 0:
            return np.zeros(0, dtype=np.float32)
        # a shallow copy: S3Gen writes device/dtype casts back into the dict it is given
        wav, _ = self._tts.s3gen.inference(speech_tokens=tokens, ref_dict=dict(gen), **options)
        wav = wav.squeeze(0).detach().cpu().numpy()
        wav = self._tts.watermarker.apply_watermark(wav, sample_rate=self._tts.sr)
        return np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)

    # -- voices -----------------------------------------------------------------------------

    def _conditionals(self, voice: VoiceRef) -> tuple[Any, str]:
        """The voice's Conditionals (shared, read-only) and where they came from."""
        if voice.audio_path is None:
            if self._builtin is None:
                raise EngineError("this checkpoint has no built-in voice (conds.pt); give reference audio")
            return self._builtin, "builtin"
        try:
            stat = os.stat(voice.audio_path)
        except OSError as exc:
            raise EngineError(f"voice {voice.name!r}: cannot read reference audio: {exc}") from exc
        key = (os.path.realpath(voice.audio_path), stat.st_mtime_ns, stat.st_size)
        conds, hit = self.conditionals_cache.get_or_build(key, lambda: self._conditionals_from_file(voice))
        return conds, "cached" if hit else "computed"

    def _conditionals_from_file(self, voice: VoiceRef) -> Any:
        # Upstream prepare_conditionals() (each model's own: turbo normalises loudness and wants
        # over 5 s) stores its result in self.conds; run it on a shallow copy that shares the modules
        # so the result comes back here and the shared model is untouched.
        shadow = copy.copy(self._loaded())
        try:
            with self._generation_lock, torch.inference_mode():
                shadow.prepare_conditionals(voice.audio_path)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as exc:
            raise EngineError(f"voice {voice.name!r}: unusable reference audio: {_describe(exc)}") from exc
        return shadow.conds

    def _t3_cond(self, stored: Any, exaggeration: float) -> Any:
        """A per-request T3Cond; upstream replaces emotion_adv when exaggeration differs."""
        from chatterbox.models.t3.modules.cond_enc import T3Cond

        current = float(torch.as_tensor(stored.emotion_adv).reshape(-1)[0])
        if self.model == "turbo" or float(exaggeration) == current:
            # T3 caches the prompt embedding on the T3Cond it is given: never hand it the stored one
            return dataclasses.replace(stored)
        return T3Cond(
            speaker_emb=stored.speaker_emb,
            cond_prompt_speech_tokens=stored.cond_prompt_speech_tokens,
            emotion_adv=exaggeration * torch.ones(1, 1, 1),
        ).to(device=self.device)

    # -- voice conversion -------------------------------------------------------------------

    def convert_voice(self, audio: np.ndarray | str, voice: VoiceRef, seed: int = 0) -> np.ndarray:
        """Re-speak `audio` (float32 at VC_INPUT_RATE, or a file path) in `voice`, as upstream
        ChatterboxVC.generate() does, with the already-loaded S3Gen. float32 mono at 24 kHz."""
        tts = self._loaded()
        if self.model == "turbo":
            raise EngineError("voice conversion needs the standard S3Gen; chatterbox-turbo has the meanflow one")
        source = self._source_audio(audio)
        conds, _ = self._conditionals(voice)
        with self._generation_lock, torch.inference_mode():
            _seed(seed)
            speech_tokens, _ = tts.s3gen.tokenizer(torch.from_numpy(source)[None].to(self.device))
            return self._vocode(speech_tokens.reshape(-1), conds.gen)

    @staticmethod
    def _source_audio(audio: np.ndarray | str) -> np.ndarray:
        from chatterbox.models.s3tokenizer import S3_SR

        if isinstance(audio, (str, os.PathLike)):
            try:
                import librosa
                audio, _ = librosa.load(audio, sr=S3_SR)
            except Exception as exc:
                raise EngineError(f"cannot read source audio: {_describe(exc)}") from exc
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size < S3_SR // 10 or not np.isfinite(audio).all():
            raise EngineError("source audio must be finite and at least 0.1 s long")
        return audio


class _HookGuard:
    """Removes forward hooks added to `modules` while the block runs."""

    def __init__(self, modules: list[torch.nn.Module]):
        self._modules = modules
        self._before: list[set] = []

    def __enter__(self) -> None:
        self._before = [set(m._forward_hooks) for m in self._modules]

    def __exit__(self, *exc_info: object) -> None:
        for module, before in zip(self._modules, self._before, strict=True):
            for handle_id in set(module._forward_hooks) - before:
                # what RemovableHandle.remove() does
                for hooks in (module._forward_hooks, module._forward_hooks_with_kwargs,
                              module._forward_hooks_always_called):
                    hooks.pop(handle_id, None)
