"""POST /api/v1/tts with every field of the Extended TTSRequest.

The path of a request: prepare the text (text/prep.py), cut it into chunks, make candidate takes
of each chunk through the model pool (each take its own job and derived seed), let Whisper (the
speech-recognition process, workers/asr_worker.py) hear them and keep the best (synthesis/takes.py),
join the kept takes, post-process (audio/post.py), encode every export format into the outputs
directory (or its project sub-folder) and answer with one file or with JSON.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import gevent
import numpy as np
from flask import Blueprint, Response, copy_current_request_context, current_app, jsonify, request

from chatterbox_server.api import disk_quota, language_notes
from chatterbox_server.api.bodies import json_object, load
from chatterbox_server.api.extended.common import (
    Generated,
    encode_and_store,
    output_store,
    output_url,
    reference_voice,
)
from chatterbox_server.api.extended.tts_schema import ExtendedQuerySchema, ExtendedTtsRequest, ExtendedTtsSchema
from chatterbox_server.api.language_notes import language_note
from chatterbox_server.audio import post
from chatterbox_server.audio.encoders import CONTENT_TYPES, encode_whole
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.asr_client import BUSY, AsrClient
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store import outputs_index
from chatterbox_server.store.outputs import OutputStore
from chatterbox_server.synthesis import speech, watermark
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file, prepared_chunks
from chatterbox_server.synthesis.takes import Take, choose, make_takes
from chatterbox_server.synthesis.voice_defaults import EXTENDED_NAMES as SPEED_NAMES
from chatterbox_server.synthesis.voice_defaults import with_voice_defaults
from chatterbox_server.text.header_text import attachment, header_value
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef
from workers.ipc.protocol import SpeechJob

log = logging.getLogger("chatterbox.extended.tts")
bp = Blueprint("extended_tts", __name__)
CHUNK_BUFFER = 10
RUBBERBAND = "rubberband"        # every speed_factor_library name is served by Rubber Band (pedalboard)


@dataclass
class Outcome:
    pcm: bytes
    seed: int
    takes: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    degraded: dict[str, str] = field(default_factory=dict)    # optional capability -> why it was off


@bp.post("/tts")
def tts() -> Response:
    started = time.monotonic()
    request_id = speech.new_request_id()
    query = load(ExtendedQuerySchema(), request.args.to_dict())
    settings = current_app.config["SETTINGS"]
    svc = services()
    body = with_voice_defaults(svc.voices, json_object(), "reference_audio_filename", ExtendedTtsSchema, SPEED_NAMES,
                               guards.owner_check())
    req: ExtendedTtsRequest = load(ExtendedTtsSchema(max_input_chars=settings.max_input_chars), body)
    limits = Limits.of(settings)
    chunks = off_hub(prepared_chunks, req.text, req.text_options, req.enable_batching,
                     req.smart_batch_short_sentences, limits)
    if not chunks:
        raise ApiError(400, "text: nothing is left to speak after text preparation (sound_words_field, ...)",
                       param="text")
    cand = req.candidates
    ledger = Ledger(limits)
    ledger.add_text(chunks, cand.per_chunk, cand.max_attempts, cand.bypass_whisper)
    check_whole_file(ledger, svc.pool.speed(), "text")         # every answer of /api/v1/tts is a whole file
    info = svc.require_engine()
    headers = engine_notes(req, info)
    voice = reference_voice(svc, req.reference_voice, info)
    disk_quota.require_room()   # the output is stored: refused before any synthesis when the workspace is full
    svc.pool.admit()        # once for the whole request: make_speech's takes are then held to the job cap only
    outcome = make_speech(svc, info, req, chunks, voice)
    headers.update(outcome.headers)
    note = language_note(info, req.language)
    if note:
        outcome.degraded[language_notes.CAPABILITY] = note
        headers[language_notes.HEADER] = note
    if outcome.degraded:
        headers["X-Chatterbox-Degraded"] = ",".join(sorted(outcome.degraded))
    store = folder_store(req.folder)
    original = outcome.pcm
    audio = off_hub(after_synthesis, post.pcm16_to_float(outcome.pcm), info.sample_rate, req)
    generated = off_hub(encode_and_store, store, req.export_formats, post.float_to_pcm16(audio), info.sample_rate,
                        "tts", generation_parameters(req, outcome.seed), "", None, "", guards.workspace())
    if req.after.auto_editor and req.after.keep_original_wav_ae:
        keep_original(store, generated, original, info.sample_rate, guards.workspace())
    generated.files.update({key: relative_name(store, name) for key, name in generated.files.items()})
    headers.update({"X-Request-Id": request_id, "X-Generation-Seed": str(outcome.seed)})
    headers.update(watermark_header(req, info, settings.allow_disable_watermark))
    seconds = audio.size / info.sample_rate
    if query["response_mode"] == "url":
        return url_response(generated, req, outcome, chunks, seconds, time.monotonic() - started, headers)
    return download_response(generated, query["return_format"], headers)


# -- engine fields --------------------------------------------------------------------------------
def engine_notes(req: ExtendedTtsRequest, info: EngineInfo) -> dict[str, str]:
    if req.language is not None and req.language not in info.languages and req.language != "en":
        supported = ", ".join(info.languages) or "en (this model speaks English only)"
        raise ApiError(400, f"language {req.language!r} is not supported; use {supported}", param="language")
    ignored = [] if info.supports_exaggeration else ["exaggeration", "cfg_weight", "temperature"]
    if not req.candidates.use_faster_whisper:
        ignored.append("use_faster_whisper")      # openai-whisper is not installed: faster-whisper serves both
    headers = {}
    sent = [name for name in ignored if name in req.explicit]
    if sent:
        headers["X-Chatterbox-Ignored-Fields"] = ",".join(sent)
    if req.speed_factor != 1.0:
        headers["X-Chatterbox-Speed-Library"] = f"{req.speed_factor_library}->{RUBBERBAND}"
    return headers


def watermark_header(req: ExtendedTtsRequest, info: EngineInfo, allowed: bool) -> dict[str, str]:
    """What happened to disable_watermark (the peer's default asks for no watermark)."""
    return {watermark.HEADER: watermark.watermark_note(info.engine, req.disable_watermark, allowed)}


def synthesis_settings(req: ExtendedTtsRequest, allow_disable: bool) -> SynthesisSettings:
    return SynthesisSettings(speed=req.speed_factor, exaggeration=req.exaggeration, cfg_weight=req.cfg_weight,
                             temperature=req.temperature, language=req.language,
                             watermark=watermark.keeps_watermark(req.disable_watermark, allow_disable))


# -- candidates -----------------------------------------------------------------------------------
def make_speech(svc: Services, info: EngineInfo, req: ExtendedTtsRequest, chunks: list[str],
                voice: VoiceRef) -> Outcome:
    """The request's takes, chunk by chunk; the caller has let the request in (PoolClient.admit)."""
    seed = req.seed or speech.random_seed()
    cand = req.candidates
    settings = synthesis_settings(req, svc.settings.allow_disable_watermark)
    outcome = Outcome(b"", seed)
    asr = None if cand.bypass_whisper else whisper_client(svc, cand.whisper_model, outcome)
    per_chunk = cand.per_chunk if asr is not None or cand.bypass_whisper else 1
    pieces = []
    try:
        for index, text in enumerate(chunks):
            if asr is not None and "whisper" in outcome.degraded:      # Whisper was busy: the rest unchecked
                asr.close()
                asr, per_chunk = None, 1
            takes, audio = chunk_takes(svc, info, asr, req, settings, voice, seed, index, text, per_chunk,
                                       outcome)
            best, why = choose(takes, cand.longest_on_fail)
            pieces.append(audio[(best.candidate, best.attempt)])
            outcome.takes.extend({**take.describe(), "selected": take is best,
                                  **({"reason": why} if take is best else {})} for take in takes)
    finally:
        if asr is not None:
            asr.close()
    outcome.pcm = b"".join(pieces)
    return outcome


def whisper_client(svc: Services, model: str, outcome: Outcome) -> AsrClient | None:
    """A connection to the Whisper process with `model` loaded, or None when it cannot run here (no
    model offline, no process): then each chunk gets one unchecked take, and the header and the JSON
    answer say why. Whisper is optional; its absence degrades the request, never fails it."""
    asr = AsrClient(svc.pool.run_dir)
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


def chunk_takes(svc: Services, info: EngineInfo, asr: AsrClient | None, req: ExtendedTtsRequest,
                settings: SynthesisSettings, voice: VoiceRef, seed: int, index: int, text: str,
                per_chunk: int, outcome: Outcome) -> tuple[list[Take], dict[tuple[int, int], bytes]]:
    client = request.environ.get("gunicorn.socket")      # read here: greenlets have no request context

    def synthesize_take(take_seed: int) -> bytes:
        job = SpeechJob(request_id=speech.new_request_id(), chunks=(text,), settings=settings, voice=voice,
                        seed=take_seed, buffer_size=CHUNK_BUFFER, text_preview=text[:80])
        run = speech.SpeechRun.start(svc.pool, job, info, client, svc.progress, admitted=True)
        try:
            return b"".join(chunk.pcm for chunk in run.audio())
        finally:
            run.close()

    def synthesize_round(seeds: list[int]) -> list[bytes]:
        """The round's takes as concurrent jobs: the pool spreads them over its model workers."""
        if len(seeds) == 1:
            return [synthesize_take(seeds[0])]
        # each take's greenlet gets the request's context, so its history record names the request
        greenlets = [gevent.spawn(copy_current_request_context(synthesize_take), take_seed) for take_seed in seeds]
        try:
            gevent.joinall(greenlets, raise_error=True)
        finally:
            gevent.killall([g for g in greenlets if not g.dead])
        return [g.value for g in greenlets]

    def hear(pcm: bytes) -> str | None:
        """What Whisper heard, or None when it stayed busy with other requests past
        CHATTERBOX_WHISPER_WAIT_SECONDS: the request goes on unchecked (degraded), never waits longer."""
        try:
            return asr.transcribe(req.candidates.whisper_model, pcm, info.sample_rate, req.language,
                                  wait=svc.settings.whisper_wait_seconds).text
        except ApiError as exc:
            if exc.code != BUSY:
                raise
            outcome.degraded["whisper"] = header_value(f"Whisper was busy with other requests, the rest unchecked "
                                                       f"(one take per chunk): {exc.message}")
            outcome.headers["X-Chatterbox-Whisper"] = outcome.degraded["whisper"]
            log.warning("candidate check off for the rest of this request: %s", exc.message)
            return None

    return make_takes(index, text, seed, per_chunk, req.candidates.max_attempts, synthesize_round,
                      lambda pcm: len(pcm) / 2 / info.sample_rate, hear if asr is not None else None)


# -- after synthesis ------------------------------------------------------------------------------
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


# -- where the files go ---------------------------------------------------------------------------
def folder_store(folder: str) -> OutputStore:
    """The outputs directory or a sub-folder of it (project/folder), which must stay inside it."""
    root = output_store()
    if not folder:
        return root
    path = os.path.join(root.directory, folder)
    real_root = os.path.realpath(root.directory)
    if os.path.commonpath([os.path.realpath(path), real_root]) != real_root:
        raise ApiError(400, "project: the folder leaves the outputs directory", param="project")
    return OutputStore(path, root.retention_seconds, root.max_bytes)


def relative_name(store: OutputStore, name: str) -> str:
    prefix = os.path.relpath(store.directory, output_store().directory)
    return name if prefix == "." else f"{prefix}/{name}"


def keep_original(store: OutputStore, generated: Generated, pcm: bytes, rate: int, owner: str | None) -> None:
    """keep_original_wav_ae: the take before silence removal, beside the edited files (a base name
    of its own, so its own metadata: the workspace it belongs to)."""
    base = generated.files[generated.formats[0]].rsplit(".", 1)[0]
    name = off_hub(store.write_atomic, f"{base}_original.wav", encode_whole("wav", pcm, rate))
    off_hub(lambda: outputs_index.record_generation(store, {"wav": name}, "tts", {"original_of": base},
                                                    owner=owner))
    generated.files["original_wav"] = name


def generation_parameters(req: ExtendedTtsRequest, seed: int) -> dict[str, Any]:
    """What made this file, in the peer's field names: for the JSON answer and the outputs' metadata."""
    cand, after, text = req.candidates, req.after, req.text_options
    return {"type": "tts", "text": req.text, "reference_audio_filename": req.reference_voice,
            "exaggeration": req.exaggeration, "temperature": req.temperature, "cfg_weight": req.cfg_weight,
            "seed": seed, "language": req.language, "speed_factor": req.speed_factor,
            "speed_factor_library": req.speed_factor_library, "num_candidates_per_chunk": cand.per_chunk,
            "max_attempts_per_candidate": cand.max_attempts, "bypass_whisper_checking": cand.bypass_whisper,
            "whisper_model_name": cand.whisper_model, "use_faster_whisper": cand.use_faster_whisper,
            "use_longest_transcript_on_fail": cand.longest_on_fail, "enable_batching": req.enable_batching,
            "smart_batch_short_sentences": req.smart_batch_short_sentences, "to_lowercase": text.to_lowercase,
            "normalize_spacing": text.normalize_spacing, "fix_dot_letters": text.fix_dot_letters,
            "remove_reference_numbers": text.remove_reference_numbers, "sound_words_field": text.sound_words_field,
            "use_auto_editor": after.auto_editor, "ae_threshold": after.ae_threshold, "ae_margin": after.ae_margin,
            "keep_original_wav_ae": after.keep_original_wav_ae, "normalize_audio": after.normalize,
            "normalize_method": after.normalize_method, "normalize_level": after.normalize_level,
            "normalize_tp": after.normalize_tp, "normalize_lra": after.normalize_lra, "trim": after.trim,
            "trim_threshold_ms": after.trim_threshold_ms, "project": req.folder or None,
            "export_formats": list(req.export_formats), "disable_watermark": req.disable_watermark}


# -- responses ------------------------------------------------------------------------------------
def download_response(generated: Generated, return_format: str | None, headers: dict[str, str]) -> Response:
    fmt = return_format if return_format in generated.formats else generated.formats[0]
    store_name = generated.files[fmt]
    headers = {**headers, "Content-Disposition": attachment(os.path.basename(store_name))}
    others = [f for f in generated.formats if f != fmt]
    if others:
        headers["X-Alternative-Formats"] = "|".join(f"{f}:{output_url(generated.files[f])}" for f in others)
    if return_format and return_format != fmt:
        headers["X-Chatterbox-Return-Format"] = f"{return_format} not among export_formats; sent {fmt}"
    return Response(generated.data[fmt], content_type=CONTENT_TYPES[fmt], headers=headers)


def url_response(generated: Generated, req: ExtendedTtsRequest, outcome: Outcome, chunks: list[str], seconds: float,
                 elapsed: float, headers: dict[str, str]) -> Response:
    files = [{"format": fmt, "filename": generated.files[fmt], "url": output_url(generated.files[fmt], absolute=True),
              "size_bytes": len(generated.data[fmt])} for fmt in generated.formats]
    if "original_wav" in generated.files:
        files.append({"format": "wav", "filename": generated.files["original_wav"],
                      "url": output_url(generated.files["original_wav"], absolute=True), "kind": "original"})
    response = jsonify({
        "success": True,
        "message": f"Generated {seconds:.2f} s of speech in {len(generated.formats)} format(s)",
        "output_files": files,
        "generation_seed_used": outcome.seed,
        "processing_time_seconds": round(elapsed, 3),
        "duration_seconds": round(seconds, 3),
        "project": req.folder or None,
        "chunks": chunks,
        "candidates": outcome.takes,
        "parameters": generation_parameters(req, outcome.seed),
        "degraded": outcome.degraded,
    })
    response.headers.update(headers)
    return response
