"""OpenAPI entries for dialogue: ours (/v1/audio/dialogue) and ElevenLabs' text-to-dialogue, their
bodies generated from the marshmallow schemas like the rest; docs/api.md, "Dialogue", has the events."""
from __future__ import annotations

from typing import Any

from apispec import APISpec

from chatterbox_server.api.elevenlabs.dialogue import TextToDialogueSchema
from chatterbox_server.synthesis.requests import DialogueRequestSchema

ERROR = {"description": "Invalid request (`param` names the field; a turn's problem names the turn and character)",
         "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
AUDIO_CONTENT: dict[str, Any] = {"audio/*": {"schema": {"type": "string", "format": "binary"}}}
AUDIO: dict[str, Any] = {"description": "Audio", "content": AUDIO_CONTENT}
OURS = (
    "Several voices from one request: `inputs` (a list of turns, each with its `voice` and optional exaggeration, "
    "cfg_weight, temperature, speed) or `input` with inline speakers (`[S1]`, `[SPEAKER0]`, `Speaker 1:` lines, "
    "`[voice:NAME]`) and a `speakers` table. Turns are synthesized together in the step scheduler and played in "
    "order, `gap_ms` apart (CHATTERBOX_DIALOGUE_GAP_MS). A whole file carries its turns in `X-Chatterbox-Segments` "
    "(JSON: turn, voice, text, start, end in seconds); with stream_format=sse a `dialogue.turn` event comes before "
    "each turn's audio and `dialogue.turn.done` after it. Pauses, SSML and expressive tags work in every turn.")
ELEVENLABS = (
    "ElevenLabs' text-to-dialogue (their SDK works with only the base URL changed): `inputs` of {text, voice_id}, "
    "`output_format` in the query (mp3_44100_128 by default). A voice_id that is not one of ours speaks in the "
    "default voice.")


def _post(summary: str, description: str, body: str, responses: dict[str, Any],
          query: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"post": {"summary": summary, "description": description, "tags": ["dialogue"],
                     "parameters": [{"name": q, "in": "query", "required": False, "schema": {"type": "string"}}
                                    for q in query],
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"$ref": f"#/components/schemas/{body}"}}}},
                     "responses": {"200": responses, "400": ERROR,
                                   "429": {"description": "The server is full; see Retry-After"},
                                   "503": {"description": "No model worker is ready"}}}}


def add_paths(spec: APISpec) -> None:
    spec.components.schema("DialogueRequest", schema=DialogueRequestSchema(max_input_chars=4096, max_turns=200))
    spec.components.schema("TextToDialogueRequest", schema=TextToDialogueSchema())
    events = {"description": "Audio, or Server-Sent Events with stream_format=sse",
              "content": {**AUDIO_CONTENT, "text/event-stream": {"schema": {"type": "string"}}}}
    timed = {"description": "audio_base64, alignment, normalized_alignment, voice_segments",
             "content": {"application/json": {"schema": {"type": "object"}}}}
    spec.path("/v1/audio/dialogue", operations=_post("A dialogue: whole file or SSE", OURS, "DialogueRequest", events))
    spec.path("/v1/audio/dialogue/stream", operations=_post("A dialogue as progressive audio", OURS,
                                                            "DialogueRequest", AUDIO))
    for path, summary, answer in (
            ("/v1/text-to-dialogue", "ElevenLabs text-to-dialogue: the whole file", AUDIO),
            ("/v1/text-to-dialogue/stream", "ElevenLabs text-to-dialogue: progressive audio", AUDIO),
            ("/v1/text-to-dialogue/with-timestamps", "ElevenLabs text-to-dialogue with alignment", timed),
            ("/v1/text-to-dialogue/stream/with-timestamps", "ElevenLabs text-to-dialogue: a JSON object a line",
             timed)):
        spec.path(path, operations=_post(summary, ELEVENLABS, "TextToDialogueRequest", answer,
                                         query=("output_format",)))
