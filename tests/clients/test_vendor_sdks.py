"""The vendors' own SDKs against our routes, with only the base URL changed.

- elevenlabs 2.78: only `text_to_speech.convert_realtime` speaks a socket (stream-input, sync). It
  forces wss:// from base_url, so the plain-ws URL is set on its private `_ws_base_url`. It sends
  {"text": " ", "try_trigger_generation": true, "voice_settings": null, "generation_config":
  {"chunk_length_schedule": [50]}}, chunks {"text": "...", "try_trigger_generation": true}, then
  {"text": ""}, and reads until the server closes the socket (1000, else ApiError).
- cartesia 4.2: `Cartesia(websocket_base_url="ws://H:P")` (else wss://) -> /tts/websocket with
  Authorization: Bearer and cartesia-version 2026-08-14; contexts: push (continue true), no_more_inputs
  (transcript "", continue false), cancel ({"cancel": true, "context_id"}); events chunk / timestamps /
  done / error / flush_done, each with context_id.
- deepgram-sdk 7.17: DeepgramClient(environment=...production="ws://H:P") -> /v1/speak?encoding=&model=&
  sample_rate=, Authorization: Token; Speak / Flush / Clear / Close; binary audio, Flushed / Cleared
  {sequence_id}, Metadata, Warning.
"""
from __future__ import annotations

import base64
import json
import threading
import time

import pytest
import voiceagentkit as kit

pytestmark = [pytest.mark.clients, pytest.mark.server, pytest.mark.slow]


# ---------------------------------------------------------------- ElevenLabs SDK: stream-input

def test_elevenlabs_sdk_convert_realtime(hibari_server):
    pytest.importorskip("elevenlabs")
    from elevenlabs.client import ElevenLabs

    client = ElevenLabs(api_key=kit.API_KEY, base_url=hibari_server.base)
    client.text_to_speech._ws_base_url = kit.ws_base(hibari_server)   # it would say wss:// otherwise
    chunks = list(client.text_to_speech.convert_realtime(
        voice_id=kit.VOICE, text=iter(kit.tokens(kit.TURN_ONE)), model_id="eleven_flash_v2_5",
        output_format=f"pcm_{kit.SAMPLE_RATE}"))
    # the generator returns only when the server closed the socket with 1000 after the last audio
    pcm = b"".join(chunks)
    kit.assert_speech(pcm, min_seconds=3.0, what="convert_realtime")
    kit.assert_intelligible(pcm, kit.TURN_ONE)


def test_elevenlabs_stream_input_messages_match_the_sdk_types(hibari_server):
    """The raw stream-input exchange, each server message parsed with the SDK's own models."""
    pytest.importorskip("elevenlabs")
    from elevenlabs import AudioOutput, FinalOutput
    from websockets.sync.client import connect

    url = (f"{kit.ws_base(hibari_server)}/v1/text-to-speech/{kit.VOICE}/stream-input"
           f"?model_id=eleven_flash_v2_5&output_format=pcm_{kit.SAMPLE_RATE}&sync_alignment=true")
    audio, alignments, final = b"", [], False
    with connect(url, additional_headers={"xi-api-key": kit.API_KEY}, open_timeout=20) as ws:
        ws.send(json.dumps({"text": " ", "voice_settings": {"stability": 0.5, "similarity_boost": 0.8},
                            "generation_config": {"chunk_length_schedule": [120, 160, 250, 290]}}))
        for word in kit.TURN_TWO.split():
            ws.send(json.dumps({"text": word + " "}))          # each piece ends in a space, as documented
        ws.send(json.dumps({"text": ""}))
        while True:
            try:
                raw = ws.recv(timeout=30)
            except Exception as closed:            # ConnectionClosedOK after the final message
                from websockets.exceptions import ConnectionClosedOK

                assert isinstance(closed, ConnectionClosedOK), closed
                break
            assert isinstance(raw, str), "ElevenLabs messages are text frames"
            msg = json.loads(raw)
            if msg.get("audio"):
                out = AudioOutput.model_validate(msg)
                audio += base64.b64decode(out.audio)
                if out.alignment or out.normalized_alignment:
                    alignments.append(msg)
            elif msg.get("isFinal"):
                FinalOutput.model_validate(msg)
                final = True
    assert final, "no isFinal before the close"
    kit.assert_speech(audio, what="stream-input")
    # both alignment and normalizedAlignment, parallel lists, times relative to each message's audio
    # (what pipecat assumes and the SDK documents)
    assert alignments, "no alignment in any audio message"
    for msg in alignments:
        for key in ("alignment", "normalizedAlignment"):
            a = msg[key]
            assert len(a["chars"]) == len(a["charStartTimesMs"]) == len(a["charDurationsMs"]) > 0, a
            assert all(isinstance(t, int) and t >= 0 for t in a["charStartTimesMs"] + a["charDurationsMs"]), a
    text = "".join("".join(m["alignment"]["chars"]) for m in alignments)
    assert "bicycle" in text.lower(), text


# ---------------------------------------------------------------- Cartesia SDK

def cartesia_client(server):
    pytest.importorskip("cartesia")
    from cartesia import Cartesia

    return Cartesia(api_key=kit.API_KEY, base_url=server.base, websocket_base_url=kit.ws_base(server))


FORMAT = {"container": "raw", "encoding": "pcm_s16le", "sample_rate": kit.SAMPLE_RATE}


