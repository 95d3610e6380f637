"""Resemble AI's Chatterbox TTS (standard, turbo, multilingual) as an engine.

Upstream `generate()` and `prepare_conditionals()` store the voice in the shared `model.conds`,
which mixes voices between requests. This engine builds the conditionals per request instead
(built-in voice, or a bounded LRU of reference-file conditionals), applies exaggeration to a
per-request copy, and runs the steps of upstream `generate()` itself with a token cap that scales
with the text. Only model-worker processes import this module.
"""
from __future__ import annotations

import copy
import ctypes
import ctypes.util
import dataclasses
import gc
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

from workers.engines.base import (
    Engine,
    EngineError,
    EngineInfo,
    Piece,
    Stream,
    SynthesisSettings,
    Synthesized,
    VoiceRef,
)
from workers.engines.language_extras import missing_extras
from workers.engines.s3gen_stream import S3GenStreamer, WindowVocoder
from workers.engines.t3_batch import Sampling, Sequence, T3Batch
from workers.engines.tags import TURBO_TAGS

log = logging.getLogger(__name__)

# model -> (module, class) in the chatterbox-tts package
_EXPECTED_BYTES = {"standard": 3_300_000_000, "multilingual": 3_400_000_000, "turbo": 2_600_000_000}
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


def tensor_bytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes of every tensor reachable from `value` (dataclasses, objects, dicts, sequences), each once."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(tensor_bytes(item, seen) for item in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(item, seen) for item in value)
    if hasattr(value, "__dict__"):
        return sum(tensor_bytes(item, seen) for item in vars(value).values())
    return 0


class _ConditionalsCache:
    """Bounded LRU of reference-file conditionals keyed by (path, mtime, size); each entry's tensor
    bytes are counted once, when it is built, for /memory."""

    def __init__(self, capacity: int = _CONDITIONALS_CACHE_SIZE):
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key: tuple, build: Callable[[], Any]) -> tuple[Any, bool]:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0], True
        value = build()
        size = tensor_bytes(value)
        with self._lock:
            self.misses += 1
            self._entries[key] = (value, size)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return value, False

    def clear(self) -> None:
        """Drop every entry (their tensors live on the model's device); the hit/miss counts stay."""
        with self._lock:
            self._entries.clear()

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "capacity": self.capacity,
                    "bytes": sum(size for _, size in self._entries.values()), "hits": self.hits,
                    "misses": self.misses}

    def __len__(self) -> int:
        return len(self._entries)


