"""Seamless windowed vocoding of a growing speech-token sequence with Chatterbox's S3Gen.

Each window runs the flow (token -> mel) over the window's new tokens plus up to
``CONTEXT_TOKENS`` already-vocoded tokens before them and ``LOOKAHEAD`` tokens after them, whose
mel frames are held back until the next window (S3Gen's pre-lookahead: a token's frames depend on
the next three tokens). The flow's starting noise is one fixed tensor per sequence, sliced by
absolute frame position, so overlapping windows see the same noise and agree where they overlap.
HiFiGAN then vocodes the new frames with ``HIFT_CACHE_MELS`` earlier frames in front, and its
excitation source over those frames is the one the previous window used (``cache_source``); the
first ``CROSSFADE`` samples of the new audio are crossfaded into the tail held back from the
previous window. Every window's frames are delivered exactly once, so the total length is that of
vocoding the whole sequence at once. Windows of several sequences that fall due in the same step
can share one flow call (s3gen_batch.py); HiFiGAN and the watermark run per sequence. Only
model-worker processes import this module.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workers.engines.s3gen_batch import FlowRow, flow_mels

log = logging.getLogger(__name__)
MELS_PER_TOKEN = 2
SAMPLES_PER_MEL = 480          # 24 kHz, 50 mel frames a second
LOOKAHEAD = 3                  # S3Gen flow pre_lookahead_len
CONTEXT_TOKENS = 25            # vocoded tokens re-read in front of a window
HIFT_CACHE_MELS = 8            # mel frames HiFiGAN re-reads in front of a window
CROSSFADE = 288                # 12 ms at 24 kHz
MAX_WINDOW_FACTOR = 8          # later windows grow to 8x the first
# Perth works at 32 kHz with a 320-sample hop and returns whole hops only: 240 samples at 24 kHz.
# Pieces are watermarked in whole hops (the rest waits for the next piece) with some audio before
# them as context, so no sample is lost and the watermark runs on across seams.
WATERMARK_HOP = 240
WATERMARK_CONTEXT = 8 * WATERMARK_HOP


def window_schedule(first: int, index: int) -> int:
    """Tokens in window `index`: the first window is small (time to first audio), later ones
    double up to MAX_WINDOW_FACTOR times that to amortise S3Gen's per-call cost."""
    return first * min(2 ** index, MAX_WINDOW_FACTOR)


def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    n = min(tail.size, head.size)
    rising = (0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, n, dtype=np.float32)))
    return tail[:n] * (1.0 - rising) + head[:n] * rising


@dataclass(eq=False)
class WindowVocoder:
    """Vocoding state of one sequence."""
    gen: dict                                   # S3Gen reference dict (the voice), on the device
    seed: int
    first_window: int                           # tokens in the first window; 0: vocode once at the end
    noise: torch.Tensor                         # (1, 80, frames) fixed flow noise: prompt, then tokens
    prompt_mels: int
    done: int = 0                               # tokens whose frames were delivered
    windows: int = 0
    mel_cache: torch.Tensor | None = None       # last HIFT_CACHE_MELS delivered mel frames
    source_cache: torch.Tensor | None = None    # HiFiGAN excitation over those frames
    held: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    unmarked: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))   # not yet delivered
    marked_context: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    watermark: bool = True                      # False only where the operator allows disable_watermark

    def due(self, available: int, final: bool) -> bool:
        if final:
            return True
        if self.first_window <= 0:
            return False
        return available - LOOKAHEAD >= self.done + window_schedule(self.first_window, self.windows)


@dataclass(eq=False)
class _Plan:
    """What one sequence's due window vocodes: tokens[start:] through the flow, frames of
    tokens [state.done, stop) delivered."""
    state: WindowVocoder
    tokens: list[int]
    final: bool
    start: int
    stop: int

    @classmethod
    def make(cls, state: WindowVocoder, tokens: list[int], final: bool) -> _Plan:
        start = max(0, state.done - CONTEXT_TOKENS)
        return cls(state, tokens, final, start, len(tokens) if final else len(tokens) - LOOKAHEAD)


