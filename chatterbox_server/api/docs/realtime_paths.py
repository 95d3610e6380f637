"""The streaming-input sockets in the OpenAPI document: OpenAPI 3.0 cannot describe a WebSocket's
messages, so each socket is a GET (the handshake) whose description says what it speaks and points
to docs/api.md for every event; the options schema is generated from marshmallow like the rest."""
from __future__ import annotations

from typing import Any

from apispec import APISpec

from chatterbox_server.api.realtime.common import SocketOptionsSchema

DOCS = "docs/api.md, \"Realtime sockets\""
HANDSHAKE = {"101": {"description": "Switching Protocols: the socket is open"},
             "400": {"description": "Not a WebSocket handshake"},
             "401": {"description": "Missing or wrong API key (header, or `api_key` in the query)"},
             "429": {"description": "This key already holds CHATTERBOX_MAX_STREAMS_PER_KEY streams"}}
NATIVE = (
    "Our own protocol: text in as an LLM writes it, audio out as it is made. Client events: "
    "`session.update`, `context.create`, `input_text.append`, `input_text.flush`, `input_text.done`, "
    "`context.cancel`, `session.close`. Server events: `session.created`, `session.updated`, `context.created`, "
    "`speech.audio.delta` (base64 `audio`, or a binary frame after it with `binary`), `speech.audio.timestamps`, "
    "`input_text.flushed`, `speech.audio.done` (usage), `context.cancelled`, `error` (scoped to a context when it "
    "names one). The options (SocketOptions) come as query parameters or in `session.update`. A full server "
    "answers an `error` event with `retry_after` and closes with 1013 before any synthesis. See " + DOCS + ".")
VENDORS = {
    "/v1/text-to-speech/{voice_id}/stream-input": (
        "ElevenLabs' single-turn streaming-input socket (their clients work with only the URL changed): "
        "`output_format` pcm_<rate>, ulaw_8000, alaw_8000, mp3_<rate>_<kbps>, opus_48000_<kbps>; `auto_mode`; "
        "`inactivity_timeout`. Audio with character alignment; `isFinal`, then the socket closes."),
    "/v1/text-to-speech/{voice_id}/multi-stream-input": (
        "ElevenLabs' multi-context socket: `context_id`, `flush`, `close_context`, `close_socket`; `contextId` on "
        "every answer."),
    "/tts/websocket": (
        "Cartesia's socket: one generation request per piece of a context (`transcript`, `continue`, "
        "`output_format` raw pcm_s16le/pcm_f32le/pcm_mulaw/pcm_alaw at 8-48 kHz, `add_timestamps`, "
        "`max_buffer_delay_ms`), `cancel`, `flush`; answers `chunk`, `timestamps`, `flush_done`, `done`, `error`."),
    "/v1/speak": (
        "Deepgram Aura's socket: `Speak`, `Flush` (answered `Flushed`), `Clear` (answered `Cleared`), `Close`; "
        "`encoding` linear16, mulaw or alaw and `sample_rate` in the query; audio as binary frames."),
}


def add_realtime_paths(spec: APISpec) -> None:
    spec.components.schema("SocketOptions", schema=SocketOptionsSchema())
    native = {"get": {"summary": "Realtime speech socket (WebSocket)", "tags": ["realtime"],
                      "description": NATIVE, "responses": HANDSHAKE}}
    for path in ("/v1/audio/speech/realtime", "/audio/speech/realtime"):
        spec.path(path, operations=native)
    for path, description in VENDORS.items():
        parameters: list[dict[str, Any]] = []
        if "{voice_id}" in path:
            parameters.append({"name": "voice_id", "in": "path", "required": True, "schema": {"type": "string"},
                               "description": "A voice of ours (library or built-in); any other id speaks with the "
                                              "default voice"})
        spec.path(path, operations={"get": {"summary": "Vendor-compatible socket (WebSocket)",
                                            "tags": ["realtime"], "description": description + " See " + DOCS + ".",
                                            "parameters": parameters, "responses": HANDSHAKE}})