class ChatterboxEngine(Engine):
    step_capacity = 64      # the model worker's CHATTERBOX_MAX_BATCH is the real limit

    def __init__(self, model: str = "standard", device: str = "auto", checkpoint_dir: str | None = None,
                 max_new_tokens: int = 1000, stream_tokens: int = 25, dtype: str = "float32",
                 compile_decode: bool = False, s3gen_batch: bool | None = None):
        if model not in _MODELS:
            raise ValueError(f"unknown chatterbox model {model!r} (one of {', '.join(_MODELS)})")
        self.model = model
        self.requested_device = device
        self.checkpoint_dir = checkpoint_dir
        self.max_new_tokens = max_new_tokens
        self.stream_tokens = stream_tokens
        self.dtype = dtype
        self.compile_decode = compile_decode
        self.s3gen_batch = s3gen_batch     # one flow call for windows due together; None: on CUDA only
        self._batch: T3Batch | None = None
        self._streamer: S3GenStreamer | None = None
        self.conditionals_cache = _ConditionalsCache()
        self.device = "cpu"
        self._tts: Any = None
        self._host: Any = None            # the model unloaded from a GPU, its modules in host memory
        self._builtin: Any = None         # the checkpoint's conds.pt; never modified
        self._languages: tuple[str, ...] = ()
        self._generation_lock = threading.Lock()  # T3 keeps per-call state on the shared module

    # -- loading ----------------------------------------------------------------------------

    def load(self) -> EngineInfo:
        """Load the weights: from the host copy `unload` kept (weights that lived on a GPU), else from
        the checkpoint (or the hub). Loading an engine that is loaded already changes nothing."""
        self.device = resolve_device(self.requested_device)
        with self._generation_lock:
            if self._tts is None:
                if self._host is not None:
                    log.info("loading chatterbox-%s on %s from its copy in host memory", self.model, self.device)
                    try:
                        _move_model(self._host, self.device)
                    except BaseException:
                        _move_model(self._host, "cpu")     # still unloaded, the host copy whole
                        torch.cuda.empty_cache()
                        raise
                    self._tts, self._host = self._host, None
                else:
                    self._tts = self._read_weights()
                self._builtin = self._tts.conds
                self._languages = self._supported_languages()
                _silence_progress_bars()
                self._batch = T3Batch(self._tts.t3, stop_token=self._tts.t3.hp.stop_speech_token,
                                      start_token=self._tts.t3.hp.start_speech_token,
                                      step_fn=gpu_speedups(self._tts.t3, self.device, self.dtype,
                                                           self.compile_decode))
                self._streamer = self._make_streamer()
                _trim_host_heap()       # the checkpoint's state dicts, freed by now, stay in the heap otherwise
        return self._info(self.device)

    def checkpoint_path(self) -> str | None:
        """Where the weights are read from: `<checkpoint_dir>/<model>/` when the checkpoint directory
        holds one subdirectory per model (standard/, turbo/, multilingual/), else the directory itself
        (one model's files); None: the Hugging Face hub."""
        if not self.checkpoint_dir:
            return None
        per_model = os.path.join(self.checkpoint_dir, self.model)
        return per_model if os.path.isdir(per_model) else self.checkpoint_dir

    def _read_weights(self) -> Any:
        model_class = self._model_class()
        path = self.checkpoint_path()
        if path is None:
            log.info("loading chatterbox-%s from the Hugging Face hub (downloads on first start) on %s",
                     self.model, self.device)
            return model_class.from_pretrained(self.device)
        layout = "its model subdirectory" if path != self.checkpoint_dir else "a one-model checkpoint directory"
        log.info("loading chatterbox-%s from %s (%s) on %s", self.model, path, layout, self.device)
        return model_class.from_local(path, self.device)

    def unload(self) -> None:
        """Free the weights' memory. On a GPU the modules move to host memory and stay there (the next
        `load` moves them back without reading the checkpoint); elsewhere the model is dropped and the
        next `load` reads the checkpoint again. Open streams must be closed first. Twice: a no-op."""
        with self._generation_lock:
            tts = self._tts
            if tts is None:
                return
            if self._batch is not None:
                for seq in list(self._batch.members):
                    self._batch.discard(seq)
            # everything else that holds the model's modules or tensors on its device
            self._tts = self._builtin = self._batch = self._streamer = None
            self.conditionals_cache.clear()
            on_gpu = self.device.startswith("cuda")
            if on_gpu and self.compile_decode:
                # the compiled decode step's CUDA graphs keep their own memory pool
                import torch._dynamo
                torch._dynamo.reset()
            if on_gpu:
                _move_model(tts, "cpu")
                self._host = tts
                gc.collect()
                clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
                if clear_workspaces is not None:      # cuBLAS keeps its workspaces allocated otherwise
                    clear_workspaces()
                torch.cuda.empty_cache()
                log.info("unloaded chatterbox-%s: weights kept in host memory", self.model)
            else:
                del tts
                gc.collect()
                _trim_host_heap()
                log.info("unloaded chatterbox-%s", self.model)

    def weight_bytes(self) -> int:
        """Bytes of the parameters, buffers and other tensors of the model's modules (T3, S3Gen, the
        voice encoder, the watermarker's network) that lie on the engine's device; 0 unloaded."""
        if self._tts is None:
            return 0
        device = torch.device(self.device)
        seen: set[int] = set()
        total = 0
        for tensor in _model_tensors(self._tts):
            if tensor.device.type != device.type or (device.index is not None and tensor.device.index != device.index):
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() in seen:
                continue
            seen.add(storage.data_ptr())
            total += storage.nbytes()
        return total

    def expected_bytes(self) -> int:
        """float32 sizes (standard measured 3.27 GB with weight_bytes on a random checkpoint of the
        released shapes); the memory budget uses the measurement itself after the first load."""
        return _EXPECTED_BYTES.get(self.model, 0)

    def describe(self) -> EngineInfo:
        """What `load` reports, from the settings alone (no checkpoint is read)."""
        return self._info(resolve_device(self.requested_device))

    def _supported_languages(self) -> tuple[str, ...]:
        if self.model != "multilingual":
            return ()
        return tuple(sorted(importlib.import_module("chatterbox.mtl_tts").SUPPORTED_LANGUAGES))

    def _make_streamer(self) -> S3GenStreamer:
        tail: tuple[int, ...] = ()
        if self.model == "turbo":
            from chatterbox.models.s3gen.const import S3GEN_SIL
            tail = (S3GEN_SIL,) * _TURBO_TAIL_SILENCE
        batch = self.device.startswith("cuda") if self.s3gen_batch is None else self.s3gen_batch
        return S3GenStreamer(self._tts.s3gen, self.device, self._watermark, tail_tokens=tail,
                             n_timesteps=2 if self.model == "turbo" else None, batch_flow=batch)

    def _watermark(self, audio: np.ndarray) -> np.ndarray:
        """Perth's watermark on float32 mono audio at the model's rate. Under inference mode whoever
        calls it: the watermarker is a network, and autograd would keep its activations otherwise."""
        with torch.inference_mode():
            wav = self._tts.watermarker.apply_watermark(audio, sample_rate=self._tts.sr)
        return np.clip(np.asarray(wav, dtype=np.float32).reshape(-1), -1.0, 1.0)

    def _model_class(self) -> type:
        module_name, class_name = _MODELS[self.model]
        try:
            return getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as exc:
            from importlib.metadata import version
            raise RuntimeError(f"chatterbox-tts {version('chatterbox-tts')} has no {self.model} model "
                               f"({module_name}.{class_name}); install a release that has it") from exc

    def _info(self, device: str) -> EngineInfo:
        """The engine's EngineInfo on `device` (resolved): the same before and after loading, since
        nothing in it comes from the weights."""
        from chatterbox.models.s3gen import S3GEN_SR

        if device == "cuda":
            device = f"cuda:{torch.cuda.current_device()}"
        languages = self._supported_languages()
        return EngineInfo(
            engine="chatterbox",
            model=f"chatterbox-{self.model}",
            device=device,
            sample_rate=S3GEN_SR,
            model_names=("chatterbox", f"chatterbox-{self.model}"),
            default_voice="default",
            supports_cloning=True,
            supports_exaggeration=self.model != "turbo",
            supports_voice_conversion=self.model != "turbo",
            languages=languages,
            native_speed=None,
            tags=TURBO_TAGS if self.model == "turbo" else (),
            language_extras_missing=missing_extras(languages),
        )

    def cache_stats(self) -> dict | None:
        return {"conditionals": self.conditionals_cache.stats()}

    def memory_stats(self) -> dict | None:
        if not self.device.startswith("cuda"):
            return None
        return {"device": self.device, "allocated_bytes": torch.cuda.memory_allocated(),
                "reserved_bytes": torch.cuda.memory_reserved(),
                "peak_allocated_bytes": torch.cuda.max_memory_allocated()}

    # -- synthesis --------------------------------------------------------------------------

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        """One chunk alone, whole: the batched path with a batch of one."""
        stream = self.open_stream(text, settings, voice, seed, incremental=False)
        parts, output_tokens = [], 0
        try:
            while not stream.done:
                piece = self.step([stream])[0]
                if isinstance(piece, BaseException):
                    raise piece
                parts.append(piece.audio)
                output_tokens += piece.output_tokens
        finally:
            stream.close()
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return Synthesized(audio=audio, input_tokens=stream.input_tokens, output_tokens=output_tokens,
                           extra={"token_cap": stream.seq.cap, "vocoded_tokens": len(stream.vocodable),
                                  "conditionals": stream.source, "speech_tokens": list(stream.seq.tokens)})

    def open_stream(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int, *,
                    incremental: bool = True) -> ChatterboxStream:
        self._loaded()
        language = self._language(settings.language)
        if settings.temperature <= 0:
            raise EngineError("temperature must be above 0")
        conds, source = self._conditionals(voice)
        t3_cond = self._t3_cond(conds.t3, settings.exaggeration)
        text = self._punc_norm(text)
        cap = token_cap(text, self.max_new_tokens, language)
        generator = torch.Generator().manual_seed(seed & 0xFFFF_FFFF_FFFF_FFFF)
        with self._generation_lock, torch.inference_mode():
            text_tokens = self._tokenize(text, language)
            if text_tokens.shape[-1] + 2 > self._tts.t3.hp.max_text_tokens:
                raise EngineError(f"text too long for one chunk ({text_tokens.shape[-1]} tokens)")
            embeds, sampling = self._prompt(t3_cond, text_tokens, settings)
            seq = Sequence(embeds=embeds, sampling=sampling, generator=generator, cap=cap,
                           turbo=self.model == "turbo")
            first = self.stream_tokens if incremental else 0
            vocoder = self._streamer.open(conds.gen, seed, generator, cap, first, watermark=settings.watermark)
        return ChatterboxStream(self, seq, vocoder, int(text_tokens.shape[-1]), source)

    def _prompt(self, t3_cond: Any, text_tokens: torch.Tensor, settings: SynthesisSettings) -> tuple:
        """The prefill embeddings of one sequence's rows, and its sampling settings."""
        t3 = self._tts.t3
        if self.model == "turbo":
            start = t3.hp.start_speech_token * torch.ones_like(text_tokens[:, :1])
            embeds, _ = t3.prepare_input_embeds(t3_cond=t3_cond, text_tokens=text_tokens,
                                                speech_tokens=start, cfg_weight=0.0)
            sampling = Sampling(settings.temperature, 0.0, _REPETITION_PENALTY["turbo"],
                                top_p=_TURBO_TOP_P, top_k=_TURBO_TOP_K)
            return embeds.to(self._t3_dtype), sampling
        # CFG: a (conditional, unconditional) pair of rows; without CFG the conditional row alone
        rows = 2 if settings.cfg_weight > 0 else 1
        tokens = text_tokens.expand(rows, -1)
        tokens = F.pad(tokens, (1, 0), value=t3.hp.start_text_token)
        tokens = F.pad(tokens, (0, 1), value=t3.hp.stop_text_token)
        start = t3.hp.start_speech_token * torch.ones_like(tokens[:, :1])
        embeds, _ = t3.prepare_input_embeds(t3_cond=t3_cond, text_tokens=tokens, speech_tokens=start,
                                            cfg_weight=settings.cfg_weight)
        # upstream appends the start token's embedding a second time (speech position 0)
        bos = t3.speech_emb(start) + t3.speech_pos_emb.get_fixed_embedding(0)
        embeds = torch.cat([embeds, bos], dim=1)
        sampling = Sampling(settings.temperature, settings.cfg_weight, _REPETITION_PENALTY[self.model],
                            min_p=_MIN_P, top_p=_TOP_P)
        return embeds.to(self._t3_dtype), sampling

    @property
    def _t3_dtype(self) -> torch.dtype:
        return next(self._tts.t3.tfmr.parameters()).dtype

    def step(self, streams: list[Stream]) -> list[Piece | BaseException]:
        """One T3 token for every stream still decoding (one batched forward), then the S3Gen
        windows that fell due. Streams whose tokens are all made only vocode."""
        others = [s for s in streams if not isinstance(s, ChatterboxStream)]    # voice conversion windows
        results: dict[Stream, Piece | BaseException] = dict(zip(others, super().step(others), strict=True))
        everything, streams = streams, [s for s in streams if isinstance(s, ChatterboxStream)]
        with self._generation_lock, torch.inference_mode():
            if self._batch is None:         # unloaded while these streams were open: they cannot go on
                for s in streams:
                    results[s] = RuntimeError("ChatterboxEngine was unloaded with this stream open")
                return [results[s] for s in everything]
            decoding = [s for s in streams if not s.seq.finished]
            # T3Batch.run moves members left out of this step (paused) out with their cache kept
            before = {s: len(s.seq.tokens) for s in decoding}
            try:
                self._batch.run([s.seq for s in decoding])
            except Exception as exc:  # noqa: BLE001 - the batch is unusable: fail its streams
                log.error("T3 batch step failed", exc_info=True)
                for s in decoding:
                    self._batch.discard(s.seq)
                    results[s] = exc
            vocoding = [s for s in streams if s not in results]
            due = [s for s in vocoding if s.vocoder.due(len(s.vocodable), s.seq.finished)]
            audio = dict(zip(due, self._streamer.windows([(s.vocoder, s.vocodable, s.seq.finished) for s in due]),
                             strict=True))
            for s in vocoding:
                window = audio.get(s, np.zeros(0, np.float32))
                if isinstance(window, BaseException):
                    self._batch.discard(s.seq)
                    results[s] = window
                else:
                    results[s] = s.piece(window, len(s.seq.tokens) - before.get(s, len(s.seq.tokens)))
        return [results[s] for s in everything]

    def release_memory(self) -> None:
        if self._batch is not None:
            for seq in list(self._batch.members):
                self._batch.discard(seq)
        if self.device.startswith("cuda"):
            torch.cuda.empty_cache()

    def _loaded(self) -> Any:
        if self._tts is None:
            raise RuntimeError("ChatterboxEngine is not loaded (load() has not run, or unload() ran since)")
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

    def _vocode(self, speech_tokens: torch.Tensor, gen: dict, watermark: bool = True) -> np.ndarray:
        """S3Gen + Perth watermark (unless `watermark` is False), as upstream; float32 mono at 24 kHz."""
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
        if watermark:
            wav = self._watermark(wav)
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

    def convert_voice(self, audio: np.ndarray | str, voice: VoiceRef, seed: int = 0, *,
                      watermark: bool = True) -> np.ndarray:
        """Re-speak `audio` (float32 at VC_INPUT_RATE, or a file path) in `voice`, as upstream
        ChatterboxVC.generate() does, with the already-loaded S3Gen. float32 mono at 24 kHz; the
        Perth watermark is skipped only with `watermark=False` (the operator allowed it)."""
        tts = self._loaded()
        if self.model == "turbo":
            raise EngineError("voice conversion needs the standard S3Gen; chatterbox-turbo has the meanflow one")
        source = self._source_audio(audio)
        conds, _ = self._conditionals(voice)
        with self._generation_lock, torch.inference_mode():
            _seed(seed)
            speech_tokens, _ = tts.s3gen.tokenizer(torch.from_numpy(source)[None].to(self.device))
            return self._vocode(speech_tokens.reshape(-1), conds.gen, watermark)

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


