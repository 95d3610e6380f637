"""Property-based fuzz of the pure parts (hypothesis): the chunker never loses or reorders text,
WAV and SSE framing round-trip. `make fuzz` runs them with the nightly profile (many more examples)."""
from __future__ import annotations

import base64
import io
import json
import os
import wave

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatterbox_server.audio import sse
from chatterbox_server.audio.encoders import StreamEncoder, encode_whole, wav_header
from chatterbox_server.text.chunking import STRATEGIES, shorten_first_chunk, split_text

QUIET = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=50, **QUIET)
settings.register_profile("nightly", max_examples=3000, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# words, sentence and clause punctuation, CJK, quotes, abbreviations, every kind of whitespace
SYMBOLS = "abcXYZ019 .,;:!?…-–—'\"()[]\n\t\u00a0\u3000。！？，、「」Mr.Dr.e.g. "
ALPHABET = st.sampled_from([*SYMBOLS, "\r\n", "..."])
TEXTS = st.lists(ALPHABET, max_size=400).map("".join) | st.text(max_size=300)


def visible(text: str) -> str:
    return "".join(text.split())


@given(text=TEXTS, strategy=st.sampled_from(STRATEGIES), max_chars=st.integers(1, 300))
def test_the_chunker_never_loses_or_reorders_text(text, strategy, max_chars):
    chunks = split_text(text, strategy, max_chars)
    position = 0
    for chunk in chunks:
        assert chunk.text and chunk.text == chunk.text.strip() and len(chunk.text) <= max_chars
        assert position <= chunk.start and text[chunk.start:chunk.end] == chunk.text
        assert text[position:chunk.start].strip() == ""          # only whitespace between chunks
        position = chunk.end
    assert text[position:].strip() == ""
    assert "".join(visible(chunk.text) for chunk in chunks) == visible(text)


@given(text=TEXTS, max_chars=st.integers(20, 300), first=st.integers(1, 120))
def test_the_short_first_chunk_keeps_every_character_in_order(text, max_chars, first):
    chunks = shorten_first_chunk(text, split_text(text, "sentence", max_chars), first)
    assert "".join(visible(chunk.text) for chunk in chunks) == visible(text)
    assert [chunk.start for chunk in chunks] == sorted(chunk.start for chunk in chunks)


PCM = st.lists(st.integers(-32768, 32767), max_size=4000).map(
    lambda samples: b"".join(sample.to_bytes(2, "little", signed=True) for sample in samples))
RATES = st.sampled_from([8000, 16000, 22050, 24000, 44100, 48000])


def read_wav(data: bytes) -> tuple[int, bytes]:
    with wave.open(io.BytesIO(data)) as source:
        assert source.getnchannels() == 1 and source.getsampwidth() == 2
        return source.getframerate(), source.readframes(source.getnframes())


@given(pcm=PCM, rate=RATES)
def test_a_whole_wav_round_trips(pcm, rate):
    assert read_wav(encode_whole("wav", pcm, rate)) == (rate, pcm)
    assert read_wav(wav_header(rate, data_bytes=len(pcm)) + pcm) == (rate, pcm)


@given(pcm=PCM, rate=RATES, cuts=st.lists(st.integers(0, 8000), max_size=8))
def test_a_streamed_wav_round_trips_however_the_audio_is_cut(pcm, rate, cuts):
    encoder = StreamEncoder("wav", rate)
    pieces = [pcm[a:b] for a, b in zip([0, *sorted(c - c % 2 for c in cuts)],
                                       [*sorted(c - c % 2 for c in cuts), len(pcm)], strict=True)]
    body = encoder.header() + b"".join(encoder.feed(piece) for piece in pieces) + encoder.finish()
    assert body[:4] == b"RIFF" and body[44:] == pcm       # the streaming header: sizes unknown


def parse_events(stream: bytes) -> list[dict]:
    assert stream.endswith(b"\n\n")
    events = []
    for block in stream[:-2].split(b"\n\n"):
        lines = block.split(b"\n")
        assert len(lines) == 1 and lines[0].startswith(b"data: ")     # one data line an event
        events.append(json.loads(lines[0][6:]))
    return events


@given(pieces=st.lists(st.binary(max_size=3000), max_size=10), rate=RATES, message=st.text(max_size=200),
       tokens=st.tuples(st.integers(0, 10**6), st.integers(0, 10**6)))
def test_sse_framing_round_trips(pieces, rate, message, tokens):
    stream = (sse.audio_info(rate) + b"".join(sse.audio_delta(piece) for piece in pieces)
              + sse.audio_done(*tokens) + sse.error(message, "synthesis_failed"))
    events = parse_events(stream)
    assert events[0] == {"type": "speech.audio.info", "sample_rate": rate, "channels": 1, "bits_per_sample": 16}
    deltas = [event for event in events if event["type"] == "speech.audio.delta"]
    assert b"".join(base64.b64decode(event["audio"]) for event in deltas) == b"".join(pieces)
    assert events[-2]["usage"]["total_tokens"] == sum(tokens)
    assert events[-1]["error"]["message"] == message
