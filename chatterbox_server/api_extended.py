"""API family 2: the "Extended Plus" API (seed 002) under /api/v1, and the generated files under /outputs.

A request synthesizes the whole clip, encodes every requested format, stores them in
DATA_DIR/outputs and answers with the first one as a download (`response_mode=stream`) or with
their URLs (`response_mode=url`). Errors use the Extended envelope (see app.error_response).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory, url_for
from flask.blueprints import BlueprintSetupState
from marshmallow import ValidationError

from chatterbox_server import speech
from chatterbox_server.api.tts_schema import clean_folder
from chatterbox_server.bodies import form_fields, load
from chatterbox_server.encoders import CONTENT_TYPES, FILE_EXTENSIONS, encode_whole
from chatterbox_server.errors import ApiError
from chatterbox_server.extended_schemas import (
    TtsQuerySchema,
    VcFormSchema,
    VoiceUploadSchema,
    voice_name_from_filename,
)
from chatterbox_server.hub import off_hub
from chatterbox_server.outputs import OutputStore
from chatterbox_server.services import Services, services
from chatterbox_server.voices import (
    StoredVoice,
    check_name,
    decode_upload,
    write_temporary_voice,
    write_temporary_wav,
)
from workers.audio import plan_windows
from workers.engines.base import VC_INPUT_RATE, EngineInfo, VoiceRef
from workers.protocol import ConvertJob, SpeechJob

log = logging.getLogger("chatterbox.extended")
bp = Blueprint("extended", __name__)
outputs_bp = Blueprint("outputs", __name__)
STORE_KEY = "chatterbox.outputs"
# The Extended API always speaks whole files: these only shape how the text is cut into chunks.
CHUNK_STRATEGY, CHUNK_SIZE, CHUNK_BUFFER = "sentence", 200, 10


def _install_store(state: BlueprintSetupState) -> None:
    settings = state.app.config["SETTINGS"]
    state.app.extensions.setdefault(STORE_KEY, OutputStore(
        os.path.join(settings.data_dir, "outputs"), settings.output_retention_seconds, settings.output_max_bytes))


bp.record_once(_install_store)
outputs_bp.record_once(_install_store)


def output_store() -> OutputStore:
    return current_app.extensions[STORE_KEY]


def output_folder(folder: str) -> OutputStore | None:
    """A project sub-folder of the outputs directory (see api/tts_schema.clean_folder), or None."""
    try:
        clean = clean_folder(folder)
    except ValidationError:
        return None
    root = output_store()
    path = os.path.realpath(os.path.join(root.directory, clean))
    if not clean or os.path.dirname(path) == path or not path.startswith(os.path.realpath(root.directory) + os.sep):
        return None
    return OutputStore(path, root.retention_seconds, root.max_bytes) if os.path.isdir(path) else None


@dataclass(frozen=True)
class Generated:
    formats: tuple[str, ...]
    files: dict[str, str]             # format -> file name in the outputs directory
    data: dict[str, bytes]            # format -> encoded bytes


# -- POST /api/v1/tts: chatterbox_server/api/extended_tts.py ---------------------------------------
def reference_voice(svc: Services, name: str | None, info: EngineInfo) -> VoiceRef:
    """A library voice for reference_audio_filename: 404 when there is none by that name."""
    param = "reference_audio_filename"
    if name is not None and name not in svc.voices.available(info) and svc.voices.get(name) is None:
        raise ApiError(404, f"{param}: no reference audio {name!r} in the voice library; see GET /api/v1/voices "
                            "or upload one with POST /api/v1/voice", param=param, code="reference_not_found")
    try:
        return svc.voices.resolve(name, info, param=param)
    except ApiError as exc:
        raise ApiError(exc.status, f"{param}: {exc.message}", param=param, code=exc.code) from None


def synthesize(svc: Services, job: SpeechJob | ConvertJob, info: EngineInfo) -> bytes:
    run = speech.SpeechRun.start(svc.pool, job, info, request.environ.get("gunicorn.socket"), svc.progress)
    try:
        return b"".join(chunk.pcm for chunk in run.audio())
    finally:
        run.close()


def encode_and_store(store: OutputStore, formats: tuple[str, ...], pcm: bytes, sample_rate: int) -> Generated:
    """Encode every format, write them under one base name, then apply the retention limits."""
    data = {fmt: encode_whole(fmt, pcm, sample_rate) for fmt in formats}
    names = store.store({FILE_EXTENSIONS[fmt]: data[fmt] for fmt in formats})
    files = {fmt: names[FILE_EXTENSIONS[fmt]] for fmt in formats}
    try:
        removed = store.prune(keep=files.values())
        if removed:
            log.info("retention removed %d output file(s)", len(removed))
    except OSError:
        log.exception("pruning %s failed", store.directory)
    return Generated(formats, files, data)


def output_url(filename: str, absolute: bool = False) -> str:
    """X-Alternative-Formats needs relative URLs (its clients split on ':'); JSON gets absolute ones so a
    client can download them as they are (the seed's "before" example does)."""
    return url_for("outputs.output_file", filename=filename, _external=absolute)


def download_response(generated: Generated, headers: dict[str, str]) -> Response:
    first, *others = generated.formats
    headers = {**headers, "Content-Disposition": f'attachment; filename="{generated.files[first]}"'}
    if others:
        headers["X-Alternative-Formats"] = "|".join(f"{fmt}:{output_url(generated.files[fmt])}" for fmt in others)
    return Response(generated.data[first], content_type=CONTENT_TYPES[first], headers=headers)


def url_response(generated: Generated, job: SpeechJob | ConvertJob, seconds: float, elapsed: float,
                 headers: dict[str, str]) -> Response:
    files = [{"format": fmt, "filename": generated.files[fmt], "url": output_url(generated.files[fmt], absolute=True),
              "size_bytes": len(generated.data[fmt])} for fmt in generated.formats]
    response = jsonify({
        "success": True,
        "message": f"Generated {seconds:.2f} s of speech in {len(files)} format(s)",
        "output_files": files,
        "generation_seed_used": job.seed,
        "processing_time_seconds": round(elapsed, 3),
        "duration_seconds": round(seconds, 3),
    })
    response.headers.update(headers)
    return response


# -- POST /api/v1/vc ------------------------------------------------------------------------------
VC_MAX_SECONDS = 600.0
VC_WINDOW_SECONDS, VC_OVERLAP_SECONDS = 20.0, 0.5     # long inputs: windows crossfaded over the overlap
VC_FILE_FIELDS = ("input_audio", "target_voice_source")


@bp.post("/vc")
def voice_conversion() -> Response:
    started = time.monotonic()
    mode = load(TtsQuerySchema(), request.args.to_dict())["response_mode"]
    svc = services()
    info = svc.require_engine()
    if not info.supports_voice_conversion:
        raise ApiError(503, f"voice conversion needs the chatterbox engine; this server runs {info.engine}",
                       code="voice_conversion_unavailable")
    form = load(VcFormSchema(), form_fields(VC_FILE_FIELDS))
    upload = request.files.get("input_audio")
    if upload is None or not upload.filename:
        raise ApiError(400, "input_audio: a file is required", param="input_audio", code="missing_file")
    temporary: list[str] = []
    try:
        source = off_hub(store_vc_input, svc, upload.read(), temporary)
        voice = vc_target(svc, info, form["target_voice_source"], temporary)
        job = convert_job(source, voice, form["seed"])
        pcm = synthesize(svc, job, info)
    finally:
        for path in temporary:
            remove_quietly(path)
    generated = off_hub(encode_and_store, output_store(), form["export_formats"], pcm, info.sample_rate)
    headers = {"X-Request-Id": job.request_id, "X-Generation-Seed": str(job.seed)}
    if mode == "url":
        return url_response(generated, job, len(pcm) / 2 / info.sample_rate, time.monotonic() - started, headers)
    return download_response(generated, headers)


def store_vc_input(svc: Services, data: bytes, temporary: list[str]) -> tuple[str, int]:
    samples, _, _ = decode_upload(data, max_bytes=svc.settings.max_upload_bytes, rate=VC_INPUT_RATE,
                                  seconds=(0.5, VC_MAX_SECONDS), param="input_audio")
    path = write_temporary_wav(svc.upload_dir, samples, VC_INPUT_RATE)
    temporary.append(path)
    return path, samples.size


def vc_target(svc: Services, info: EngineInfo, name: str | None, temporary: list[str]) -> VoiceRef:
    """target_voice_source: an uploaded file, or a library voice name (404 when unknown)."""
    upload = request.files.get("target_voice_source")
    if upload is not None and upload.filename:
        path = off_hub(write_temporary_voice, svc.upload_dir, upload.read(), svc.settings.max_upload_bytes)
        temporary.append(path)
        return VoiceRef("target_voice_source", path)
    if not name:
        raise ApiError(400, "target_voice_source: name a library voice or upload a file",
                       param="target_voice_source", code="missing_field")
    return reference_voice(svc, name, info)


def convert_job(source: tuple[str, int], voice: VoiceRef, seed: int | None) -> ConvertJob:
    path, samples = source
    overlap = int(VC_OVERLAP_SECONDS * VC_INPUT_RATE)
    windows = plan_windows(samples, int(VC_WINDOW_SECONDS * VC_INPUT_RATE), overlap)
    seed = seed or speech.random_seed()
    return ConvertJob(request_id=speech.new_request_id(), audio_path=path, windows=windows, overlap=overlap,
                      voice=voice, seed=seed, buffer_size=CHUNK_BUFFER,
                      text_preview=f"voice conversion of {samples / VC_INPUT_RATE:.1f} s")


def remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- voices and health ----------------------------------------------------------------------------
def describe(voice: StoredVoice) -> dict[str, Any]:
    return {**voice.describe(), "reference_audio_filename": f"{voice.name}.wav"}


@bp.get("/voices")
def list_voices() -> Response:
    svc = services()
    info = svc.engine_info()
    return jsonify({"success": True, "voices": [describe(voice) for voice in svc.voices.list()],
                    "default": svc.settings.default_voice or (info.default_voice if info else "default"),
                    "built_in": list(info.voices) if info else [],
                    "cloning_supported": bool(info and info.supports_cloning)})


@bp.post("/voice")
def upload_voice() -> tuple[Response, int]:
    fields = load(VoiceUploadSchema(), form_fields(("voice_file",)))
    upload = request.files.get("voice_file")
    if upload is None or not upload.filename:
        raise ApiError(400, "voice_file: a file is required", param="voice_file", code="missing_file")
    name = fields["name"] or voice_name_from_filename(upload.filename)
    if not name:
        raise ApiError(400, "name: the file name gives no usable voice name; send a name field", param="name",
                       code="invalid_voice_name")
    check_name(name)
    stored = off_hub(services().voices.add, name, upload.read())
    return jsonify({"success": True, "message": f"voice {stored.name!r} added", "voice": describe(stored)}), 201


# -- GET /outputs/<file> --------------------------------------------------------------------------
@outputs_bp.get("/outputs/<path:filename>", merge_slashes=False)
def output_file(filename: str) -> Response:
    folder, _, name = filename.rpartition("/")
    store = output_store() if not folder else output_folder(folder)
    if store is None or store.path_for(name) is None:
        raise ApiError(404, "no such output file", code="not_found")
    filename = name
    extension = filename.rsplit(".", 1)[-1].lower()
    content_type = next((CONTENT_TYPES[fmt] for fmt, ext in FILE_EXTENSIONS.items() if ext == extension),
                        "application/octet-stream")
    response = send_from_directory(store.directory, filename, mimetype=content_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