class ChatterboxStream(Stream):
    """One text chunk: its T3 sequence and its window vocoder."""

    def __init__(self, engine: ChatterboxEngine, seq: Sequence, vocoder: WindowVocoder, input_tokens: int,
                 source: str):
        super().__init__()
        self.engine = engine
        self.seq = seq
        self.vocoder = vocoder
        self.input_tokens = input_tokens
        self.source = source                 # where the voice's conditionals came from
        self._input_reported = False

    @property
    def vocodable(self) -> list[int]:
        return [t for t in self.seq.tokens if t < _SPEECH_VOCAB]

    def piece(self, audio: np.ndarray, new_tokens: int) -> Piece:
        """This step's piece: the audio of the window that fell due, if one did (else empty)."""
        final = self.seq.finished
        self.done = final
        input_tokens = 0 if self._input_reported else self.input_tokens
        self._input_reported = True
        return Piece(audio, input_tokens=input_tokens, output_tokens=new_tokens, last=final)

    def close(self) -> None:
        if not self.closed and self.engine._batch is not None:
            self.engine._batch.discard(self.seq)
        super().close()


def _model_modules(tts: Any) -> list[torch.nn.Module]:
    """The modules a loaded upstream model holds: T3, S3Gen, the voice encoder (its attributes),
    and the watermarker's network."""
    modules = [value for value in vars(tts).values() if isinstance(value, torch.nn.Module)]
    network = getattr(getattr(tts, "watermarker", None), "perth_net", None)
    if isinstance(network, torch.nn.Module):
        modules.append(network)
    return modules


