"""The OpenAPI operations of the stores' endpoints (voices, VC inputs, outputs, /v1 voice library);
api/docs/pages.build_spec adds them to /openapi.json."""
from __future__ import annotations

from typing import Any

from apispec import APISpec

LIST_QUERY = ("page", "page_size", "search", "folder", "project")
BULK_QUERY = ("confirm", "folder", "project", "search", "filenames")
INTEGER_QUERY = {"page", "page_size"}
STRING = {"type": "string"}
BINARY = {"type": "string", "format": "binary"}
METADATA_BODY = {"type": "object", "additionalProperties": False, "properties": {
    "name": {"type": "string", "description": "Display name (free text)"}, "description": STRING,
    "tags": {"type": "array", "items": STRING}, "folder_path": STRING,
    "default_parameters": {"type": "object", "description": "POST /api/v1/tts fields used when a request "
                                                            "leaves them out"}}}
VOICE_FORM = {"type": "object", "required": ["voice_file"], "properties": {
    "voice_file": BINARY, "name": {"type": "string", "description": "A voice id, or free text (the display "
                                                                      "name; the id is derived from it)"},
    "description": STRING, "tags": {"type": "string", "description": "Comma-separated"}, "folder_path": STRING,
    "default_parameters": {"type": "string", "description": "JSON object"}, "overwrite": {"type": "boolean"}}}
VC_INPUT_FORM = {"type": "object", "required": ["vc_input_file"], "properties": {
    "vc_input_file": BINARY, "text": STRING, "folder_path": STRING, "project": STRING,
    "overwrite": {"type": "boolean"}}}
VC_JSON = {"type": "object", "required": ["input_audio_source", "target_voice_source"], "additionalProperties": False,
           "properties": {
               "input_audio_source": {"type": "string", "description": "A file of the VC-inputs store "
                                                                       "(folder/name.wav) or an http(s) URL"},
               "target_voice_source": {"type": "string", "description": "A library voice (folder/name) or an "
                                                                        "http(s) URL"},
               "chunk_sec": {"type": "integer", "minimum": 1, "maximum": 300, "default": 60},
               "overlap_sec": {"type": "number", "minimum": 0, "maximum": 5, "default": 0.1},
               "disable_watermark": {"type": "boolean", "default": True,
                                     "description": "Honoured only when CHATTERBOX_ALLOW_DISABLE_WATERMARK is on; "
                                                    "X-Chatterbox-Watermark says what happened"},
               "export_formats": {"type": "array", "items": STRING, "default": ["wav", "mp3"]},
               "seed": {"type": "integer"}}}
NAME_FORM = {"type": "object", "properties": {"voice_name": STRING, "new_name": STRING, "alias": STRING}}


def _operation(summary: str, tag: str, path: str, query: tuple[str, ...] = (), body: dict | None = None,
               mime: str = "application/json") -> dict[str, Any]:
    names = [part[1:-1] for part in path.split("/") if part.startswith("{")]
    parameters = [{"name": name, "in": "path", "required": True, "schema": STRING} for name in names]
    parameters += [{"name": name, "in": "query", "schema": {"type": "integer"} if name in INTEGER_QUERY else STRING}
                   for name in query]
    operation: dict[str, Any] = {"summary": summary, "tags": [tag], "parameters": parameters, "responses": {
        "200": {"description": "OK"}, "400": {"description": "Invalid parameter or path (named in the error)"},
        "404": {"description": "Not found"}}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {mime: {"schema": body}}}
    return operation


