"""The Extended API's file stores: generated outputs and VC inputs, listed with paging,
search and folders, and deleted one by one or in bulk."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for

from chatterbox_server.api import disk_quota
from chatterbox_server.api.bodies import form_fields
from chatterbox_server.api.common import deletion, list_query, paged, require_confirm, require_criteria, upload_flag
from chatterbox_server.api.extended.common import output_store
from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.security import guards
from chatterbox_server.security.untrusted_audio import decode_upload
from chatterbox_server.services import services
from chatterbox_server.store import outputs_index, paging, paths
from chatterbox_server.store.vc_inputs import VcInputStore, safe_filename
from chatterbox_server.store.voices_meta import clean_text
from chatterbox_server.synthesis.budget import Ledger, Limits
from workers.engines.base import VC_INPUT_RATE

bp = Blueprint("extended_files", __name__)
VC_MIN_SECONDS = 0.5                # the longest is a setting, CHATTERBOX_MAX_VC_SECONDS
TEXT_MAX = 10_000


def vc_inputs() -> VcInputStore:
    return services().vc_inputs


def decode_vc_input(data: bytes, ledger: Ledger, param: str) -> tuple[Any, str, float]:
    """Untrusted audio for conversion -> (PCM at the VC input rate, sniffed format, seconds), counted in
    the request's ledger: its bytes before it is decoded, its seconds as decoded (the decoder stops just
    past CHATTERBOX_MAX_VC_SECONDS, so a longer file costs no more than that)."""
    ledger.add_decode(len(data), param)
    samples, fmt, seconds = decode_upload(data, max_bytes=ledger.limits.upload_bytes, rate=VC_INPUT_RATE,
                                          seconds=(VC_MIN_SECONDS, ledger.convert_room()), param=param,
                                          too_long=lambda decoded: ledger.add_convert_seconds(decoded, param))
    ledger.add_convert_seconds(seconds, param)
    return samples, fmt, seconds


# -- outputs --------------------------------------------------------------------------------------
def own_outputs() -> list[dict[str, Any]]:
    """The outputs of the caller's workspace (every one for an admin key or without keys)."""
    return [entry for entry in outputs_index.scan(output_store()) if guards.owns(entry["_owner"])]


def output_entries(query: dict[str, Any]) -> list[dict[str, Any]]:
    entries = own_outputs()
    wanted = set(paging.name_list(query["filenames"]))
    for name in wanted:
        paths.clean_relative(name, "filenames")
    return [entry for entry in entries
            if (not wanted or entry["filename"] in wanted or entry["path"] in wanted)
            and (not query["generation_type"] or entry["generation_type"] == query["generation_type"])
            and paging.in_folder(entry["folder_path"] or "", query["folder"])
            and paging.matches(query["search"], (entry["filename"], entry["folder_path"]))]


@bp.get("/outputs")
def list_outputs() -> Response:
    query = list_query()
    entries = [{**outputs_index.public(entry),
                "url": url_for("outputs.output_file", filename=entry["path"], _external=True)}
               for entry in output_entries(query)]
    return jsonify(paged(entries, query, "files"))


@bp.get("/outputs/folders")
def output_folders() -> Response:
    store = output_store()
    names = [entry["path"] for entry in own_outputs()]
    tree = paths.folder_tree(store.directory, names, only_leading_to=not guards.sees_all())
    return jsonify({"success": True, **tree})


def _locate_output(filename: str) -> str:
    """A folder-qualified output path, or a bare file name found in exactly one folder."""
    relative = paths.clean_relative(filename, "filename", allow_empty=False)
    store = output_store()
    path = store.locate(relative)
    if path is not None or "/" in relative:
        return relative if path is None or guards.owns(outputs_index.owner_of(path)) else ""
    matches = [entry["path"] for entry in own_outputs() if entry["filename"] == relative]
    return matches[0] if len(matches) == 1 else ""


@bp.delete("/output/<path:filename>")
def delete_output(filename: str) -> Response:
    query = list_query()
    require_confirm(query, "an output")
    located = _locate_output(filename)          # "" for another key's file: not found, like a missing one
    deleted = outputs_index.delete(output_store(), located) if located else []
    if not deleted:
        raise ApiError(404, f"output {filename!r} not found", param="filename", code="not_found")
    return jsonify(deletion(deleted, "output file(s)"))