def _model_tensors(tts: Any) -> list[torch.Tensor]:
    """Every tensor of the model's modules: parameters, buffers, and the plain tensor attributes
    upstream keeps beside them (positional encodings that follow their input's device)."""
    out: list[torch.Tensor] = []
    for root in _model_modules(tts):
        for module in root.modules():
            out.extend(module.parameters(recurse=False))
            out.extend(module.buffers(recurse=False))
            out.extend(value for value in vars(module).values() if isinstance(value, torch.Tensor))
    return out


def _move_model(tts: Any, device: str) -> None:
    """Move the model's weights (T3, S3Gen, voice encoder) and built-in voice to `device`; the
    watermarker stays where upstream puts it (the CPU). Plain tensor attributes on another device
    follow too (upstream moves them to its input's device on use, not with the module)."""
    target = torch.device(device)
    for root in [value for value in vars(tts).values() if isinstance(value, torch.nn.Module)]:
        root.to(target)
        for module in root.modules():
            for name, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor) and value.device != target and value.device.type != "cpu":
                    setattr(module, name, value.to(target))
    if getattr(tts, "conds", None) is not None:
        tts.conds.to(target)


def _trim_host_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise, and RSS stays up)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return          # not glibc (musl, macOS): nothing to trim this way
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


def gpu_speedups(t3: Any, device: str, dtype: str, compile_decode: bool) -> Any:
    """Apply the CUDA-only speed-ups that are switched on; returns the decode-step function to use
    (None: T3Batch's own). On CPU nothing changes whatever the settings say. (Attention is SDPA
    already: upstream's Llama config asks for it, and the batched loop never requests attention
    weights, which would force the eager kernel as upstream's own loop does.)"""
    if not device.startswith("cuda"):
        return None
    if dtype != "float32":
        t3.tfmr.to(dtype=getattr(torch, dtype))
        t3.speech_emb.to(dtype=getattr(torch, dtype))
        t3.speech_head.to(dtype=getattr(torch, dtype))
        if t3.speech_pos_emb is not None:
            t3.speech_pos_emb.to(dtype=getattr(torch, dtype))
    if not compile_decode:
        return None
    tfmr = torch.compile(t3.tfmr, mode="reduce-overhead", dynamic=True)

    def step(embeds: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
        out = tfmr(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True)
        return out.last_hidden_state[:, -1]
    return step
