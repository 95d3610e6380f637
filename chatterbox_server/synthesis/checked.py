"""Checked speech, the Extended family's way to speak a text: candidate takes of each chunk through
the model pool (each take its own job and derived seed), heard by Whisper (the speech-recognition
process, workers/asr_worker.py) and the best kept (synthesis/takes.py), then the peer's
post-processing (audio/post.py). Used by /api/v1/tts and by the tts segments of /concat/mixed.

Whisper is optional: when it cannot run here, or stays busy with other requests, the request goes
on with one unchecked take a chunk and its Outcome says why (`degraded`), never fails for it.
"""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gevent
import numpy as np

from chatterbox_server.audio import post
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.asr_client import BUSY, AsrClient
from chatterbox_server.runtime.pool_client import PoolClient
from chatterbox_server.runtime.progress import Progress
from chatterbox_server.synthesis import speech, watermark
from chatterbox_server.synthesis.requests import SPEED_RANGE, ExtendedTtsRequest
from chatterbox_server.synthesis.takes import Take, choose, make_takes
from chatterbox_server.text.header_text import header_value
from chatterbox_server.text.prep import SpokenChunk
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef
from workers.ipc.protocol import SpeechJob

log = logging.getLogger("chatterbox.extended.tts")
CHUNK_BUFFER = 10
TakeMaker = Callable[[int], bytes]


def unchanged(function: TakeMaker) -> TakeMaker:
    return function


@dataclass
class Outcome:
    pcm: bytes
    seed: int
    takes: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)    # optional capability -> why it was off


def synthesis_settings(req: ExtendedTtsRequest, allow_disable: bool) -> SynthesisSettings:
    return SynthesisSettings(speed=req.speed_factor, exaggeration=req.exaggeration, cfg_weight=req.cfg_weight,
                             temperature=req.temperature, language=req.language,
                             watermark=watermark.keeps_watermark(req.disable_watermark, allow_disable))


