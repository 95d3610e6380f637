"""POST /api/v1/tts with every field of the Extended TTSRequest.

The path of a request: prepare the text (text/prep.py) and cut it into chunks, within the request's
budget (synthesis/budget.py); speak it as checked speech (synthesis/checked.py: candidate takes
heard by Whisper, the best kept, post-processed); encode every export format into the outputs
directory or its project sub-folder (synthesis/outputs.py) and answer with one file or with JSON.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from chatterbox_server.api import disk_quota, language_notes
from chatterbox_server.api.bodies import json_object, load
from chatterbox_server.api.extended.common import (
    checked_speech,
    output_store,
    output_url,
    reference_voice,
)
from chatterbox_server.api.extended.tts_schema import ExtendedQuerySchema, ExtendedTtsSchema, TtsRequest
from chatterbox_server.api.language_notes import language_note
from chatterbox_server.audio import post
from chatterbox_server.audio.encoders import CONTENT_TYPES, encode_whole
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store import outputs_index
from chatterbox_server.store.outputs import OutputStore
from chatterbox_server.synthesis import speech, watermark
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file, prepared_chunks
from chatterbox_server.synthesis.checked import Outcome, after_synthesis
from chatterbox_server.synthesis.outputs import Generated, encode_and_store
from chatterbox_server.synthesis.requests import ExtendedTtsRequest
from chatterbox_server.synthesis.voice_defaults import EXTENDED_NAMES as SPEED_NAMES
from chatterbox_server.synthesis.voice_defaults import with_voice_defaults
from chatterbox_server.text import prep
from chatterbox_server.text.header_text import attachment
from workers.engines.base import EngineInfo, VoiceRef

log = logging.getLogger("chatterbox.extended.tts")
bp = Blueprint("extended_tts", __name__)
RUBBERBAND = "rubberband"        # every speed_factor_library name is served by Rubber Band (pedalboard)


@bp.post("/tts")
def tts() -> Response:
    started = time.monotonic()
    request_id = speech.new_request_id()
    query = load(ExtendedQuerySchema(), request.args.to_dict())
    settings = current_app.config["SETTINGS"]
    svc = services()
    body = with_voice_defaults(svc.voices, json_object(), "reference_audio_filename", ExtendedTtsSchema, SPEED_NAMES,
                               guards.owner_check())
    req: TtsRequest = load(ExtendedTtsSchema(max_input_chars=settings.max_input_chars), body)
    limits = Limits.of(settings)
    script = plan_script(svc, req, limits) if prep.needs_script(req.text) else None
    if script is not None:
        chunks = [chunk.text for chunk in script.chunks]
    else:
        chunks = off_hub(prepared_chunks, req.text, req.text_options, req.enable_batching,
                         req.smart_batch_short_sentences, limits)
    if not chunks:
        raise ApiError(400, "text: nothing is left to speak after text preparation (sound_words_field, ...)",
                       param="text")
    cand = req.candidates
    ledger = Ledger(limits)
    ledger.add_text(chunks, cand.per_chunk, cand.max_attempts, cand.bypass_whisper)
    info = svc.require_engine(req.model, req.language)
    check_whole_file(ledger, svc.pool.speed(info.group), "text")   # every answer of /api/v1/tts is a whole file
    headers = engine_notes(req, info)
    voice = reference_voice(svc, req.reference_voice, info)
    voices = script_voices(svc, script, info) if script is not None else {}
    disk_quota.require_room()   # the output is stored: refused before any synthesis when the workspace is full
    svc.pool.admit(model=info.group)    # once for the whole request: its checked takes are held to the job cap only
    if script is not None:
        outcome = checked_speech(svc, info).speak_script(req, script.chunks, {None: voice, **voices})
        if script.dropped_tags:
            headers["X-Chatterbox-Dropped-Tags"] = ",".join(script.dropped_tags)
        if script.turns > 1:
            headers["X-Chatterbox-Turns"] = str(script.turns)
    else:
        outcome = checked_speech(svc, info).speak(req, chunks, voice)
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


# -- scripts: inline speakers, pauses, SSML and tags ------------------------------------------------
def plan_script(svc: Services, req: TtsRequest, limits: Limits) -> prep.Script:
    """The text's turns and markup read before anything is synthesized (text/prep.plan_script), each
    piece of speech prepared as a plain text is (sound_words_field, lowercase, ...); a 400 that names
    the turn and the character."""
    info = svc.require_engine(req.model, req.language)  # which tags it renders, its rate for the exact silences
    gap = (svc.settings.dialogue_gap_ms if req.gap_ms is None else req.gap_ms) / 1000

    def chunker(text: str) -> list[str]:
        return prepared_chunks(text, req.text_options, req.enable_batching, req.smart_batch_short_sentences, limits)
    try:
        return off_hub(functools.partial(prep.plan_script, req.text, chunker, tags=frozenset(info.tags),
                                         speakers=req.speakers, gap=gap, sample_rate=info.sample_rate,
                                         max_turns=svc.settings.dialogue_max_turns))
    except prep.ScriptError as exc:
        raise ApiError(400, exc.message, param=exc.param) from None


def script_voices(svc: Services, script: prep.Script, info: EngineInfo) -> dict[str | None, VoiceRef]:
    """Every voice the script's speakers name, from the library (a 404 naming the turn for one it lacks)."""
    voices: dict[str | None, VoiceRef] = {}
    for name, where in script.voices.items():
        try:
            voices[name] = reference_voice(svc, name, info)
        except ApiError as exc:
            message = exc.message.removeprefix("reference_audio_filename: ")
            raise ApiError(exc.status, f"speakers: {where}: {message}", param="speakers", code=exc.code) from None
    return voices


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


# -- where the files go ---------------------------------------------------------------------------
def folder_store(folder: str) -> OutputStore:
    """The outputs directory or a sub-folder of it (project/folder), which must stay inside it."""
    return output_store().subfolder(folder, "project")


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
            "export_formats": list(req.export_formats), "disable_watermark": req.disable_watermark,
            **({"speakers": req.speakers, "gap_ms": req.gap_ms}
               if isinstance(req, TtsRequest) and req.speakers else {})}


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
