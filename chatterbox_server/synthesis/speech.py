"""One speech request from admission to the last byte, independent of Flask.

The view validates, then `SpeechRun.start` admits the job and waits for the first audio (so the
status code is still free to choose if it fails); the response bodies below stream the rest.
A failure after the first byte becomes an SSE `error` event, or for raw audio an aborted
transfer (no final chunk), never a short file that looks complete.
"""
from __future__ import annotations

import dataclasses
import logging
import random
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import gevent
from gevent import socket as gsocket

from chatterbox_server.audio import sse
from chatterbox_server.audio.encoders import StreamEncoder, encode_whole
from chatterbox_server.audio.timings import WordClock, word_objects
from chatterbox_server.runtime.hub import off_hub
from chatterbox_server.runtime.pool_client import JobHandle, PoolClient, PoolError
from chatterbox_server.runtime.progress import Progress
from chatterbox_server.runtime.telemetry import AUDIO_SECONDS, FIRST_AUDIO
from chatterbox_server.security.redact import public_pool_message
from chatterbox_server.synthesis.requests import SEED_MAX, SPEED_RANGE, SpeechRequest
from chatterbox_server.synthesis.routing import model_id
from chatterbox_server.text.chunking import shorten_first_chunk, split_text
from chatterbox_server.text.markup import has_markup, parse_markup, plan_chunks
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef
from workers.ipc.protocol import AudioChunk, ConvertJob, JobFailed, SpeechJob

log = logging.getLogger("chatterbox.speech")
FIRST_CHUNK_CHARS = 100      # about 6 s of speech, some 150 Chatterbox speech tokens
CLIENT_STALLED = 408         # the model worker cancelled a job whose client read nothing for a while


class StreamAborted(Exception):
    """Raised inside a raw-audio body so the server drops the connection instead of ending it cleanly."""


def new_request_id() -> str:
    return uuid.uuid4().hex


def random_seed() -> int:
    """A seed for a request that sent none; never 0, which the Extended API reads as "random"."""
    return random.SystemRandom().randrange(1, SEED_MAX + 1)


@dataclass(frozen=True)
class TextPlan:
    """A request's text as the job's chunks, with the pauses and speeds its markup asks for."""
    chunks: tuple[str, ...]
    speeds: tuple[float, ...] = ()          # per chunk, when markup changes the rate; empty: the request's
    lead_pause: float = 0.0
    pauses_after: tuple[float, ...] = ()    # empty: no pauses
    dropped_tags: tuple[str, ...] = ()      # expressive tags the engine does not understand, removed


def plan_text(text: str, strategy: str, max_chars: int, *, streaming: bool = False,
              tags: frozenset[str] = frozenset(), speed: float = 1.0) -> TextPlan:
    """Chunks for `text`; a streamed answer gets a short first chunk so its audio starts sooner.
    Raises MarkupError for pauses, SSML or tags it cannot read (text/markup.py)."""
    if not has_markup(text):
        chunks = split_text(text, strategy, max_chars)
        if streaming:
            chunks = shorten_first_chunk(text, chunks, FIRST_CHUNK_CHARS)
        return TextPlan(tuple(chunk.text for chunk in chunks))
    plan = plan_chunks(parse_markup(text, tags), strategy, max_chars)
    speeds = tuple(min(max(speed * rate, SPEED_RANGE[0]), SPEED_RANGE[1]) for rate in plan.speeds)
    return TextPlan(plan.chunks, speeds if any(rate != 1.0 for rate in plan.speeds) else (),
                    plan.lead_pause, plan.pauses_after if any(plan.pauses_after) else (), plan.dropped_tags)


def build_job(request: SpeechRequest, voice: VoiceRef, request_id: str, streaming: bool = False,
              tags: frozenset[str] = frozenset(), seed: int | None = None,
              model: str = "") -> tuple[SpeechJob, TextPlan]:
    """The job for a request and its text's plan (`seed`: a dialogue turn's, else the request's or a
    random one; `model`: the served model it goes to). Raises MarkupError (text/markup.py) and
    NothingToSay before anything is submitted."""
    plan = plan_text(request.input, request.streaming_strategy, request.streaming_chunk_size,
                     streaming=streaming, tags=tags, speed=request.speed)
    if not plan.chunks:
        raise NothingToSay("there is nothing to speak once its pauses and the tags this engine does not "
                           f"understand are taken out{dropped_note(plan.dropped_tags)}")
    if seed is None:
        seed = request.seed if request.seed is not None else random_seed()
    settings = SynthesisSettings(speed=request.speed, exaggeration=request.exaggeration,
                                 cfg_weight=request.cfg_weight, temperature=request.temperature,
                                 language=request.language)
    job = SpeechJob(request_id=request_id, chunks=plan.chunks, settings=settings,
                    voice=voice, seed=seed, buffer_size=request.streaming_buffer_size,
                    text_preview=request.input[:80], timestamps=request.timestamps,
                    chunk_speeds=plan.speeds, lead_pause=plan.lead_pause, pauses_after=plan.pauses_after,
                    model=model)
    return job, plan


