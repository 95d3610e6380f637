"""Tests for chatterbox_server.audio.sse: the framing of the speech stream's Server-Sent Events."""
from __future__ import annotations

import base64
import json
import os

import pytest

from chatterbox_server.audio import sse


def parse(frame: bytes) -> dict:
    """Check that `frame` is exactly one event (one compact `data:` line, a blank line) and decode it."""
    assert frame.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    body = frame[len(b"data: "):-2]
    assert b"\n" not in body and b"\r" not in body
    payload = json.loads(body)
    assert body == json.dumps(payload, separators=(",", ":")).encode("utf-8"), "not compact JSON"
    return payload


def test_event_is_one_data_line_and_a_blank_line():
    frame = sse.event({"type": "x", "text": "line1\nline2", "n": 1})
    assert frame.count(b"\n") == 2
    assert parse(frame) == {"type": "x", "text": "line1\nline2", "n": 1}
    assert b" " not in frame[len(b"data: "):], "compact separators expected"


def test_event_keeps_unicode():
    assert parse(sse.event({"text": "héllo ✓"}))["text"] == "héllo ✓"


def test_audio_info():
    assert parse(sse.audio_info(24000)) == {"type": "speech.audio.info", "sample_rate": 24000, "channels": 1,
                                            "bits_per_sample": 16}


def test_audio_info_names_an_encoding_other_than_pcm16():
    assert parse(sse.audio_info(8000, **sse.delta_encoding("mulaw"))) == {
        "type": "speech.audio.info", "sample_rate": 8000, "channels": 1, "bits_per_sample": 8,
        "encoding": "pcm_mulaw"}
    assert parse(sse.audio_info(16000, **sse.delta_encoding("alaw")))["encoding"] == "pcm_alaw"
    assert parse(sse.audio_info(48000, **sse.delta_encoding("opus")))["encoding"] == "opus"
    assert sse.delta_encoding("pcm") == sse.delta_encoding("wav") == {}


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4800, 65537])
def test_audio_delta_base64_roundtrip(size):
    pcm = os.urandom(size)
    payload = parse(sse.audio_delta(pcm))
    assert payload["type"] == "speech.audio.delta"
    assert base64.b64decode(payload["audio"], validate=True) == pcm


def test_audio_done_usage_totals():
    payload = parse(sse.audio_done(12, 345))
    assert payload == {"type": "speech.audio.done",
                       "usage": {"input_tokens": 12, "output_tokens": 345, "total_tokens": 357}}


def test_error_event():
    payload = parse(sse.error("it broke\nbadly", "synthesis_failed"))
    assert payload == {"type": "error", "error": {"message": "it broke\nbadly", "type": "server_error",
                                                  "code": "synthesis_failed"}}


def test_stream_of_events_splits_cleanly():
    stream = sse.audio_info(24000) + sse.audio_delta(b"\x01\x02") + sse.audio_done(1, 2)
    events = [parse(part + b"\n\n") for part in stream.split(b"\n\n")[:-1]]
    assert [e["type"] for e in events] == ["speech.audio.info", "speech.audio.delta", "speech.audio.done"]