def test_cartesia_sdk_context_with_timestamps(hibari_server):
    client = cartesia_client(hibari_server)
    with client.tts.websocket_connect() as connection:
        ctx = connection.context(model_id="sonic-3", voice={"mode": "id", "id": kit.VOICE}, output_format=FORMAT,
                                 add_timestamps=True, language="en")
        for sentence in kit.TURN_ONE.split(". "):
            ctx.push(sentence.rstrip(".") + ". ")
        ctx.no_more_inputs()
        events = list(ctx.receive())
    kinds = [e.type for e in events]
    assert kinds[-1] == "done", kinds
    assert "error" not in kinds, [e for e in events if e.type == "error"]
    assert all(e.context_id == ctx._context_id for e in events), kinds
    pcm = b"".join(e.audio or b"" for e in events if e.type == "chunk")
    kit.assert_speech(pcm, min_seconds=3.0, what="cartesia context")
    kit.assert_intelligible(pcm, kit.TURN_ONE)
    # words with start/end in seconds, cumulative in the context
    stamps = [e.word_timestamps for e in events if e.type == "timestamps" and e.word_timestamps]
    assert stamps, "no word_timestamps events"
    words = [w for s in stamps for w in s.words]
    starts = [t for s in stamps for t in s.start]
    ends = [t for s in stamps for t in s.end]
    assert len(words) == len(starts) == len(ends) and "Elephants" in " ".join(words), words
    assert starts == sorted(starts) and all(e >= s for s, e in zip(starts, ends, strict=True)), (starts, ends)
    assert ends[-1] <= len(pcm) / 2 / kit.SAMPLE_RATE + 0.5


def test_cartesia_sdk_cancel_then_new_context(hibari_server):
    client = cartesia_client(hibari_server)
    with client.tts.websocket_connect() as connection:
        old = connection.context(model_id="sonic-3", voice={"mode": "id", "id": kit.VOICE}, output_format=FORMAT)
        old.push(kit.TURN_ONE)
        old.no_more_inputs()
        first = next(e for e in old.receive() if e.type == "chunk")       # speaking: then the barge-in
        assert first.audio
        old.cancel()
        cancelled_at = time.monotonic()
        new = connection.context(model_id="sonic-3", voice={"mode": "id", "id": kit.VOICE}, output_format=FORMAT)
        new.push(kit.TURN_TWO)
        new.no_more_inputs()
        late_old, events = [], []
        # read the socket directly: old-context events are counted, not dropped by the helper
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            event = connection.parse_event(connection.recv_bytes(timeout=30))
            if event.context_id == old._context_id:
                late_old.append((time.monotonic() - cancelled_at, event.type))
            elif event.context_id == new._context_id:
                events.append(event)
                if event.type in ("done", "error"):
                    break
    assert [e.type for e in events][-1] == "done", [e.type for e in events]
    # cancel honoured: the old context's audio stops within a second (no ack exists in this protocol)
    assert not [t for t, kind in late_old if kind == "chunk" and t > 1.0], late_old
    pcm = b"".join(e.audio or b"" for e in events if e.type == "chunk")
    kit.assert_speech(pcm, what="context after the cancel")
    kit.assert_not_turn_one(pcm)


# ---------------------------------------------------------------- Deepgram SDK

def deepgram_client(server):
    pytest.importorskip("deepgram")
    from deepgram import DeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    ws = kit.ws_base(server)
    environment = DeepgramClientEnvironment(base=server.base, production=ws, agent=ws, agent_rest=server.base)
    return DeepgramClient(api_key=kit.API_KEY, environment=environment)


def read_until(connection, kind: str, timeout: float = 60.0) -> tuple[bytes, list]:
    """Binary audio and the JSON messages up to and including the first message of type `kind`."""
    audio, messages = b"", []
    box: dict = {}

    def reader():
        nonlocal audio
        try:
            while True:
                msg = connection.recv()
                if isinstance(msg, bytes):
                    audio += msg
                    continue
                messages.append(msg)
                if getattr(msg, "type", None) == kind or (isinstance(msg, dict) and msg.get("type") == kind):
                    return
        except Exception as e:          # noqa: BLE001 - reported below
            box["error"] = e

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"no {kind} in {timeout} s; got {messages}"
    assert "error" not in box, box
    return audio, messages


def test_deepgram_sdk_speak_flush_clear(hibari_server):
    from deepgram.speak.v1.types import SpeakV1Text

    client = deepgram_client(hibari_server)
    with client.speak.v1.connect(model=kit.VOICE, encoding="linear16", sample_rate=kit.SAMPLE_RATE) as connection:
        for sentence in kit.TURN_TWO.split(". "):
            connection.send_text(SpeakV1Text(text=sentence + " "))
        connection.send_flush()
        audio, messages = read_until(connection, "Flushed")
        kit.assert_speech(audio, what="speak + flush")
        kit.assert_intelligible(audio, kit.TURN_TWO)
        flushed = messages[-1]
        assert isinstance(flushed.sequence_id, int), flushed

        # barge-in: a long text, its first audio, Clear; Cleared comes and no old audio after it
        connection.send_text(SpeakV1Text(text=kit.TURN_ONE))
        connection.send_flush()
        first = connection.recv()
        while not isinstance(first, bytes):
            first = connection.recv()
        connection.send_clear()
        _, messages = read_until(connection, "Cleared", timeout=10)
        connection.send_text(SpeakV1Text(text=kit.TURN_TWO))
        connection.send_flush()
        audio, messages = read_until(connection, "Flushed")
        if not audio:       # a Flushed for the cleared flush may come first; turn two's follows
            audio, messages = read_until(connection, "Flushed")
        kit.assert_speech(audio, what="speech after Clear")
        kit.assert_not_turn_one(audio)
        assert len(audio) / 2 / kit.SAMPLE_RATE < 8, "turn two is far longer than its text: old audio leaked"
        connection.send_close()