@dataclass(frozen=True)
class CheckedSpeech:
    """What checked speech uses. `client_socket`: the client's connection, watched so that a client
    that hangs up cancels its takes; `in_context` wraps a take before it runs in a greenlet of its
    own (the view passes Flask's copy_current_request_context, so the take's history record names
    the request)."""
    pool: PoolClient
    progress: Progress
    info: EngineInfo
    whisper_wait: float
    allow_disable_watermark: bool
    client_socket: object | None = None
    in_context: Callable[[TakeMaker], TakeMaker] = unchanged

    def speak(self, req: ExtendedTtsRequest, chunks: list[str], voice: VoiceRef) -> Outcome:
        """The request's takes, chunk by chunk; the caller has let the request in (PoolClient.admit)."""
        return self.speak_script(req, [SpokenChunk(text, None) for text in chunks], {None: voice})

    def speak_script(self, req: ExtendedTtsRequest, chunks: Sequence[SpokenChunk],
                     voices: Mapping[str | None, VoiceRef]) -> Outcome:
        """A script's takes (text/prep.plan_script), chunk by chunk, each in its voice (None: the
        request's) at its rate, with its exact silences: the model worker adds them to every take
        of the chunk as zero samples and cuts the engine's own edge silence where they stand."""
        seed = req.seed or speech.random_seed()
        cand = req.candidates
        settings = synthesis_settings(req, self.allow_disable_watermark)
        outcome = Outcome(b"", seed)
        asr = None if cand.bypass_whisper else self.whisper(cand.whisper_model, outcome)
        per_chunk = cand.per_chunk if asr is not None or cand.bypass_whisper else 1
        pieces = []
        try:
            for index, chunk in enumerate(chunks):
                if asr is not None and "whisper" in outcome.degraded:      # Whisper was busy: the rest unchecked
                    asr.close()
                    asr, per_chunk = None, 1
                takes, audio = self.chunk_takes(asr, req, at_rate(settings, chunk.rate), voices[chunk.voice], seed,
                                                index, chunk, per_chunk, outcome)
                best, why = choose(takes, cand.longest_on_fail)
                pieces.append(audio[(best.candidate, best.attempt)])
                outcome.takes.extend({**take.describe(), "selected": take is best,
                                      **({"reason": why} if take is best else {})} for take in takes)
        finally:
            if asr is not None:
                asr.close()
        outcome.pcm = b"".join(pieces)
        return outcome

    def whisper(self, model: str, outcome: Outcome) -> AsrClient | None:
        """A connection to the Whisper process with `model` loaded, or None when it cannot run here (no
        model offline, no process): then each chunk gets one unchecked take, and the header and the JSON
        answer say why."""
        asr = AsrClient(self.pool.run_dir)
        try:
            asr.open()
            used = asr.probe(model)
        except ApiError as exc:
            asr.close()
            outcome.degraded["whisper"] = header_value(f"Whisper {model!r} is unavailable, one unchecked take per "
                                                       f"chunk: {exc.message}")
            outcome.headers["X-Chatterbox-Whisper"] = outcome.degraded["whisper"]
            log.warning("candidate check off for this request: %s", outcome.degraded["whisper"])
            return None
        name = os.path.basename(used.model.rstrip("/")) or used.model
        outcome.headers["X-Chatterbox-Whisper"] = header_value(f"{model} ({name})")
        return asr

    def chunk_takes(self, asr: AsrClient | None, req: ExtendedTtsRequest, settings: SynthesisSettings,
                    voice: VoiceRef, seed: int, index: int, chunk: SpokenChunk, per_chunk: int,
                    outcome: Outcome) -> tuple[list[Take], dict[tuple[int, int], bytes]]:
        rate = self.info.sample_rate
        text = chunk.text
        silence = chunk.before + chunk.after

        def synthesize_take(take_seed: int) -> bytes:
            job = SpeechJob(request_id=speech.new_request_id(), chunks=(text,), settings=settings, voice=voice,
                            seed=take_seed, buffer_size=CHUNK_BUFFER, text_preview=text[:80],
                            lead_pause=chunk.before / rate, pauses_after=(chunk.after / rate,) if chunk.after else ())
            return speech.collect_pcm(speech.SpeechRun.start(self.pool, job, self.info, self.client_socket,
                                                             self.progress, admitted=True))

        def synthesize_round(seeds: list[int]) -> list[bytes]:
            """The round's takes as concurrent jobs: the pool spreads them over its model workers."""
            if len(seeds) == 1:
                return [synthesize_take(seeds[0])]
            greenlets = [gevent.spawn(self.in_context(synthesize_take), take_seed) for take_seed in seeds]
            try:
                gevent.joinall(greenlets, raise_error=True)
            finally:
                gevent.killall([g for g in greenlets if not g.dead])
            return [g.value for g in greenlets]

        def hear(pcm: bytes) -> str | None:
            """What Whisper heard, or None when it stayed busy with other requests past
            CHATTERBOX_WHISPER_WAIT_SECONDS: the request goes on unchecked (degraded), never waits longer."""
            try:
                return asr.transcribe(req.candidates.whisper_model, pcm, rate, req.language,
                                      wait=self.whisper_wait).text
            except ApiError as exc:
                if exc.code != BUSY:
                    raise
                outcome.degraded["whisper"] = header_value(f"Whisper was busy with other requests, the rest "
                                                           f"unchecked (one take per chunk): {exc.message}")
                outcome.headers["X-Chatterbox-Whisper"] = outcome.degraded["whisper"]
                log.warning("candidate check off for the rest of this request: %s", exc.message)
                return None

        return make_takes(index, text, seed, per_chunk, req.candidates.max_attempts, synthesize_round,
                          lambda pcm: (len(pcm) / 2 - silence) / rate, hear if asr is not None else None)


def at_rate(settings: SynthesisSettings, rate: float) -> SynthesisSettings:
    """The settings of a chunk that markup speeds up or slows down (SSML prosody), within SPEED_RANGE."""
    if rate == 1.0:
        return settings
    return dataclasses.replace(settings, speed=min(max(settings.speed * rate, SPEED_RANGE[0]), SPEED_RANGE[1]))


def after_synthesis(audio: np.ndarray, rate: int, req: ExtendedTtsRequest) -> np.ndarray:
    """trim, then auto-editor's silence removal, then loudness: the peer's order."""
    after = req.after
    if after.trim:
        audio = post.trim_silence(audio, rate, after.trim_threshold_ms).audio
    if after.auto_editor:
        edited = post.remove_silences(audio, rate, after.ae_threshold, after.ae_margin)
        audio = edited if edited.size else audio        # nothing above ae_threshold: keep it all
    if after.normalize and audio.size:
        audio = post.normalize_loudness(audio, rate, after.normalize_method, after.normalize_level,
                                        after.normalize_tp, after.normalize_lra)
    return audio
