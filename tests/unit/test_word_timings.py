"""Word timings: the pure helpers (workers/timings.py, chatterbox_server/audio/timings.py), hibari's
alignment through the model worker's delivery path, and the job-protocol fields."""
from __future__ import annotations

import numpy as np
import pytest
from schedkit import bare_worker

from chatterbox_server.audio.timings import (
    WordClock,
    captions,
    cartesia,
    elevenlabs_alignment,
    offset_words,
    word_objects,
)
from workers.engines.base import SynthesisSettings, VoiceRef
from workers.engines.hibari_align import spoken_groups, with_output
from workers.ipc.protocol import AudioChunk, SpeechJob
from workers.model_worker import ActiveJob
from workers.scheduler.estimate import CostMeter
from workers.timings import (
    FRAME_SECONDS,
    ChunkWords,
    estimate_words,
    find_pauses,
    frame_levels,
    spread_over_groups,
    trim_to_voice,
)

RATE = 24000
WORDS = (("Hello,", 0.1, 0.4), ("world.", 0.6, 1.0))


# -- front-side shapes ------------------------------------------------------------------------------
def test_the_clock_moves_each_chunks_words_by_the_audio_before_that_chunk():
    clock = WordClock(RATE)
    assert clock.feed(0, RATE * 2, None) is None                     # first message of chunk 0: 1 s
    assert clock.feed(0, RATE * 2, WORDS) == WORDS                   # chunk 0's last: from its first sample
    assert clock.feed(1, RATE, None) is None                         # chunk 1 starts at 2.0 s
    assert clock.feed(1, RATE, (("Again", 0.1, 0.5),)) == (("Again", 2.1, 2.5),)
    assert clock.seconds == 3.0
    assert WordClock(RATE, start=10.0).feed(0, 2, WORDS)[0] == ("Hello,", 10.1, 10.4)


def test_the_api_shapes():
    assert word_objects(WORDS)[1] == {"word": "world.", "start": 0.6, "end": 1.0}
    assert captions(WORDS)[0] == {"word": "Hello,", "start_time": 0.1, "end_time": 0.4}
    assert cartesia(WORDS) == {"words": ["Hello,", "world."], "start": [0.1, 0.6], "end": [0.4, 1.0]}
    assert offset_words(WORDS, 1.0005)[0] == ("Hello,", 1.101, 1.401)


def test_elevenlabs_alignment_spells_the_text_and_its_durations_tile_the_time():
    alignment = elevenlabs_alignment(WORDS)
    assert "".join(alignment["chars"]) == "Hello, world."
    starts, durations = alignment["charStartTimesMs"], alignment["charDurationsMs"]
    assert starts[0] == 100 and starts[-1] + durations[-1] == 1000
    assert all(a + d == b for a, d, b in zip(starts, durations, starts[1:], strict=False))
    assert alignment["chars"][6] == " " and (starts[6], durations[6]) == (400, 200)   # the gap between words


# -- worker-side helpers ----------------------------------------------------------------------------
def test_words_take_their_own_groups_when_the_counts_add_up_and_a_share_otherwise():
    spans = [(0.0, 0.2), (0.3, 0.5), (0.6, 0.9)]
    assert spread_over_groups(["a", "b", "c"], [1, 1, 1], spans) == (("a", 0.0, 0.2), ("b", 0.3, 0.5),
                                                                     ("c", 0.6, 0.9))
    # "$5" read as two groups, "-" as none
    assert spread_over_groups(["$5", "-", "ok"], [2, 0, 1], spans) == (("$5", 0.0, 0.5), ("-", 0.6, 0.6),
                                                                      ("ok", 0.6, 0.9))
    skewed = spread_over_groups(["a", "b"], [1, 2], spans[:2])       # 3 counted, 2 spoken
    assert skewed[0][1] == 0.0 and skewed[-1][2] == 0.5
    assert all(a[2] <= b[1] + 1e-9 for a, b in zip(skewed, skewed[1:], strict=False))


def test_phoneme_groups_of_punctuation_alone_are_not_spoken():
    assert spoken_groups("həlˈO , ðˈɛɹ. —") == 2


def _speech(*segments: tuple[float, float], total: float) -> np.ndarray:
    """Noise bursts (speech) at the given seconds, silence elsewhere."""
    audio = np.zeros(int(total * RATE), np.float32)
    rng = np.random.default_rng(0)
    for start, end in segments:
        audio[int(start * RATE):int(end * RATE)] = rng.normal(0, 0.2, int(end * RATE) - int(start * RATE))
    return audio


def test_the_estimate_spreads_the_voiced_span_and_anchors_punctuation_at_the_pauses():
    audio = _speech((0.2, 1.0), (1.4, 2.0), total=2.3)
    words = estimate_words("one two, three four", audio, RATE)
    assert [w for w, _, _ in words] == ["one", "two,", "three", "four"]
    assert words[0][1] == pytest.approx(0.2, abs=0.02) and words[-1][2] == pytest.approx(2.0, abs=0.02)
    assert words[1][2] == pytest.approx(1.0, abs=0.02) and words[2][1] == pytest.approx(1.4, abs=0.02)
    assert estimate_words("", audio, RATE) == ()
    assert estimate_words("quiet", np.zeros(RATE, np.float32), RATE) == (("quiet", 1.0, 1.0),)


