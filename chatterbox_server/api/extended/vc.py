"""POST /api/v1/vc: voice conversion from a multipart upload, or from JSON that names a
file in the VC-inputs store or an http(s) URL, into a library voice (or a voice at a URL)."""
from __future__ import annotations

import re
import time
from typing import Any

from flask import Blueprint, Response, request
from marshmallow import ValidationError

from chatterbox_server.api import disk_quota
from chatterbox_server.api.bodies import form_fields, json_object, load
from chatterbox_server.api.extended.common import (
    download_response,
    output_store,
    reference_voice,
    synthesize,
    url_response,
)
from chatterbox_server.api.extended.fields import reference_voice_name
from chatterbox_server.api.extended.files import decode_vc_input, vc_inputs
from chatterbox_server.api.extended.vc_schema import (
    PEER_CHUNK_SECONDS,
    PEER_OVERLAP_SECONDS,
    VcJsonSchema,
    VcQuerySchema,
    VcUploadSchema,
)
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards, urlfetch
from chatterbox_server.security.untrusted_audio import MAX_SECONDS, MIN_SECONDS, STORED_RATE, decode_upload
from chatterbox_server.services import Services, services
from chatterbox_server.store import files
from chatterbox_server.synthesis import speech, watermark
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file
from chatterbox_server.synthesis.outputs import encode_and_store
from chatterbox_server.synthesis.voices import write_temporary_wav
from workers.audio import plan_windows
from workers.engines.base import VC_INPUT_RATE, EngineInfo, VoiceRef
from workers.ipc.protocol import ConvertJob

bp = Blueprint("extended_vc", __name__)
VC_FILE_FIELDS = ("input_audio", "target_voice_source")
# multipart uploads keep this server's windows (JSON requests use the peer's, vc_schema.py)
UPLOAD_CHUNK_SECONDS, UPLOAD_OVERLAP_SECONDS = 20.0, 0.5


@bp.post("/vc")
def voice_conversion() -> Response:
    started = time.monotonic()
    mode = load(VcQuerySchema(), request.args.to_dict())["response_mode"]
    svc = services()
    info = svc.require_converter()
    if not info.supports_voice_conversion:
        # a 400, not a 503: nothing will change by retrying; the server was set up without the engine
        raise ApiError(400, f"voice conversion needs the chatterbox engine; this server runs {info.engine} "
                            "(install it with make install-chatterbox, CHATTERBOX_ENGINE=chatterbox)",
                       code="voice_conversion_unavailable")
    disk_quota.require_room()   # the output is stored: refused before any work when the workspace is full
    temporary: list[str] = []
    ledger = Ledger(Limits.of(svc.settings))    # bytes and seconds decoded, each counted before the next step
    try:
        if request.mimetype == "application/json":
            form = load(VcJsonSchema(), json_object())
            form["export_formats"] = tuple(dict.fromkeys(form["export_formats"]))
            source, input_name = json_source(svc, form["input_audio_source"], temporary, ledger)
            voice = json_target(svc, info, form["target_voice_source"], temporary, ledger)
            chunk, overlap = form["chunk_sec"], form["overlap_sec"]
        else:
            form = load(VcUploadSchema(), form_fields(VC_FILE_FIELDS))
            upload = request.files.get("input_audio")
            if upload is None or not upload.filename:
                raise ApiError(400, "input_audio: a file is required (or send JSON with input_audio_source)",
                               param="input_audio", code="missing_file")
            source = off_hub(store_input, svc, upload.read(), "input_audio", temporary, ledger)
            input_name = upload.filename
            voice = upload_target(svc, info, form["target_voice_source"], temporary, ledger)
            chunk = form["chunk_sec"] or UPLOAD_CHUNK_SECONDS
            overlap = form["overlap_sec"] if form["overlap_sec"] is not None else UPLOAD_OVERLAP_SECONDS
            if overlap >= chunk:
                raise ApiError(400, "overlap_sec: must be shorter than chunk_sec", param="overlap_sec")
        disable = bool(form.get("disable_watermark"))       # multipart: not sent means keep it
        allowed = svc.settings.allow_disable_watermark
        job = convert_job(source, voice, form["seed"], chunk, overlap, watermark.keeps_watermark(disable, allowed))
        check_whole_file(ledger, svc.pool.speed(info.group), "input_audio")
        pcm = synthesize(svc, job, info)
    finally:
        for path in temporary:
            files.remove(path)
    parameters = {"input_audio_source": input_name, "target_voice_source": voice_label(voice, form),
                  "chunk_sec": chunk, "overlap_sec": overlap, "disable_watermark": form.get("disable_watermark"),
                  "export_formats": list(form["export_formats"]), "seed": job.seed}
    generated = off_hub(encode_and_store, output_store(), form["export_formats"], pcm, info.sample_rate,
                        "vc", parameters, vc_tag(parameters), [input_name, parameters["target_voice_source"]], "",
                        guards.workspace())
    headers = {"X-Request-Id": job.request_id, "X-Generation-Seed": str(job.seed),
               watermark.HEADER: watermark.watermark_note(info.engine, disable, allowed)}
    if mode == "url":
        return url_response(generated, job, len(pcm) / 2 / info.sample_rate, time.monotonic() - started, headers)
    return download_response(generated, headers)


