"""Whisper shared between requests (workers/asr_worker.Recognizer): transcriptions of different
requests run at once up to the concurrency, a model loads once however many ask, and a take that
cannot start within its wait is answered busy at once instead of queueing behind another client.

The slot logic is measured with a model that takes a known time; the overlap is then measured on
the real bundled Whisper model (faster-whisper with num_workers), whose concurrent calls must run
in parallel, not one after another."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from asr import asr_available, model_path

from chatterbox_server.synthesis.takes import choose, make_takes
from workers.asr_worker import Recognizer, default_concurrency
from workers.ipc.asr import Transcribe, TranscribeFailed, Transcript

PCM = np.zeros(1600, dtype="<i2").tobytes()


class TimedModel:
    """Stands in for WhisperModel: each transcription lasts `seconds`; the spans are recorded."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.model = SimpleNamespace(is_multilingual=False)
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def transcribe(self, audio, **_):
        start = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            self.spans.append((start, time.monotonic()))
        return [SimpleNamespace(text=" heard")], None


def recognizer(concurrency: int, model: object) -> Recognizer:
    rec = Recognizer("", "cpu", concurrency)
    rec.models["tiny"] = model
    return rec


def in_threads(fn, count: int) -> list:
    results: list = [None] * count

    def one(i: int) -> None:
        results[i] = fn(i)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def test_two_requests_transcriptions_run_at_once_up_to_the_concurrency():
    model = TimedModel(0.4)
    rec = recognizer(2, model)
    started = time.monotonic()
    replies = in_threads(lambda i: rec.transcribe(Transcribe("tiny", PCM, 16000)), 2)
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Transcript) and r.text == "heard" for r in replies)
    assert overlap(*model.spans) > 0.3, model.spans        # measured: both ran the whole time together
    assert elapsed < 0.7
    # and never more than the concurrency: 4 at once with 2 slots take two rounds
    model.spans.clear()
    in_threads(lambda i: rec.transcribe(Transcribe("tiny", PCM, 16000)), 4)
    ordered = sorted(model.spans)
    assert max(sum(1 for s in ordered if s[0] <= t[0] < s[1]) for t in ordered) <= 2


def test_a_flood_from_one_client_does_not_hold_another_beyond_its_wait():
    model = TimedModel(1.0)
    rec = recognizer(1, model)
    flood = threading.Thread(target=in_threads, args=(lambda i: rec.transcribe(Transcribe("tiny", PCM, 16000)), 4))
    flood.start()
    time.sleep(0.1)                                          # the flood holds the one slot, 3 more waiting
    started = time.monotonic()
    reply = rec.transcribe(Transcribe("tiny", PCM, 16000, wait=0.3))
    waited = time.monotonic() - started
    assert isinstance(reply, TranscribeFailed) and reply.busy and reply.status == 503
    assert "CHATTERBOX_WHISPER_WAIT_SECONDS" in reply.message
    assert 0.25 <= waited < 0.6, waited                      # the bound, not the flood's 4 s
    flood.join(10)
    # with a free slot the same request is heard at once
    assert isinstance(rec.transcribe(Transcribe("tiny", PCM, 16000, wait=0.3)), Transcript)


def test_a_model_loads_once_however_many_ask_at_once():
    loads = []

    class Counting(Recognizer):
        def _load(self, path):
            loads.append(path)
            time.sleep(0.2)
            self.models[path] = TimedModel(0.0)
            return self.models[path]
    rec = Counting("", "cpu", 4)
    in_threads(lambda i: rec.transcribe(Transcribe("tiny", PCM, 16000)), 4)
    assert loads == ["tiny"]


def test_the_default_concurrency_suits_the_device():
    assert default_concurrency("cuda") == 4
    assert default_concurrency("cpu", cpus=16) == 2
    assert default_concurrency("cpu", cpus=1) == 1
    assert Recognizer("", "cpu", 0).concurrency == default_concurrency("cpu")


def test_a_busy_check_leaves_the_rest_of_the_chunk_unheard():
    heard: list[bytes] = []

    def synthesize(seeds):
        return [bytes([i]) * 200 for i, _ in enumerate(seeds)]

    def hear(pcm):                      # the first take is heard (and fails), then Whisper is busy
        heard.append(pcm)
        return "something else" if len(heard) == 1 else None
    takes, _ = make_takes(0, "hello", 7, 3, 3, synthesize, lambda pcm: len(pcm) / 100, hear)
    assert len(heard) == 2 and len(takes) == 3                 # no third hearing, no second round
    assert [t.transcript for t in takes] == ["something else", None, None]
    assert choose(takes, True)[0] in takes


@pytest.mark.skipif(not asr_available(), reason="faster-whisper and the bundled model are dev requirements")
def test_the_real_whisper_model_transcribes_two_requests_in_parallel():
    """num_workers=2: measured, the two calls' spans overlap for most of their length."""
    rec = Recognizer(model_path(), "cpu", 2)
    real = rec._model(model_path())
    spans: list[tuple[float, float]] = []

    class Measured:
        model = real.model

        def transcribe(self, audio, **kwargs):
            start = time.monotonic()
            segments, info = real.transcribe(audio, **kwargs)
            segments = list(segments)                      # the work happens here
            spans.append((start, time.monotonic()))
            return segments, info
    rec.models[model_path()] = Measured()
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(16000 * 8) * 3000).astype("<i2").tobytes()
    rec.transcribe(Transcribe("tiny", pcm, 16000))                    # warm up
    spans.clear()
    replies = in_threads(lambda i: rec.transcribe(Transcribe("tiny", pcm, 16000)), 2)
    assert all(isinstance(r, Transcript) for r in replies)
    shorter = min(end - start for start, end in spans)
    assert overlap(*spans) > 0.5 * shorter, spans