def dropped_note(tags: tuple[str, ...]) -> str:
    return f" (dropped: {', '.join(f'[{tag}]' for tag in tags)})" if tags else ""


class NothingToSay(ValueError):
    """The text has no words left once its markup is read."""


@dataclass
class SpeechRun:
    """A job admitted to the pool, with a watch on the client's connection."""
    handle: JobHandle
    job: SpeechJob | ConvertJob
    info: EngineInfo
    progress: Progress
    chunks: Iterator[AudioChunk]
    first: AudioChunk | None = None
    loading: bool = False               # its model is loading; `first` comes once it is loaded
    watcher: gevent.Greenlet | None = None
    client_socket: object | None = None
    started: float = field(default_factory=time.monotonic)
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    @classmethod
    def start(cls, pool: PoolClient, job: SpeechJob | ConvertJob, info: EngineInfo, client_socket: object | None,
              progress: Progress, admitted: bool = False) -> SpeechRun:
        """`admitted`: the request was let in already (PoolClient.admit); see PoolClient.submit. The job
        goes to the model `info` describes. Returns once the first audio is in, or once the model
        begins loading for it (`loading`: the stream may say so; the audio follows)."""
        if not job.model and info.group:
            job = dataclasses.replace(job, model=info.group)
        handle = pool.submit(job, admitted=admitted)
        run = cls(handle, job, info, progress, handle.chunks(), client_socket=client_socket)
        progress.begin(job.request_id, job.units, job.text_preview)
        if client_socket is not None:
            run.watcher = watch_client(client_socket, handle)
            handle.reader.link_value(run._job_ended)
        try:
            if handle.model_loading():
                run.loading = True
                progress.note(job.request_id, "loading model")
            else:
                run.first = run._first()
        except BaseException:
            run.close()
            raise
        return run

    def _first(self) -> AudioChunk | None:
        chunk = self._next()
        FIRST_AUDIO.observe(time.monotonic() - self.started)
        return chunk

    def _next(self) -> AudioChunk | None:
        chunk = next(self.chunks, None)
        if chunk is not None:
            self.progress.chunk_done(self.job.request_id, chunk.index + 1)
        return chunk

    def wait_first(self) -> None:
        """The first audio in, once the model has loaded; raises PoolError (before any byte is sent)."""
        if self.loading:
            self.loading = False
            self.first = self._first()
            self.progress.note(self.job.request_id, None)

    def audio(self) -> Iterator[AudioChunk]:
        """Every chunk, the first one included; raises PoolError if the job fails on the way."""
        self.wait_first()
        chunk = self.first
        while chunk is not None:
            yield chunk
            chunk = self._next()

    @property
    def usage(self) -> tuple[int, int]:
        result = self.handle.result
        return (result.input_tokens, result.output_tokens) if result else (0, 0)

    @property
    def request_id(self) -> str:
        return self.job.request_id

    def notes(self) -> list[dict[str, Any]]:
        return []       # a dialogue's turn events (synthesis/dialogue.py); one job has none

    def _job_ended(self, reader: gevent.Greenlet) -> None:
        failure = reader.value
        if isinstance(failure, JobFailed) and failure.kind == "client":
            gevent.spawn(self._abort_stalled_client, failure.message)

    def _abort_stalled_client(self, reason: str) -> None:
        """The model worker cancelled the job because the client read no audio for
        CHATTERBOX_PARKED_TIMEOUT, so this request's greenlet is blocked writing to that client.
        Shutting the socket down wakes the write with EPIPE, which gunicorn takes as a hang-up (no
        error logged), and the transfer ends unfinished: the client cannot mistake it for whole."""
        log.info("request %s: %s", self.job.request_id, reason)
        self.handle.cancel(reason)
        self.abort_client()

    def abort_client(self) -> bool:
        """End the client's connection without finishing the response; False if there is no socket."""
        if self.client_socket is None:
            return False
        if self.watcher is not None:
            self.watcher.kill(block=False)      # it would take the shutdown for a client hang-up
        try:
            # through a duplicate: gevent's own shutdown() fails the blocked write with EBADF, which
            # gunicorn logs as an error; the kernel's shutdown fails it with EPIPE, a hang-up
            with socket.fromfd(self.client_socket.fileno(), self.client_socket.family,
                               self.client_socket.type) as duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return True

    def close(self) -> None:
        result = self.handle.result
        if result is not None and not self.handle.closed:
            AUDIO_SECONDS.inc(result.audio_seconds)
        if self.watcher is not None:
            self.watcher.kill(block=False)
        self.handle.close()
        self.progress.end(self.job.request_id, result, self.handle.cancel_reason)
        while self.cleanups:
            self.cleanups.pop()()


def client_gone(client_socket: Any) -> bool:
    """Blocks until the client's socket is readable; True if the client hung up, False if it sent
    something or the socket cannot be watched (TLS sockets cannot peek, closed ones cannot wait)."""
    try:
        gsocket.wait_read(client_socket.fileno())
        return client_socket.recv(1, socket.MSG_PEEK) == b""
    except ConnectionError:         # a reset: the client closed with our data still unread
        return True
    except (OSError, ValueError):
        return False