@bp.delete("/outputs")
def delete_outputs() -> Response:
    query = list_query()
    require_confirm(query, "outputs")
    require_criteria(query, ("filenames", "folder", "generation_type", "search"), "outputs")
    store = output_store()
    deleted: list[str] = []
    for entry in output_entries(query):
        deleted += outputs_index.delete(store, entry["path"])
    return jsonify(deletion(deleted, "output file(s)"))


# -- VC inputs ------------------------------------------------------------------------------------
@bp.post("/vc_input")
def upload_vc_input() -> tuple[Response, int]:
    form = form_fields(("vc_input_file",))
    unknown = sorted(set(form) - {"text", "folder_path", "project", "overwrite"})
    if unknown:
        raise ApiError(400, f"{unknown[0]}: unknown field", param=unknown[0], code="invalid_value")
    upload = request.files.get("vc_input_file")
    if upload is None or not upload.filename:
        raise ApiError(400, "vc_input_file: a file is required", param="vc_input_file", code="missing_file")
    folder = paths.clean_relative(form.get("folder_path") or form.get("project"), "folder_path")
    text = clean_text(form.get("text"), "text", TEXT_MAX)
    overwrite = upload_flag(form.get("overwrite"), "overwrite")
    data = upload.read()
    disk_quota.require_room(len(data))          # stored as uploaded: its size is what it adds
    ledger = Ledger(Limits.of(services().settings))     # stored to be converted: held to the same limits
    samples, fmt, seconds = off_hub(decode_vc_input, data, ledger, "vc_input_file")
    name = safe_filename(upload.filename, fmt)
    meta = {"text": text, "format": fmt, "duration_seconds": round(seconds, 3),
            "sample_rate": VC_INPUT_RATE, "original_filename": upload.filename}
    entry = off_hub(vc_inputs().add, data, name, folder, meta, overwrite, guards.workspace(), guards.owner_check())
    return jsonify({"success": True, "message": f"VC input {entry['path']!r} uploaded", "metadata": entry,
                    "filename": entry["filename"], "path": entry["path"]}), 201


def vc_input_entries(query: dict[str, Any]) -> list[dict[str, Any]]:
    wanted = set(paging.name_list(query["filenames"]))
    for name in wanted:
        paths.clean_relative(name, "filenames")
    return [entry for entry in vc_inputs().scan(guards.owner_check())
            if (not wanted or entry["filename"] in wanted or entry["path"] in wanted)
            and paging.in_folder(entry["folder_path"] or "", query["folder"])
            and paging.matches(query["search"], (entry["filename"], entry["folder_path"], entry["text"]))]


@bp.get("/vc_inputs")
def list_vc_inputs() -> Response:
    query = list_query()
    return jsonify(paged(vc_input_entries(query), query, "files"))


@bp.get("/vc_inputs/folders")
def vc_input_folders() -> Response:
    store = vc_inputs()
    names = store.names(guards.owner_check())
    tree = paths.folder_tree(store.directory, names, only_leading_to=not guards.sees_all())
    return jsonify({"success": True, **tree})


@bp.delete("/vc_input/<path:filename>")
def delete_vc_input(filename: str) -> Response:
    query = list_query()
    require_confirm(query, "a VC input")
    deleted = vc_inputs().delete(filename, owns=guards.owner_check())
    if not deleted:
        raise ApiError(404, f"VC input {filename!r} not found", param="filename", code="not_found")
    return jsonify(deletion(deleted, "VC input(s)"))


@bp.delete("/vc_inputs")
def delete_vc_inputs() -> Response:
    query = list_query()
    require_confirm(query, "VC inputs")
    require_criteria(query, ("filenames", "folder", "search"), "VC inputs")
    store = vc_inputs()
    deleted: list[str] = []
    for entry in vc_input_entries(query):
        deleted += store.delete(entry["path"], owns=guards.owner_check())
    return jsonify(deletion(deleted, "VC input(s)"))
