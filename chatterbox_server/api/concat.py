"""POST /api/v1/concat and /api/v1/concat/mixed: join generated files, uploads, silences and new
speech (segments of type `tts`, synthesized through the pool like /api/v1/tts) into one file."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from chatterbox_server.api.concat_schema import ConcatSchema, MixedConcatSchema
from chatterbox_server.api.extended_tts import after_synthesis, make_speech
from chatterbox_server.api.tts_schema import ExtendedQuerySchema, ExtendedTtsSchema
from chatterbox_server.api_extended import output_folder, output_store, output_url, reference_voice
from chatterbox_server.audio import concat as joiner
from chatterbox_server.audio.post import float_to_pcm16
from chatterbox_server.bodies import form_fields, json_object, load
from chatterbox_server.encoders import CONTENT_TYPES, FILE_EXTENSIONS, encode_whole
from chatterbox_server.errors import ApiError
from chatterbox_server.header_text import attachment, joined
from chatterbox_server.hub import off_hub
from chatterbox_server.outputs import OutputStore
from chatterbox_server.security import guards
from chatterbox_server.services import Services, services
from chatterbox_server.store import outputs_index
from chatterbox_server.text.prep import plan_chunks
from chatterbox_server.voices import decode_upload

bp = Blueprint("extended_concat", __name__)
log = logging.getLogger("chatterbox.concat")
DEFAULT_RATE = 24000
MAX_CLIP_SECONDS = 3600.0


@bp.post("/concat")
def concat() -> Response:
    started = time.monotonic()
    query = load(ExtendedQuerySchema(), request.args.to_dict())
    body = json_object()
    req = load(ConcatSchema(), body)
    svc = services()
    rate = sample_rate(svc)
    items: list[joiner.Clip | joiner.Silence] = []
    for position, item in enumerate(req["files"]):
        ms = joiner.silence_ms(item)
        if ms is not None:
            items.append(joiner.Silence(ms))
        else:
            items.append(joiner.Clip(read_output(svc, item, rate, f"files[{position}]"), item))
    mode = query["response_mode"] if "response_mode" in request.args else (req["response_mode"] or "stream")
    return finish(svc, items, req, rate, mode, started, {"source_files": req["files"]})


@bp.post("/concat/mixed")
def concat_mixed() -> Response:
    started = time.monotonic()
    query = load(ExtendedQuerySchema(), request.args.to_dict())
    if request.mimetype == "application/json":
        body, uploads = json_object(), []
    else:
        fields = form_fields(("uploaded_files",), accept_urlencoded=True)
        raw = fields.get("request_json")
        if not isinstance(raw, str):
            raise ApiError(400, "request_json: a form field with the request as JSON is required", param="request_json")
        try:
            body = json.loads(raw)
        except ValueError:
            raise ApiError(400, "request_json: not valid JSON", param="request_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "request_json: must be a JSON object", param="request_json")
        uploads = [f.read() for f in request.files.getlist("uploaded_files")]
    req = load(MixedConcatSchema(), body)
    svc = services()
    rate = sample_rate(svc)
    expected = 1 + max((s["index"] for s in req["segments"] if s["type"] == "upload"), default=-1)
    if len(uploads) != expected:
        raise ApiError(400, f"uploaded_files: expected {expected} uploaded files, got {len(uploads)}",
                       param="uploaded_files")
    if any(segment["type"] == "tts" for segment in req["segments"]):
        svc.pool.admit()    # once for the whole request: no tts segment is refused halfway (make_speech)
    items = [segment_item(svc, segment, position, uploads, rate) for position, segment in enumerate(req["segments"])]
    return finish(svc, items, req, rate, query["response_mode"], started,
                  {"segments": [{k: v for k, v in s.items() if v is not None} for s in req["segments"]],
                   "upload_count": len(uploads)})


def sample_rate(svc: Services) -> int:
    info = svc.engine_info()
    return info.sample_rate if info else DEFAULT_RATE


def read_output(svc: Services, name: str, rate: int, param: str) -> np.ndarray:
    """A generated file (optionally in a project folder), decoded; 404 when there is none."""
    folder, _, base = name.strip().rpartition("/")
    store = output_store() if not folder else output_folder(folder)
    path = store.path_for(base) if store is not None else None
    if path is None or not guards.owns(outputs_index.owner_of(path)):     # another key's file: not found
        raise ApiError(404, f"{param}: no output file {name!r}; see GET /api/v1/outputs", param=param,
                       code="file_not_found")
    with open(path, "rb") as f:
        data = f.read()
    return decode(svc, data, rate, param, max(svc.settings.output_max_bytes, svc.settings.max_upload_bytes))


def decode(svc: Services, data: bytes, rate: int, param: str, max_bytes: int) -> np.ndarray:
    samples, _, _ = off_hub(lambda: decode_upload(data, max_bytes=max_bytes, rate=rate, seconds=(0.0, MAX_CLIP_SECONDS),
                                                  param=param))
    return samples.astype(np.float32) / 32768.0


def segment_item(svc: Services, segment: dict[str, Any], position: int, uploads: list[bytes],
                 rate: int) -> joiner.Clip | joiner.Silence:
    param = f"segments[{position}]"
    kind = segment["type"]
    if kind == "silence":
        return joiner.Silence(joiner.silence_ms(segment["source"]))
    if kind == "server_file":
        return joiner.Clip(read_output(svc, segment["source"], rate, f"{param}.source"), segment["source"])
    if kind == "upload":
        audio = decode(svc, uploads[segment["index"]], rate, f"uploaded_files[{segment['index']}]",
                       svc.settings.max_upload_bytes)
        return joiner.Clip(audio, f"upload {segment['index']}")
    return joiner.Clip(synthesize_segment(svc, segment["tts"], rate, f"{param}.tts"), f"tts {position}")


def synthesize_segment(svc: Services, body: dict[str, Any], rate: int, param: str) -> np.ndarray:
    """A `tts` segment: any /api/v1/tts fields, spoken through the pool (candidates and all)."""
    try:
        req = load(ExtendedTtsSchema(max_input_chars=svc.settings.max_input_chars), body)
    except ApiError as exc:
        raise ApiError(400, f"{param}.{exc.message}", param=f"{param}.{exc.param}" if exc.param else param) from None
    info = svc.require_engine()
    chunks = plan_chunks(req.text, req.text_options, req.enable_batching, req.smart_batch_short_sentences)
    if not chunks:
        raise ApiError(400, f"{param}.text: nothing is left to speak after text preparation", param=param)
    voice = reference_voice(svc, req.reference_voice, info)
    outcome = make_speech(svc, info, req, chunks, voice)
    return off_hub(after_synthesis, np.frombuffer(outcome.pcm, "<i2").astype(np.float32) / 32768.0, rate, req)


def request_seed(req: dict[str, Any]) -> int:
    """The pause generator's seed: the same request always draws the same pauses."""
    digest = hashlib.blake2b(json.dumps(req, sort_keys=True, default=str).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big")


def finish(svc: Services, items: list, req: dict[str, Any], rate: int, mode: str, started: float,
           parameters: dict[str, Any]) -> Response:
    options = joiner.JoinOptions(req["normalize_levels"], req["crossfade_ms"], req["pause_duration_ms"],
                                 req["pause_variation_ms"], req["trim"], req["trim_threshold_ms"], request_seed(req))
    audio, info = off_hub(joiner.join, items, rate, options)
    formats = list(dict.fromkeys(req["export_formats"]))
    pcm = float_to_pcm16(audio)
    data = {fmt: off_hub(encode_whole, fmt, pcm, rate) for fmt in formats}
    store = output_store()
    names = store_files(store, data, req["output_filename"])
    owner = guards.workspace()
    try:        # the metadata says whose file it is: without it only an admin key would see it
        off_hub(lambda: outputs_index.record_generation(
            store, names, "concat", parameters, duration_seconds=info["total_duration_seconds"],
            sample_rate=rate, owner=owner))
    except OSError:
        log.exception("writing the metadata of %s failed", names)
    elapsed = round(time.monotonic() - started, 3)
    clips = sum(1 for item in items if isinstance(item, joiner.Clip))
    if mode == "stream" and len(formats) == 1:
        fmt = formats[0]
        return Response(data[fmt], content_type=CONTENT_TYPES[fmt],
                        headers={"Content-Disposition": attachment(names[fmt]),
                                 "X-Output-Files": joined(list(names.values()))})
    return jsonify({"success": True, "message": "Audio concatenation completed successfully",
                    "output_files": [names[fmt] for fmt in formats],
                    "output_urls": [output_url(names[fmt], absolute=True) for fmt in formats],
                    "total_duration_seconds": info["total_duration_seconds"], "file_count": clips,
                    "processing_time_seconds": elapsed,
                    "metadata": {**info, **parameters, "sample_rate": rate,
                                 "normalize_levels": options.normalize_levels, "crossfade_ms": options.crossfade_ms,
                                 "pause_duration_ms": options.pause_duration_ms,
                                 "pause_variation_ms": options.pause_variation_ms, "trim": options.trim,
                                 "trim_threshold_ms": options.trim_threshold_ms}})


def store_files(store: OutputStore, data: dict[str, bytes], custom: str | None) -> dict[str, str]:
    if custom is None:
        written = off_hub(store.store, {FILE_EXTENSIONS[fmt]: blob for fmt, blob in data.items()}, None, "concat")
        return {fmt: written[FILE_EXTENSIONS[fmt]] for fmt in data}
    base = custom.rsplit(".", 1)[0] if custom.rsplit(".", 1)[-1].lower() in FILE_EXTENSIONS.values() else custom
    names: dict[str, str] = {}
    try:
        for fmt, blob in data.items():
            names[fmt] = off_hub(store.write_atomic, f"{base}.{FILE_EXTENSIONS[fmt]}", blob)
    except FileExistsError:
        for name in names.values():
            os.unlink(os.path.join(store.directory, name))
        raise ApiError(409, f"output_filename: {base!r} already exists in the outputs directory; choose another",
                       param="output_filename", code="file_exists") from None
    return names