def watch_client(client_socket: object, handle: JobHandle) -> gevent.Greenlet:
    """Cancel the job as soon as the client hangs up, instead of at the next failed write (flask #4385)."""
    def watch() -> None:
        if client_gone(client_socket):
            handle.cancel("the client disconnected")
    return gevent.spawn(watch)


# -- response bodies ------------------------------------------------------------------------------
class AudioRun(Protocol):
    """What the bodies below read: a SpeechRun, or a DialogueRun (synthesis/dialogue.py)."""
    info: EngineInfo

    @property
    def request_id(self) -> str: ...

    @property
    def usage(self) -> tuple[int, int]: ...

    def audio(self) -> Iterator[AudioChunk]: ...

    def notes(self) -> list[dict[str, Any]]: ...

    def abort_client(self) -> bool: ...

    def close(self) -> None: ...


def collect_pcm(run: AudioRun) -> bytes:
    """The run's whole audio as one PCM16 string; the run is closed however it ends."""
    try:
        return b"".join(chunk.pcm for chunk in run.audio())
    finally:
        run.close()


def collect_captioned(run: AudioRun) -> tuple[bytes, tuple[tuple[str, float, float], ...]]:
    """The run's whole audio and its words on the audio's timeline (a `timestamps` job); the run is closed."""
    clock, pcm, words = WordClock(run.info.sample_rate), [], []
    try:
        for chunk in run.audio():
            pcm.append(chunk.pcm)
            words += clock.feed(chunk.index, len(chunk.pcm), chunk.words) or ()
    finally:
        run.close()
    return b"".join(pcm), tuple(words)


def whole_file(run: AudioRun, fmt: str, output_rate: int | None = None) -> bytes:
    return off_hub(encode_whole, fmt, collect_pcm(run), run.info.sample_rate, output_rate)


def encode_chunk(encoder: StreamEncoder, pcm: bytes) -> bytes:
    """PCM16 at the engine's rate is a copy; codecs take ~10 ms per second of audio, too long to hold
    the hub, and resampling or G.711 are cheap but not free."""
    return encoder.feed(pcm) if encoder.passthrough else off_hub(encoder.feed, pcm)


def progressive(run: AudioRun, fmt: str, output_rate: int | None = None) -> Iterator[bytes]:
    encoder = StreamEncoder(fmt, run.info.sample_rate, output_rate=output_rate)
    try:
        head = encoder.header()
        for chunk in run.audio():
            data = head + encode_chunk(encoder, chunk.pcm)
            head = b""
            if data:
                yield data
        tail = head + encoder.finish()
        if tail:
            yield tail
    except PoolError as exc:
        if exc.status == 499:       # the client hung up: nobody is left to tell, nothing went wrong here
            log.info("request %s: %s", run.request_id, exc)
            return
        if exc.status == CLIENT_STALLED and run.abort_client():     # unfinished, and no error logged
            log.info("request %s: %s", run.request_id, exc)
            return
        log.error("request %s failed after the stream started: %s", run.request_id, exc)
        raise StreamAborted(str(exc)) from exc
    finally:
        run.close()


def server_sent_events(run: AudioRun, fmt: str, output_rate: int | None = None) -> Iterator[bytes]:
    """The speech event stream (OpenAI's `stream_format: sse`). For wav and pcm the deltas are raw
    PCM16 as `speech.audio.info` describes (clients wrap them in a WAV header themselves); other
    formats send encoded bytes (mulaw, alaw: raw G.711), which the info event's `encoding` names. A job
    with `timestamps` adds a `speech.audio.timestamps` event after each text chunk's deltas."""
    encoder = StreamEncoder("pcm" if fmt in ("wav", "pcm") else fmt, run.info.sample_rate, output_rate=output_rate)
    try:
        yield sse.audio_info(encoder.output_rate, **sse.delta_encoding(encoder.fmt))
        if getattr(run, "loading", False):      # its model loads first: say so before the wait
            yield sse.event({"type": "speech.loading", "model": model_id(run.info.group) if run.info.group
                             else run.info.model, "message": "loading model"})
        head = encoder.header()
        clock = WordClock(run.info.sample_rate)
        for chunk in run.audio():
            for note in run.notes():
                yield sse.event(note)
            data = head + encode_chunk(encoder, chunk.pcm)
            head = b""
            if data:
                yield sse.audio_delta(data)
            words = clock.feed(chunk.index, len(chunk.pcm), chunk.words)
            if words is not None:
                yield sse.audio_timestamps(word_objects(words))
        tail = head + encoder.finish()
        if tail:
            yield sse.audio_delta(tail)
        for note in run.notes():
            yield sse.event(note)
        yield sse.audio_done(*run.usage)
    except PoolError as exc:
        if exc.status == 499:
            log.info("request %s: %s", run.request_id, exc)
            return
        (log.info if exc.status == CLIENT_STALLED else log.error)(
            "request %s failed after the stream started: %s", run.request_id, exc)
        yield sse.error(public_pool_message(str(exc), exc.status, exc.code), exc.code)
    finally:
        run.close()