def add_store_paths(spec: APISpec) -> None:
    ext, lib = "extended files", "voices"
    operations: dict[str, dict[str, Any]] = {
        "/api/v1/voices": {
            "get": _operation("Voices with paging, search, folder and tag filters", ext, "", (*LIST_QUERY, "tag")),
            "delete": _operation("Delete voices by filenames, folder, tag or search (confirm=true)", ext, "",
                                 (*BULK_QUERY, "tag"))},
        "/api/v1/voice": {"post": _operation("Upload a voice with metadata", ext, "", (), VOICE_FORM,
                                             "multipart/form-data")},
        "/api/v1/voice/{filename}": {"delete": _operation("Delete one voice (confirm=true)", ext,
                                                          "/{filename}", ("confirm",))},
        "/api/v1/voice/{filename}/metadata": {"put": _operation("Change a voice's metadata or folder", ext,
                                                                "/{filename}", (), METADATA_BODY)},
        "/api/v1/voices/folders": {"get": _operation("Folders of the voice library", ext, "")},
        "/api/v1/vc_input": {"post": _operation("Upload audio to convert later", ext, "", (), VC_INPUT_FORM,
                                                "multipart/form-data")},
        "/api/v1/vc_inputs": {
            "get": _operation("VC inputs with paging, search and folder", ext, "", (*LIST_QUERY, "filenames")),
            "delete": _operation("Delete VC inputs (confirm=true)", ext, "", BULK_QUERY)},
        "/api/v1/vc_input/{filename}": {"delete": _operation("Delete one VC input (confirm=true)", ext,
                                                             "/{filename}", ("confirm",))},
        "/api/v1/vc_inputs/folders": {"get": _operation("Folders of the VC inputs", ext, "")},
        "/api/v1/outputs": {
            "get": _operation("Generated files with their generation parameters", ext, "",
                              (*LIST_QUERY, "filenames", "generation_type")),
            "delete": _operation("Delete outputs (confirm=true)", ext, "", (*BULK_QUERY, "generation_type"))},
        "/api/v1/output/{filename}": {"delete": _operation("Delete one output and, with its last file, its "
                                                           "metadata (confirm=true)", ext, "/{filename}",
                                                           ("confirm",))},
        "/api/v1/outputs/folders": {"get": _operation("Folders of the outputs", ext, "")},
        "/v1/voices": {
            "get": _operation("The voice library, its aliases and default", lib, ""),
            "post": _operation("Upload a voice (name or voice_name, voice_file, language)", lib, "", (),
                               {"type": "object", "required": ["voice_file"], "properties": {
                                   "name": STRING, "voice_name": STRING, "voice_file": BINARY, "language": STRING}},
                               "multipart/form-data")},
        "/v1/voices/default": {
            "get": _operation("The default voice", lib, ""),
            "post": _operation("Set the default voice (voice_name)", lib, "", (), NAME_FORM,
                               "application/x-www-form-urlencoded"),
            "delete": _operation("Reset the default voice", lib, "")},
        "/v1/voices/all-names": {"get": _operation("Every voice id and alias", lib, "")},
        "/v1/voices/cleanup": {"post": _operation("Remove half-deleted voices and dangling aliases", lib, "")},
        "/v1/voices/{name}": {
            "get": _operation("One voice (by id or alias)", lib, "/{name}"),
            "put": _operation("Rename a voice (new_name); its aliases follow", lib, "/{name}", (), NAME_FORM,
                              "application/x-www-form-urlencoded"),
            "patch": _operation("Share a voice with every key, or make it private again ({\"shared\": bool})",
                                lib, "/{name}", (), {"type": "object", "properties": {"shared": {"type": "boolean"}},
                                                     "required": ["shared"]}),
            "delete": _operation("Delete a voice", lib, "/{name}")},
        "/v1/voices/{name}/download": {"get": _operation("The voice's audio (WAV)", lib, "/{name}")},
        "/v1/voices/{name}/aliases": {
            "get": _operation("A voice's aliases", lib, "/{name}"),
            "post": _operation("Add an alias (alias)", lib, "/{name}", (), NAME_FORM,
                               "application/x-www-form-urlencoded"),
            "delete": _operation("Remove an alias (?alias=)", lib, "/{name}", ("alias",))},
        "/v1/voices/{name}/aliases/{alias}": {"delete": _operation("Remove an alias", lib, "/{name}/{alias}")},
    }
    for path, methods in operations.items():
        spec.path(path, operations=methods)
