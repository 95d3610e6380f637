"""POST /api/v1/concat and /api/v1/concat/mixed: join generated files, uploads, silences and new
speech (segments of type `tts`, synthesized through the pool like /api/v1/tts) into one file.

Each request is planned before any work (synthesis/budget.py): its entries are counted, silences and
the longest automatic pauses timed, every file found and its size counted, every `tts` segment
validated, its text prepared and its worst-case takes counted; only then is anything decoded or
synthesized, and each clip's seconds join the total as soon as they are known."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from typing import Any

import numpy as np
from flask import Blueprint, Response, jsonify, request

from chatterbox_server.api import disk_quota
from chatterbox_server.api.bodies import form_fields, json_object, load, loads_field
from chatterbox_server.api.extended.common import (
    checked_speech,
    output_folder,
    output_store,
    output_url,
    reference_voice,
)
from chatterbox_server.api.extended.concat_schema import ConcatSchema, MixedConcatSchema, output_base
from chatterbox_server.api.extended.tts_schema import ExtendedQuerySchema, ExtendedTtsSchema
from chatterbox_server.audio import concat as joiner
from chatterbox_server.audio.encoders import CONTENT_TYPES, FILE_EXTENSIONS, encode_whole
from chatterbox_server.audio.post import float_to_pcm16
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.security.untrusted_audio import decode_upload
from chatterbox_server.services import Services, services
from chatterbox_server.store import outputs_index
from chatterbox_server.store.outputs import OutputStore
from chatterbox_server.synthesis.budget import Ledger, Limits, check_whole_file, pauses_seconds, prepared_chunks
from chatterbox_server.synthesis.checked import after_synthesis
from chatterbox_server.synthesis.requests import ExtendedTtsRequest
from chatterbox_server.text.header_text import attachment, joined

bp = Blueprint("extended_concat", __name__)
log = logging.getLogger("chatterbox.concat")
DEFAULT_RATE = 24000
MAX_CLIP_SECONDS = 3600.0


@bp.post("/concat")
def concat() -> Response:
    started = time.monotonic()
    query = load(ExtendedQuerySchema(), request.args.to_dict())
    body = json_object()
    svc = services()
    ledger = Ledger(Limits.of(svc.settings))
    if isinstance(body.get("files"), list):     # counted before the schema checks each entry on the hub
        ledger.add_items(len(body["files"]), "files")
    req = load(ConcatSchema(), body)
    disk_quota.require_room()   # the joined file is stored
    rate = sample_rate(svc)
    silences = [joiner.silence_ms(item) for item in req["files"]]
    ledger.add_seconds(sum(ms for ms in silences if ms is not None) / 1000 + pauses(req, silences.count(None)),
                       "files")
    paths = {position: output_path(item, f"files[{position}]") for position, item in enumerate(req["files"])
             if silences[position] is None}
    for position, path in paths.items():
        ledger.add_bytes(file_size(path), f"files[{position}]")
    items: list[joiner.Clip | joiner.Silence] = []
    for position, item in enumerate(req["files"]):
        if silences[position] is not None:
            items.append(joiner.Silence(silences[position]))
        else:
            audio = read_output(svc, paths[position], rate, f"files[{position}]")
            ledger.add_seconds(audio.size / rate, f"files[{position}]")
            items.append(joiner.Clip(audio, item))
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
        body = loads_field(raw, "request_json")
        if not isinstance(body, dict):
            raise ApiError(400, "request_json: must be a JSON object", param="request_json")
        uploads = [f.read() for f in request.files.getlist("uploaded_files")]
    req = load(MixedConcatSchema(), body)
    disk_quota.require_room()   # the joined file is stored: refused before any tts segment is spoken
    svc = services()
    rate = sample_rate(svc)
    expected = 1 + max((s["index"] for s in req["segments"] if s["type"] == "upload"), default=-1)
    if len(uploads) != expected:
        raise ApiError(400, f"uploaded_files: expected {expected} uploaded files, got {len(uploads)}",
                       param="uploaded_files")
    ledger = Ledger(Limits.of(svc.settings))
    plans = [plan_segment(svc, ledger, segment, position, uploads) for position, segment in enumerate(req["segments"])]
    clips = sum(1 for segment in req["segments"] if segment["type"] != "silence")
    ledger.add_seconds(pauses(req, clips), "segments")
    if any(segment["type"] == "tts" for segment in req["segments"]):
        check_whole_file(ledger, svc.pool.speed(), "segments")
        svc.pool.admit()    # once for the whole request: no tts segment is refused halfway
    items = []
    for position, (segment, plan) in enumerate(zip(req["segments"], plans, strict=True)):
        item = segment_item(svc, segment, plan, position, uploads, rate)
        if isinstance(item, joiner.Clip):
            ledger.add_seconds(item.audio.size / rate, f"segments[{position}]")
        items.append(item)
    return finish(svc, items, req, rate, query["response_mode"], started,
                  {"segments": [{k: v for k, v in s.items() if v is not None} for s in req["segments"]],
                   "upload_count": len(uploads)})


def sample_rate(svc: Services) -> int:
    info = svc.engine_info()
    return info.sample_rate if info else DEFAULT_RATE


def pauses(req: dict[str, Any], clips: int) -> float:
    return pauses_seconds(clips, req["pause_duration_ms"], req["pause_variation_ms"])


def output_path(name: str, param: str) -> str:
    """The path of a generated file (optionally in a project folder); 404 when there is none."""
    folder, _, base = name.strip().rpartition("/")
    store = output_store() if not folder else output_folder(folder)
    path = store.path_for(base) if store is not None else None
    if path is None or not guards.owns(outputs_index.owner_of(path)):     # another key's file: not found
        raise ApiError(404, f"{param}: no output file {name!r}; see GET /api/v1/outputs", param=param,
                       code="file_not_found")
    return path


def file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0            # gone since it was found: reading it will say so


def read_output(svc: Services, path: str, rate: int, param: str) -> np.ndarray:
    """A generated file, decoded."""
    try:
        data = off_hub(_read, path)
    except OSError:
        raise ApiError(404, f"{param}: the output file is gone", param=param, code="file_not_found") from None
    return decode(svc, data, rate, param, max(svc.settings.output_max_bytes, svc.settings.max_upload_bytes))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def decode(svc: Services, data: bytes, rate: int, param: str, max_bytes: int) -> np.ndarray:
    samples, _, _ = off_hub(lambda: decode_upload(data, max_bytes=max_bytes, rate=rate, seconds=(0.0, MAX_CLIP_SECONDS),
                                                  param=param))
    return samples.astype(np.float32) / 32768.0


def plan_segment(svc: Services, ledger: Ledger, segment: dict[str, Any], position: int,
                 uploads: list[bytes]) -> Any:
    """What a segment needs, found and counted before any segment is decoded or synthesized: a
    silence's seconds, a file's path and size, an upload's size, a tts segment's request and chunks."""
    param = f"segments[{position}]"
    kind = segment["type"]
    if kind == "silence":
        ledger.add_seconds(joiner.silence_ms(segment["source"]) / 1000, param)
        return None
    if kind == "server_file":
        path = output_path(segment["source"], f"{param}.source")
        ledger.add_bytes(file_size(path), f"{param}.source")
        return path
    if kind == "upload":
        ledger.add_bytes(len(uploads[segment["index"]]), f"uploaded_files[{segment['index']}]")
        return None
    return plan_speech(svc, ledger, segment["tts"], f"{param}.tts")


def plan_speech(svc: Services, ledger: Ledger, body: dict[str, Any],
                param: str) -> tuple[ExtendedTtsRequest, list[str]]:
    try:
        req = load(ExtendedTtsSchema(max_input_chars=svc.settings.max_input_chars), body)
    except ApiError as exc:
        raise ApiError(400, f"{param}.{exc.message}", param=f"{param}.{exc.param}" if exc.param else param) from None
    chunks = off_hub(prepared_chunks, req.text, req.text_options, req.enable_batching,
                     req.smart_batch_short_sentences, ledger.limits, param)
    if not chunks:
        raise ApiError(400, f"{param}.text: nothing is left to speak after text preparation", param=param)
    cand = req.candidates
    ledger.add_text(chunks, cand.per_chunk, cand.max_attempts, cand.bypass_whisper, param)
    return req, chunks


def segment_item(svc: Services, segment: dict[str, Any], plan: Any, position: int, uploads: list[bytes],
                 rate: int) -> joiner.Clip | joiner.Silence:
    param = f"segments[{position}]"
    kind = segment["type"]
    if kind == "silence":
        return joiner.Silence(joiner.silence_ms(segment["source"]))
    if kind == "server_file":
        return joiner.Clip(read_output(svc, plan, rate, f"{param}.source"), segment["source"])
    if kind == "upload":
        audio = decode(svc, uploads[segment["index"]], rate, f"uploaded_files[{segment['index']}]",
                       svc.settings.max_upload_bytes)
        return joiner.Clip(audio, f"upload {segment['index']}")
    req, chunks = plan
    return joiner.Clip(synthesize_segment(svc, req, chunks, rate), f"tts {position}")


def synthesize_segment(svc: Services, req: ExtendedTtsRequest, chunks: list[str], rate: int) -> np.ndarray:
    """A `tts` segment: any /api/v1/tts fields, spoken through the pool (candidates and all)."""
    info = svc.require_engine()
    voice = reference_voice(svc, req.reference_voice, info)
    outcome = checked_speech(svc, info).speak(req, chunks, voice)
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
    base = output_base(custom)
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