def voice_label(voice: VoiceRef, form: dict[str, Any]) -> str:
    target = form.get("target_voice_source")
    return target if isinstance(target, str) and target else voice.name


def vc_tag(parameters: dict[str, Any]) -> str:
    """The peer's name parts of a VC output: chunk{n}/overlap{x} when not the defaults, voice{name}."""
    parts = []
    if parameters["chunk_sec"] != PEER_CHUNK_SECONDS:
        parts.append(f"chunk{parameters['chunk_sec']:g}")
    if parameters["overlap_sec"] != PEER_OVERLAP_SECONDS:
        parts.append(f"overlap{parameters['overlap_sec']:g}")
    target = str(parameters["target_voice_source"]).rsplit("/", 1)[-1].split("?", 1)[0].rsplit(".", 1)[0]
    parts.append("voice" + re.sub(r"[^A-Za-z0-9_-]", "", target)[:10])
    return "_".join(parts)


def fetch_policy(svc: Services) -> urlfetch.FetchPolicy:
    settings = svc.settings
    return urlfetch.FetchPolicy(settings.url_fetch_allow_private, settings.url_fetch_max_bytes,
                                settings.url_fetch_timeout)


def store_input(svc: Services, data: bytes, param: str, temporary: list[str], ledger: Ledger) -> tuple[str, int]:
    samples, _, _ = decode_vc_input(data, ledger, param)
    path = write_temporary_wav(svc.upload_dir, samples, VC_INPUT_RATE)
    temporary.append(path)
    return path, samples.size


def json_source(svc: Services, source: str, temporary: list[str], ledger: Ledger) -> tuple[tuple[str, int], str]:
    """input_audio_source: an http(s) URL, or a file of the VC-inputs store ("folder/name.wav")."""
    param = "input_audio_source"
    if urlfetch.is_url(source):
        data = urlfetch.fetch(source, fetch_policy(svc), param)
        return off_hub(store_input, svc, data, param, temporary, ledger), source
    found = vc_inputs().locate(source, param, guards.owner_check())      # another key's input: not found
    if found is None:
        raise ApiError(404, f"{param}: no VC input {source!r}; upload it with POST /api/v1/vc_input or see "
                            "GET /api/v1/vc_inputs", param=param, code="file_not_found")
    relative, path = found
    with open(path, "rb") as f:
        data = f.read()
    return off_hub(store_input, svc, data, param, temporary, ledger), relative


def json_target(svc: Services, info: EngineInfo, target: str, temporary: list[str], ledger: Ledger) -> VoiceRef:
    """target_voice_source: an http(s) URL of reference audio, or a library voice (folders allowed)."""
    param = "target_voice_source"
    if urlfetch.is_url(target):
        data = urlfetch.fetch(target, fetch_policy(svc), param)
        return off_hub(temporary_voice, svc, data, param, temporary, ledger)
    try:
        name = reference_voice_name(target)
    except ValidationError as exc:
        raise ApiError(400, f"{param}: {exc.messages[0]}", param=param) from None
    return named_target(svc, info, name, param)


def upload_target(svc: Services, info: EngineInfo, name: str | None, temporary: list[str],
                  ledger: Ledger) -> VoiceRef:
    """target_voice_source of a multipart request: an uploaded file or a library voice name."""
    upload = request.files.get("target_voice_source")
    if upload is not None and upload.filename:
        return off_hub(temporary_voice, svc, upload.read(), "target_voice_source", temporary, ledger)
    if not name:
        raise ApiError(400, "target_voice_source: name a library voice or upload a file",
                       param="target_voice_source", code="missing_field")
    return named_target(svc, info, name, "target_voice_source")


def named_target(svc: Services, info: EngineInfo, name: str, param: str) -> VoiceRef:
    try:
        return reference_voice(svc, name, info)
    except ApiError as exc:
        raise ApiError(exc.status, exc.message.replace("reference_audio_filename", param), param=param,
                       code=exc.code) from None


def temporary_voice(svc: Services, data: bytes, param: str, temporary: list[str], ledger: Ledger) -> VoiceRef:
    """Reference audio from an upload or a URL, checked like a library voice; removed after the request."""
    ledger.add_decode(len(data), param)
    samples, _, _ = decode_upload(data, max_bytes=svc.settings.max_upload_bytes, rate=STORED_RATE,
                                  seconds=(MIN_SECONDS, MAX_SECONDS), param=param)
    path = write_temporary_wav(svc.upload_dir, samples, STORED_RATE)
    temporary.append(path)
    return VoiceRef(param, path)


def convert_job(source: tuple[str, int], voice: VoiceRef, seed: int | None, chunk_seconds: float,
                overlap_seconds: float, keep_watermark: bool = True) -> ConvertJob:
    path, samples = source
    overlap = int(overlap_seconds * VC_INPUT_RATE)
    windows = plan_windows(samples, int(chunk_seconds * VC_INPUT_RATE), overlap)
    seed = seed or speech.random_seed()
    return ConvertJob(request_id=speech.new_request_id(), audio_path=path, windows=windows, overlap=overlap,
                      voice=voice, seed=seed, buffer_size=10, watermark=keep_watermark,
                      text_preview=f"voice conversion of {samples / VC_INPUT_RATE:.1f} s")