def test_engine_timings_are_scaled_by_the_stretch_and_pulled_in_to_the_voice():
    chunk = ChunkWords("a b", RATE)
    made = _speech((0.0, 1.0), (1.0, 1.6), total=2.0)
    chunk.add(made, made[::2])                                       # stretched to half its length
    words = chunk.finish((("a", 0.0, 1.0), ("b", 1.0, 2.0)))
    assert words[0] == ("a", 0.0, 0.5)
    assert words[1][1] == 0.5 and words[1][2] == pytest.approx(0.8, abs=0.02)   # silent tail trimmed
    assert trim_to_voice((("x", 0.0, 0.1),), np.zeros(0, np.float32), RATE) == (("x", 0.0, 0.1),)



def test_a_word_whose_voice_starts_just_before_its_end_keeps_a_heard_length():
    """Seen on one CPU at speed 3: "The" predicted at 0.10-0.158 s, its voice from 0.15 s, trimmed to 8 ms."""
    audio = _speech((0.15, 0.6), total=0.8)
    words = trim_to_voice((("The", 0.10, 0.158), ("quick", 0.158, 0.26)), audio, RATE)
    (_, start, end), (_, next_start, _) = words
    assert end - start == pytest.approx(0.05, abs=1e-9)
    assert 0.10 <= start and end <= 0.158 <= next_start
    short = trim_to_voice((("a", 0.14, 0.16),), audio, RATE)       # shorter than the minimum: its whole span
    assert short == (("a", 0.14, 0.16),)

def test_adding_a_graph_output_keeps_the_rest_of_the_model():
    import struct
    graph = b"\x0a\x03abc"                                           # a graph with one field
    model = b"\x08\x07" + b"\x3a" + bytes([len(graph)]) + graph + b"\x42\x01z" + struct.pack("<B", 0)
    patched = with_output(model, "t")
    assert patched.startswith(b"\x08\x07\x3a") and patched.endswith(b"\x42\x01z\x00")
    assert b"\x0a\x03abc\x62\x03\x0a\x01t" in patched


def test_jobs_ask_for_no_timings_unless_they_say_so():
    job = SpeechJob("r", ("x",), SynthesisSettings(), VoiceRef(), seed=0, buffer_size=1)
    assert job.timestamps is False and SynthesisSettings().timestamps is False
    assert AudioChunk(0, b"", 0, 0, 0.0).words is None


# -- hibari through the model worker ----------------------------------------------------------------
@pytest.fixture(scope="module")
def hibari():
    from workers.engines.hibari import HibariEngine
    engine = HibariEngine()
    return engine, engine.load()


def _deliver_all(engine, info, chunks: tuple[str, ...], speed: float = 1.0, timestamps: bool = True):
    worker = bare_worker(1, engine)
    worker.info, worker.cost, worker.step_made_audio = info, CostMeter(), False
    sent: list[AudioChunk] = []
    worker._send = lambda conn, message: sent.append(message) or True
    worker._finish = lambda active: None
    job = SpeechJob("r", chunks, SynthesisSettings(speed=speed), VoiceRef(info.default_voice), seed=3,
                    buffer_size=10, timestamps=timestamps)
    active = ActiveJob(conn="c", job=job, credits=100)
    worker.jobs["c"] = active
    while active.next_index < job.units:
        worker._advance([active])
    return sent


@pytest.mark.parametrize("speed", [1.0, 3.0])        # 3.0: hibari says 2.0, the worker stretches by 1.5
def test_hibari_words_are_monotonic_cover_the_text_and_end_with_the_audio(hibari, speed):
    engine, info = hibari
    chunks = ("The quick brown fox jumps over the lazy dog.", "On the 3rd of March, 1,250 people paid $9.99 each!")
    sent = _deliver_all(engine, info, chunks, speed)
    for index, text in enumerate(chunks):
        messages = [m for m in sent if m.index == index]
        assert all(m.words is None for m in messages[:-1]) and messages[-1].words is not None
        words = messages[-1].words
        seconds = sum(len(m.pcm) for m in messages) / 2 / info.sample_rate
        assert [w for w, _, _ in words] == text.split()
        times = [t for _, start, end in words for t in (start, end)]
        assert times == sorted(times) and times[0] >= 0.0
        span, _ = find_pauses(frame_levels(np.frombuffer(b"".join(m.pcm for m in messages), "<i2") / 32768.0,
                                          info.sample_rate))
        assert words[-1][2] == pytest.approx(span[1] * FRAME_SECONDS, abs=0.05)   # the last word ends with the voice
        assert seconds - 0.6 < words[-1][2] <= seconds                             # hibari's tail: "." and a pad
        assert all(end - start > 0.03 for _, start, end in words)    # every word is heard for a while


def test_without_timestamps_no_words_are_sent(hibari):
    engine, info = hibari
    assert all(m.words is None for m in _deliver_all(engine, info, ("Hello there.",), timestamps=False))
