"""The Extended API family under /api/v1, and the generated files under /outputs.

A request synthesizes the whole clip, encodes every requested format, stores them in
DATA_DIR/outputs and answers with the first one as a download (`response_mode=stream`) or with
their URLs (`response_mode=url`). Errors use the Extended envelope (see api/errors.error_response).
"""
from __future__ import annotations

import logging
import os

from flask import Blueprint, Response, copy_current_request_context, jsonify, request, send_from_directory, url_for

from chatterbox_server.audio.encoders import CONTENT_TYPES, FILE_EXTENSIONS
from chatterbox_server.errors import ApiError
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store import outputs_index
from chatterbox_server.store.outputs import OutputStore
from chatterbox_server.synthesis import speech
from chatterbox_server.synthesis.checked import CheckedSpeech
from chatterbox_server.synthesis.outputs import Generated
from chatterbox_server.text.header_text import attachment
from workers.engines.base import EngineInfo, VoiceRef
from workers.ipc.protocol import ConvertJob, SpeechJob

log = logging.getLogger("chatterbox.extended")
outputs_bp = Blueprint("outputs", __name__)


def output_store() -> OutputStore:
    return services().outputs


def output_folder(folder: str) -> OutputStore | None:
    """A project sub-folder of the outputs directory that exists, or None."""
    return output_store().existing_subfolder(folder)


# -- POST /api/v1/tts: chatterbox_server/api/extended/tts.py ---------------------------------------
def reference_voice(svc: Services, name: str | None, info: EngineInfo) -> VoiceRef:
    """A library voice for reference_audio_filename: 404 when there is none by that name (or the
    caller does not see it: another workspace's private voice)."""
    param = "reference_audio_filename"
    owns = guards.owner_check()
    if name is not None and name not in svc.voices.available(info, owns) and svc.voices.find(name, owns) is None:
        raise ApiError(404, f"{param}: no reference audio {name!r} in the voice library; see GET /api/v1/voices "
                            "or upload one with POST /api/v1/voice", param=param, code="reference_not_found")
    try:
        return svc.voices.resolve(name, info, param=param, owns=owns)
    except ApiError as exc:
        raise ApiError(exc.status, f"{param}: {exc.message}", param=param, code=exc.code) from None


def synthesize(svc: Services, job: SpeechJob | ConvertJob, info: EngineInfo) -> bytes:
    return speech.collect_pcm(speech.SpeechRun.start(svc.pool, job, info, request.environ.get("gunicorn.socket"),
                                                     svc.progress))


def checked_speech(svc: Services, info: EngineInfo) -> CheckedSpeech:
    """Checked speech for this request: its client's connection watched, its takes' greenlets in its context."""
    return CheckedSpeech(svc.pool, svc.progress, info, svc.settings.whisper_wait_seconds,
                         svc.settings.allow_disable_watermark, request.environ.get("gunicorn.socket"),
                         copy_current_request_context)


def output_url(filename: str, absolute: bool = False) -> str:
    """X-Alternative-Formats needs relative URLs (its clients split on ':'); JSON gets absolute ones so a
    client can download them as they are (the seed's "before" example does)."""
    return url_for("outputs.output_file", filename=filename, _external=absolute)


def download_response(generated: Generated, headers: dict[str, str]) -> Response:
    first, *others = generated.formats
    headers = {**headers, "Content-Disposition": attachment(os.path.basename(generated.files[first]))}
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


# -- GET /outputs/<file> --------------------------------------------------------------------------
@outputs_bp.get("/outputs/<path:filename>", merge_slashes=False)
def output_file(filename: str) -> Response:
    store = output_store()
    path = store.locate(filename)               # a regular file in the store or its folders, no links
    if path is None or not guards.owns(outputs_index.owner_of(path)):     # another key's: not found either
        raise ApiError(404, "no such output file", code="not_found")
    extension = filename.rsplit(".", 1)[-1].lower()
    content_type = next((CONTENT_TYPES[fmt] for fmt, ext in FILE_EXTENSIONS.items() if ext == extension),
                        "application/octet-stream")
    response = send_from_directory(store.directory, filename, mimetype=content_type)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
