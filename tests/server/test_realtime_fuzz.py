"""Protocol fuzz of every realtime socket: random, malformed, out-of-order and oversized messages
get error events (or a defined close code), never a crash; afterwards the server still speaks."""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from realtimekit import RealtimeClient, ws_url

pytestmark = [pytest.mark.server, pytest.mark.slow]

PATHS = ("/v1/audio/speech/realtime", "/v1/text-to-speech/alloy/stream-input?output_format=pcm_16000",
         "/v1/text-to-speech/alloy/multi-stream-input?output_format=ulaw_8000", "/tts/websocket", "/v1/speak")
KEYS = ("type", "context_id", "text", "transcript", "flush", "flush_id", "close_context", "close_socket", "cancel",
        "continue", "session", "voice", "voice_settings", "generation_config", "output_format", "model_id",
        "add_timestamps", "max_buffer_delay_ms", "speed", "response_format", "sample_rate", "binary")
TYPES = ("session.update", "context.create", "input_text.append", "input_text.flush", "input_text.done",
         "context.cancel", "session.close", "Speak", "Flush", "Clear", "Close", "bogus")
ALLOWED_CLOSES = {1000, 1008, 1009, 1013}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=False),
                    st.text(max_size=40), st.sampled_from(TYPES), st.sampled_from(("a", "b", "default")))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)),
                      max_leaves=8)
messages = st.one_of(
    st.dictionaries(st.sampled_from(KEYS), values, max_size=6).map(json.dumps),
    st.text(max_size=80),
    st.binary(max_size=80),
    st.sampled_from(('{"type": "input_text.append", "text": "' + "x" * 70_000 + '"}', "[]", "null", '"str"', "{")),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(PATHS), sequence=st.lists(messages, min_size=1, max_size=8))
def test_random_messages_never_crash_a_socket(hibari_server, path, sequence):
    c = RealtimeClient(ws_url(hibari_server.base, path))
    try:
        for message in sequence:
            if not c.connected:
                break
            try:
                c.send_raw(message)
            except Exception:   # noqa: BLE001 - the server closed the socket: checked below
                break
            c.drain(0.05)
        c.drain(0.3)
        if c.closed is not None:
            assert c.closed[0] in ALLOWED_CLOSES, c.closed
        for event in c.received.events:
            if isinstance(event, dict) and "error" in event and isinstance(event["error"], dict):
                assert event["error"].get("status", 400) < 500, event
    finally:
        c.close()
    assert "Traceback" not in hibari_server.log()[-20_000:]


def test_the_server_still_speaks_after_the_fuzz(hibari_server):
    c = RealtimeClient(ws_url(hibari_server.base, PATHS[0]))
    try:
        c.send("input_text.append", text="Still standing.")
        c.send("input_text.done")
        assert c.until_type("speech.audio.done")["usage"]["audio_seconds"] > 0.3
    finally:
        c.close()
    assert hibari_server.health()["status"] == "ok"
