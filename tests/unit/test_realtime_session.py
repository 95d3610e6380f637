"""The realtime session core (synthesis/realtime.py) on a fake pool: segments to jobs, seeds,
look-ahead, flushes, barge-in, eviction and failures, with no server."""
from __future__ import annotations

import time

import gevent
import gevent.queue
import pytest

from chatterbox_server.runtime.pool_client import PoolBusy, PoolError
from chatterbox_server.synthesis.realtime import (
    Audio,
    Cancelled,
    ContextFailed,
    ContextSettings,
    Done,
    Flushed,
    Session,
    SessionError,
    SessionLimits,
)
from chatterbox_server.text.segmenter import SegmentPolicy
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef
from workers.ipc.protocol import AudioChunk, JobDone

RATE = 1000             # samples per second: 2 bytes a sample, so 2000 bytes are one second
INFO = EngineInfo(engine="fake", model="fake", device="cpu", sample_rate=RATE, model_names=("fake",))


class FakeHandle:
    def __init__(self, job, seconds: float, delay: float, pieces: int) -> None:
        self.job = job
        self.seconds = seconds
        self.delay = delay
        self.pieces = pieces
        self.result = None
        self.closed = False
        self.cancelled: str | None = None

    def chunks(self):
        samples = int(self.seconds * RATE)
        for piece in range(self.pieces):
            gevent.sleep(self.delay)
            if self.cancelled:
                raise PoolError(f"cancelled: {self.cancelled}", status=499, code="cancelled")
            last = piece == self.pieces - 1
            words = tuple((w, 0.0, 0.1) for w in self.job.chunks[0].split()) if last and self.job.timestamps else None
            yield AudioChunk(0, b"\x01\x00" * (samples // self.pieces), 1, 2, 0.01, words=words)
        self.result = JobDone(1, 2, self.seconds, 0.01)

    def cancel(self, reason: str) -> None:
        self.cancelled = reason

    def close(self) -> None:
        self.closed = True


class FakePool:
    def __init__(self, seconds: float = 0.5, delay: float = 0.0, pieces: int = 1, busy: bool = False) -> None:
        self.seconds, self.delay, self.pieces, self.busy = seconds, delay, pieces, busy
        self.jobs: list = []
        self.handles: list[FakeHandle] = []
        self.submitted_at: list[float] = []

    def admit(self, model=None):
        if self.busy:
            raise PoolBusy("full", retry_after=2)
        return []

    def submit(self, job, admitted: bool = False):
        if self.busy and not admitted:
            raise PoolBusy("full", retry_after=2)
        self.jobs.append(job)
        self.submitted_at.append(time.monotonic())
        handle = FakeHandle(job, self.seconds, self.delay, self.pieces)
        self.handles.append(handle)
        return handle


def settings(seed: int = 100, policy: SegmentPolicy | None = None, timestamps: bool = False) -> ContextSettings:
    return ContextSettings(VoiceRef("v"), SynthesisSettings(), seed, policy or SegmentPolicy(), timestamps)


def make_session(pool: FakePool, **limits) -> tuple[Session, list]:
    events: list = []
    return Session(pool, INFO, events.append, SessionLimits(**limits)), events


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        gevent.sleep(0.01)


def of(events: list, kind: type, context_id: str | None = None) -> list:
    return [e for e in events if isinstance(e, kind) and (context_id is None or e.context_id == context_id)]


def test_each_segment_is_one_job_in_order_with_the_seed_schedule():
    pool = FakePool()
    session, events = make_session(pool)
    session.open("a", settings(seed=100))
    for word in "Hello there, this is one. And this is two. And three.".split(" "):
        session.append("a", word + " ")
    session.end("a")
    wait_for(lambda: of(events, Done))
    texts = [job.chunks for job in pool.jobs]
    assert all(len(chunks) == 1 for chunks in texts)
    assert " ".join(chunks[0] for chunks in texts) == "Hello there, this is one. And this is two. And three."
    assert [job.seed for job in pool.jobs] == [100 + i for i in range(len(pool.jobs))]
    audio = of(events, Audio)
    assert [a.sequence for a in audio] == list(range(len(audio)))
    assert [a.start for a in audio] == pytest.approx([0.5 * i for i in range(len(audio))])
    done = of(events, Done)[0]
    assert done.usage.segments == len(pool.jobs) and done.usage.audio_seconds == pytest.approx(0.5 * len(audio))


def test_flush_is_acknowledged_after_the_audio_of_the_flushed_text():
    pool = FakePool(delay=0.05)
    session, events = make_session(pool)
    session.open("a", settings())
    session.append("a", "no end in sight")
    session.flush("a", flush_id="f1")
    wait_for(lambda: of(events, Flushed))
    assert isinstance(events[-1], Flushed) and events[-1].flush_id == "f1"
    assert of(events, Audio)
    session.flush("a", ack=False)
    gevent.sleep(0.1)
    assert len(of(events, Flushed)) == 1


def test_the_next_segment_waits_while_the_listener_has_the_look_ahead_buffered():
    pool = FakePool(seconds=0.4)
    session, events = make_session(pool, lookahead_seconds=0.5)
    session.open("a", settings(policy=SegmentPolicy.whole_sentences()))
    session.append("a", "One. Two. Three. Four. ")
    session.end("a")
    wait_for(lambda: of(events, Done), timeout=10)
    first_audio = pool.submitted_at[0]
    # after the first 0.4 s segment the buffer is under 0.5 s: the second goes at once; with 0.8 s
    # sent, the third waits until the listener is down to 0.5 s (about 0.3 s later), and so on
    assert pool.submitted_at[1] - first_audio < 0.1
    assert pool.submitted_at[2] - first_audio == pytest.approx(0.3, abs=0.12)
    assert pool.submitted_at[3] - first_audio == pytest.approx(0.7, abs=0.12)


def test_cancel_stops_the_job_acknowledges_and_nothing_of_it_follows():
    pool = FakePool(delay=0.2, pieces=5)
    session, events = make_session(pool)
    session.open("a", settings())
    session.append("a", "A long sentence that goes on. And another one after it. ")
    wait_for(lambda: of(events, Audio))
    assert session.cancel("a")
    assert isinstance(events[-1], Cancelled)
    serial = events[-1].serial
    gevent.sleep(0.5)
    assert isinstance(events[-1], Cancelled)
    assert pool.handles[0].cancelled and not session.live(serial)
    assert "a" not in session.contexts
    assert not session.cancel("a")          # already gone


def test_a_context_over_the_cap_evicts_the_oldest_idle_one():
    pool = FakePool(delay=0.3)
    session, events = make_session(pool, max_contexts=2)
    session.open("old", settings())
    session.open("busy", settings())
    session.append("busy", "Speaking now. More to come. ")
    gevent.sleep(0.05)
    session.open("new", settings())
    assert of(events, Cancelled, "old") and set(session.contexts) == {"busy", "new"}
    session.append("new", "Also speaking. More text here. ")
    gevent.sleep(0.05)
    with pytest.raises(SessionError) as refused:
        session.open("another", settings())
    assert refused.value.code == "too_many_contexts" and refused.value.status == 429


def test_text_beyond_the_limit_is_refused_and_what_was_accepted_is_kept():
    pool = FakePool()
    session, events = make_session(pool, max_context_chars=20)
    session.open("a", settings())
    session.append("a", "Short and sweet. ")
    with pytest.raises(SessionError) as refused:
        session.append("a", "This pushes it over the limit.")
    assert refused.value.code == "context_too_long" and refused.value.context_id == "a"
    session.end("a")
    wait_for(lambda: of(events, Done))
    assert pool.jobs[0].chunks == ("Short and sweet.",)
    with pytest.raises(SessionError):
        session.append("a", "too late")


def test_a_full_pool_fails_the_context_with_a_retry_hint_not_the_session():
    pool = FakePool(busy=True)
    session, events = make_session(pool)
    with pytest.raises(PoolBusy):
        session.admit()
    session.open("a", settings())
    session.append("a", "Hello.")
    session.end("a")
    wait_for(lambda: of(events, ContextFailed))
    failed = of(events, ContextFailed)[0]
    assert failed.status == 429 and failed.retry_after == 2 and "a" not in session.contexts


def test_timestamps_are_on_the_segments_last_audio_on_the_contexts_timeline():
    pool = FakePool(seconds=1.0, pieces=2)
    session, events = make_session(pool)
    session.open("a", settings(timestamps=True, policy=SegmentPolicy.whole_sentences()))
    session.append("a", "One two. Three four. ")
    session.end("a")
    wait_for(lambda: of(events, Done))
    audio = of(events, Audio)
    assert [a.words is not None for a in audio] == [False, True, False, True]
    assert audio[1].words == (("One", 0.0, 0.1), ("two.", 0.0, 0.1))
    assert audio[3].segment_start == pytest.approx(1.0) and audio[3].words[0] == ("Three", 1.0, 1.1)
    assert all(job.timestamps for job in pool.jobs)


def test_close_cancels_every_context_without_acknowledging():
    pool = FakePool(delay=0.2, pieces=3)
    session, events = make_session(pool)
    for name in ("a", "b"):
        session.open(name, settings())
        session.append(name, "Some words here. ")
    wait_for(lambda: len(pool.handles) == 2)
    session.close()
    gevent.sleep(0.3)
    assert all(handle.cancelled for handle in pool.handles)
    assert not of(events, Cancelled) and not session.contexts
    assert not session.live(1) and not session.live(2)