class S3GenStreamer:
    """Runs windows of many sequences with one S3Gen."""

    def __init__(self, s3gen: Any, device: str, watermark: Callable[[np.ndarray], np.ndarray],
                 tail_tokens: tuple[int, ...] = (), n_timesteps: int | None = None, batch_flow: bool = False):
        self.s3gen = s3gen
        self.batch_flow = batch_flow              # windows due together share one flow call
        self.device = device
        self.watermark = watermark
        self.tail_tokens = tail_tokens            # turbo: silence tokens appended before the end
        self.n_timesteps = n_timesteps or (2 if getattr(s3gen, "meanflow", False) else 10)

    def open(self, gen: dict, seed: int, generator: torch.Generator, max_tokens: int,
             first_window: int, watermark: bool = True) -> WindowVocoder:
        ref = {k: (v.to(self.device) if torch.is_tensor(v) else v) for k, v in gen.items()}
        prompt_mels = int(ref["prompt_token"].shape[-1]) * MELS_PER_TOKEN
        frames = prompt_mels + MELS_PER_TOKEN * (max_tokens + len(self.tail_tokens) + LOOKAHEAD)
        noise = torch.randn(1, 80, frames, generator=generator).to(self.device)
        return WindowVocoder(ref, seed, first_window, noise, prompt_mels, watermark=watermark)

    def windows(self, due: list[tuple[WindowVocoder, list[int], bool]]) -> list[np.ndarray | BaseException]:
        """The next stretch of audio (float32, watermarked unless the state says otherwise) of each
        sequence whose window fell due, given its vocodable tokens so far: one flow call for all of
        them (when `batch_flow`), then each one's HiFiGAN and watermark. Each entry is the audio, or
        the exception that failed that sequence alone."""
        plans = [_Plan.make(state, list(tokens) + (list(self.tail_tokens) if final else []), final)
                 for state, tokens, final in due]
        flowing = [i for i, plan in enumerate(plans) if plan.stop > plan.state.done]
        mels = dict(zip(flowing, self._flow([plans[i] for i in flowing]), strict=True))
        results: list[np.ndarray | BaseException] = []
        for i, plan in enumerate(plans):
            try:
                results.append(self._finish(plan, mels.get(i)))
            except Exception as exc:  # noqa: BLE001 - this sequence alone fails
                results.append(exc)
        return results

    def _finish(self, plan: _Plan, mels: torch.Tensor | BaseException | None) -> np.ndarray:
        if isinstance(mels, BaseException):
            raise mels
        state = plan.state
        audio = self._vocode(state, mels, plan.final)
        state.done = max(state.done, plan.stop)
        state.windows += 1
        return self._mark(state, audio, plan.final) if state.watermark else audio.astype(np.float32)

    def _flow(self, plans: list[_Plan]) -> list[torch.Tensor | BaseException]:
        """Each plan's new mel frames: one batched call, or one call per plan."""
        if self.batch_flow and len(plans) > 1:
            try:
                mels = flow_mels(self.s3gen.flow, [self._row(plan) for plan in plans], self.n_timesteps,
                                 self._meanflow)
                return [self._new_frames(plan, m) for plan, m in zip(plans, mels, strict=True)]
            except Exception:  # noqa: BLE001 - find the row that fails: one call each below
                log.warning("batched S3Gen flow failed; running its %d windows one by one", len(plans),
                            exc_info=True)
        out: list[torch.Tensor | BaseException] = []
        for plan in plans:
            try:
                mels = flow_mels(self.s3gen.flow, [self._row(plan)], self.n_timesteps, self._meanflow)[0]
                out.append(self._new_frames(plan, mels))
            except Exception as exc:  # noqa: BLE001 - this sequence alone fails
                out.append(exc)
        return out

    @property
    def _meanflow(self) -> bool:
        return bool(getattr(self.s3gen, "meanflow", False))

    def _row(self, plan: _Plan) -> FlowRow:
        state, p = plan.state, plan.state.prompt_mels
        window = torch.tensor(plan.tokens[plan.start:], dtype=torch.long, device=self.device)
        noise = torch.cat([state.noise[:, :, :p],
                           state.noise[:, :, p + MELS_PER_TOKEN * plan.start: p + MELS_PER_TOKEN * len(plan.tokens)]],
                          dim=2)
        return FlowRow(window, state.gen, noise)

    @staticmethod
    def _new_frames(plan: _Plan, mels: torch.Tensor) -> torch.Tensor:
        return mels[:, :, MELS_PER_TOKEN * (plan.state.done - plan.start): MELS_PER_TOKEN * (plan.stop - plan.start)]

    def _mark(self, state: WindowVocoder, audio: np.ndarray, final: bool) -> np.ndarray:
        audio = np.concatenate([state.unmarked, audio])
        ready = audio.size if final else audio.size - audio.size % WATERMARK_HOP
        state.unmarked = audio[ready:]
        if ready == 0:
            return np.zeros(0, np.float32)
        piece = audio[:ready]
        context = state.marked_context
        padded = np.concatenate([context, piece, np.zeros(-ready % WATERMARK_HOP, np.float32)])
        marked = self.watermark(padded)[context.size: context.size + ready]
        state.marked_context = np.concatenate([context, piece])[-WATERMARK_CONTEXT:]
        return marked.astype(np.float32)

    def _vocode(self, state: WindowVocoder, new_mels: torch.Tensor | None, final: bool) -> np.ndarray:
        if new_mels is None or new_mels.size(2) == 0:
            if not final:
                return np.zeros(0, np.float32)
            audio, state.held = state.held, np.zeros(0, np.float32)
            return audio
        first = state.mel_cache is None
        mels = new_mels if first else torch.cat([state.mel_cache, new_mels], dim=2)
        context = 0 if first else state.mel_cache.size(2) * SAMPLES_PER_MEL
        cache_source = torch.zeros(1, 1, 0, device=self.device) if first else state.source_cache
        torch.manual_seed((state.seed * 1013 + state.windows) & 0xFFFF_FFFF)
        speech, source = self.s3gen.mel2wav.inference(speech_feat=mels.to(self.s3gen.dtype), cache_source=cache_source)
        if first:
            trim = self.s3gen.trim_fade     # upstream's fade-in against spill-over from the voice prompt
            speech[:, :trim.numel()] *= trim[:speech.size(1)]
        wav = speech[0].detach().float().cpu().numpy()
        keep = HIFT_CACHE_MELS * SAMPLES_PER_MEL
        state.mel_cache = mels[:, :, -HIFT_CACHE_MELS:]
        state.source_cache = source[:, :, -min(keep, state.mel_cache.size(2) * SAMPLES_PER_MEL):]
        body = wav[context:]
        if state.held.size:
            overlap = wav[context - state.held.size: context]
            body = np.concatenate([crossfade(state.held, overlap), body])
        if final:
            state.held = np.zeros(0, np.float32)
            return body.astype(np.float32)
        hold = min(CROSSFADE, body.size)
        state.held = body[body.size - hold:].astype(np.float32)
        return body[:body.size - hold].astype(np.float32)
