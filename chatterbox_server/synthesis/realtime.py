"""The session core of the streaming-input sockets: contexts that take text as an LLM writes it.

One :class:`Session` serves one WebSocket, whatever its wire protocol (ours or a vendor's: see
``chatterbox_server/api/realtime/``). The protocol layer calls ``open``/``append``/``flush``/
``end``/``cancel``/``close`` from the socket's reading greenlet, and gets :data:`Event` values
back through the ``emit`` callable it supplied (its one writer turns them into frames).

A :class:`Context` is one turn. Its text goes through a :class:`Segmenter` (the first segment as
early as it can sound right, later ones at sentence ends) and every segment becomes one
``SpeechJob`` of one chunk on the model pool, so socket turns are batched with the HTTP requests
by the model worker's step scheduler. Segments are synthesized one after the other, in order,
with the context's voice and settings and seed ``seed + segment index`` (the same schedule as a
chunked HTTP job), so a turn replays identically for the same text and cuts.

Look-ahead (the seed's "buffer prediction"): a context's next segment starts only while the
listener holds less than ``lookahead_seconds`` of unplayed audio, counted as audio sent minus the
wall time since the context's first audio; within a segment, the job's credits bound it. So a
turn that is interrupted wastes at most about that much synthesis.

Cancel (barge-in) closes the context's running job, which the model worker drops before its next
step, forgets its text and emits :class:`Cancelled` at once; the writer drops every audio event of
a cancelled context still queued (``Session.live``), so none follows the acknowledgement. A
failure of one segment fails its context (:class:`ContextFailed`), never the socket, and never
silently: the audio already sent stands, the rest of that turn is not made.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import gevent.event

from chatterbox_server.audio.timings import WordClock
from chatterbox_server.runtime.pool_client import JobHandle, PoolBusy, PoolClient, PoolError
from chatterbox_server.runtime.telemetry import AUDIO_SECONDS, FIRST_AUDIO, REALTIME_CONTEXTS
from chatterbox_server.security.redact import public_pool_message
from chatterbox_server.synthesis.speech import plan_text
from chatterbox_server.text.markup import MarkupError
from chatterbox_server.text.segmenter import Segment, Segmenter, SegmentPolicy, TurnClosed
from chatterbox_server.text.speakers import split_speakers
from workers.engines.base import EngineInfo, SynthesisSettings, VoiceRef
from workers.ipc.protocol import AudioChunk, SpeechJob, chunk_seed

log = logging.getLogger("chatterbox.realtime")
CANCELLED_BY_CLIENT = "cancelled by the client"


class SessionError(Exception):
    """A command the session refuses; the protocol layer answers it with an error event."""

    def __init__(self, message: str, context_id: str | None = None, code: str = "invalid_request",
                 status: int = 400, retry_after: int | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.context_id = context_id
        self.param = param
        self.code = code
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class ContextSettings:
    """What one context speaks with, fixed when it opens."""
    voice: VoiceRef
    settings: SynthesisSettings
    seed: int
    policy: SegmentPolicy = field(default_factory=SegmentPolicy)
    timestamps: bool = False
    buffer_size: int = 3                # audio messages a segment's job may run ahead of the writer
    tags: frozenset[str] = frozenset()  # expressive tags the engine performs (others are dropped)
    # inline speakers: normalized label ("s1", "speaker1") -> voice; [voice:NAME] goes through voice_for
    speakers: dict[str, VoiceRef] = field(default_factory=dict)
    voice_for: Callable[[str], VoiceRef] | None = None
    model: str = ""                     # the served model its segments go to


@dataclass(frozen=True)
class SessionLimits:
    max_contexts: int = 8
    max_context_chars: int = 100_000
    lookahead_seconds: float = 8.0


@dataclass(frozen=True)
class Usage:
    characters: int = 0
    segments: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    audio_seconds: float = 0.0


# -- events, session -> protocol layer ------------------------------------------------------------
@dataclass(frozen=True)
class Audio:
    context_id: str
    sequence: int                       # 0, 1, 2 ... within the context
    pcm: bytes                          # PCM16 mono at the engine's sample rate
    segment: int
    start: float                        # seconds from the context's first sample
    serial: int                         # the context's number in its session (Session.live)
    synth_seconds: float = 0.0          # what the model worker spent on it
    segment_start: float = 0.0          # where its segment's audio starts, seconds from the context's start
    # on the last audio of a segment, when the context asked for timestamps: the segment's words, in
    # seconds from the context's first sample
    words: tuple[tuple[str, float, float], ...] | None = None


@dataclass(frozen=True)
class Flushed:
    context_id: str
    flush_id: object                    # the client's own id, echoed; None if it sent none
    serial: int


@dataclass(frozen=True)
class Done:
    context_id: str
    usage: Usage
    serial: int


@dataclass(frozen=True)
class Cancelled:
    context_id: str
    reason: str
    serial: int


@dataclass(frozen=True)
class ContextFailed:
    context_id: str
    message: str
    code: str
    status: int
    serial: int
    retry_after: int | None = None


Event = Audio | Flushed | Done | Cancelled | ContextFailed


@dataclass(frozen=True)
class _FlushMark:
    flush_id: object


class Context:
    """One turn: its segmenter, the segments waiting for synthesis and the greenlet that runs them."""

    def __init__(self, session: Session, context_id: str, settings: ContextSettings) -> None:
        self.session = session
        self.id = context_id
        self.serial = session.next_serial()
        self.settings = settings
        self.voice = settings.voice         # an inline speaker marker changes it for the rest of the turn
        self.segmenter = Segmenter(settings.policy)
        self.pending: deque[Segment | _FlushMark] = deque()
        self.wake = gevent.event.Event()
        self.characters = 0
        self.sequence = 0
        self.samples = 0                # audio sent so far, at the engine's rate
        self.first_audio_at: float | None = None
        self.usage = Usage()
        self.handle: JobHandle | None = None
        self.cancelled = False
        self.finished = False
        self.flushes_pending = 0        # acknowledged flushes whose audio is still to come
        self.opened = session.clock()
        self.last_activity = self.opened
        self.greenlet = gevent.spawn(self._run)

    # -- commands (from the reading greenlet) ---------------------------------------------------
    def append(self, text: str) -> None:
        if self.characters + len(text) > self.session.limits.max_context_chars:
            raise SessionError(f"context {self.id!r} would hold more than "
                               f"{self.session.limits.max_context_chars} characters; end it and open another",
                               self.id, code="context_too_long", status=413)
        try:
            released = self.segmenter.push(text, self.session.clock())
        except TurnClosed:
            raise SessionError(f"context {self.id!r} has ended; its text cannot grow", self.id,
                               code="context_closed", status=409) from None
        self.characters += len(text)
        self._queue(released)

    def flush(self, flush_id: object = None, ack: bool = True) -> None:
        """Release what is buffered now; `ack`: emit Flushed once its audio has been sent."""
        if self.segmenter.closed:
            raise SessionError(f"context {self.id!r} has ended", self.id, code="context_closed", status=409)
        released = self.segmenter.flush(self.session.clock())
        self.flushes_pending += ack
        self._queue([*released, _FlushMark(flush_id)] if ack else released)

    def end(self, discard_unreleased: bool = False) -> None:
        """No more text: speak what is buffered (or drop it: `discard_unreleased`), then Done."""
        if not self.segmenter.closed:
            released = self.segmenter.close(self.session.clock())
            self._queue([] if discard_unreleased else released)

    def cancel(self) -> None:
        self.cancelled = True
        self.pending.clear()
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.cancel(CANCELLED_BY_CLIENT)
        self.wake.set()

    @property
    def idle(self) -> bool:
        """Nothing buffered, nothing waiting or being synthesized: the turn waits for its text."""
        return (not self.pending and self.handle is None and not self.segmenter.buffered.strip()
                and not self.finished)

    def _queue(self, items: list) -> None:
        self.last_activity = self.session.clock()
        if items:
            self.pending.extend(items)
        self.wake.set()

    # -- the synthesis greenlet ------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.cancelled:
                if self.pending:
                    item = self.pending.popleft()
                    if isinstance(item, _FlushMark):
                        self.flushes_pending -= 1
                        self.session.emit(Flushed(self.id, item.flush_id, self.serial))
                    else:
                        self._wait_for_listener()
                        if not self.cancelled:
                            self._synthesize(item)
                    continue
                if self.segmenter.closed:
                    self.finished = True
                    REALTIME_CONTEXTS.labels("done").inc()
                    self.session.emit(Done(self.id, self.usage, self.serial))
                    return
                self._wait_for_text()
        except PoolError as exc:
            if not self.cancelled:
                self._failed(exc)
        except Exception as exc:  # noqa: BLE001 - one context's bug must not take the socket down
            log.exception("realtime context %s failed", self.id)
            if not self.cancelled:
                self._failed(PoolError(f"internal error: {type(exc).__name__}", status=500, code="server_error"))
        finally:
            self.finished = True
            self.session.forget(self)

    def _wait_for_text(self) -> None:
        deadline = self.segmenter.next_deadline()
        timeout = None if deadline is None else max(0.0, deadline - self.session.clock())
        self.wake.wait(timeout)
        self.wake.clear()
        if not self.cancelled:
            self.pending.extend(self.segmenter.poll(self.session.clock()))

    def _wait_for_listener(self) -> None:
        """Hold the next segment while the listener has `lookahead_seconds` of audio still to play."""
        while not self.cancelled:
            ahead = self.buffered_audio()
            if ahead < self.session.limits.lookahead_seconds:
                return
            self.wake.wait(min(ahead - self.session.limits.lookahead_seconds + 0.01, 1.0))
            self.wake.clear()

    def buffered_audio(self) -> float:
        if self.first_audio_at is None:
            return 0.0
        sent = self.samples / self.session.info.sample_rate
        return sent - (self.session.clock() - self.first_audio_at)

    def _synthesize(self, segment: Segment) -> None:
        for part, (voice, text) in enumerate(self._voiced_parts(segment.text)):
            if self.cancelled:
                return
            self._synthesize_part(segment, voice, text, part)

    def _voiced_parts(self, text: str) -> list[tuple[VoiceRef, str]]:
        """The segment in its voices: an inline speaker marker switches the context's voice from there
        on (text/speakers.py); a label without a voice fails the context (PoolError 400)."""
        turns = split_speakers(text)
        if turns is None:
            return [(self.voice, text)]
        parts = []
        for turn in turns:
            if turn.voice is not None:
                self.voice = self._named_voice(turn.voice)
            elif turn.label is not None:
                if turn.label not in self.settings.speakers:
                    raise PoolError(f"speaker {turn.written_label or turn.label!r} has no voice; give it one in "
                                    "the session's `speakers`", status=400, code="invalid_value")
                self.voice = self.settings.speakers[turn.label]
            parts.append((self.voice, turn.text))
        return parts

    def _named_voice(self, name: str) -> VoiceRef:
        if self.settings.voice_for is None:
            raise PoolError(f"[voice:{name}] cannot be used on this socket", status=400, code="invalid_value")
        try:
            return self.settings.voice_for(name)
        except SessionError as exc:
            raise PoolError(str(exc), status=400, code="voice_not_found") from None

    def _synthesize_part(self, segment: Segment, voice: VoiceRef, text: str, part: int) -> None:
        session, settings = self.session, self.settings
        try:
            plan = plan_text(text, "sentence", settings.policy.max_chars, tags=settings.tags,
                             speed=settings.settings.speed)
        except MarkupError as exc:
            raise PoolError(f"segment {segment.index}: {exc}", status=400, code="invalid_markup") from None
        if not plan.chunks:
            return          # only pauses or dropped tags: nothing to say
        job = SpeechJob(request_id=f"{session.id}-{self.id}-{segment.index}-{part}"[:120], chunks=plan.chunks,
                        settings=settings.settings, voice=voice,
                        seed=chunk_seed(settings.seed, segment.index + part), buffer_size=settings.buffer_size,
                        text_preview=text[:80], timestamps=settings.timestamps, chunk_speeds=plan.speeds,
                        lead_pause=plan.lead_pause, pauses_after=plan.pauses_after, model=settings.model)
        submitted = session.clock()
        handle = session.pool.submit(job, admitted=self.usage.segments > 0)
        self.handle = handle
        segment_start = self.samples / session.info.sample_rate
        clock = WordClock(session.info.sample_rate, segment_start)
        try:
            chunks = handle.chunks()
            for chunk in chunks:
                if self.cancelled:
                    return
                self._send_audio(chunk, segment, segment_start, submitted, clock)
            result = handle.result
        finally:
            if self.handle is handle:
                self.handle = None
            handle.close()
        if result is not None:
            AUDIO_SECONDS.inc(result.audio_seconds)
            usage = self.usage
            self.usage = Usage(usage.characters + len(text), usage.segments + (part == 0),
                               usage.input_tokens + result.input_tokens, usage.output_tokens + result.output_tokens,
                               round(self.samples / session.info.sample_rate, 3))

    def _send_audio(self, chunk: AudioChunk, segment: Segment, segment_start: float, submitted: float,
                    clock: WordClock) -> None:
        now = self.session.clock()
        if self.first_audio_at is None:
            self.first_audio_at = now
            FIRST_AUDIO.observe(now - submitted)
        start = self.samples / self.session.info.sample_rate
        self.samples += len(chunk.pcm) // 2
        self.last_activity = now
        words = clock.feed(chunk.index, len(chunk.pcm), chunk.words)   # on the context's timeline
        self.session.emit(Audio(self.id, self.sequence, chunk.pcm, segment.index, start, self.serial,
                                chunk.synth_seconds, segment_start, words))
        self.sequence += 1

    def _failed(self, exc: PoolError) -> None:
        REALTIME_CONTEXTS.labels("failed").inc()
        retry_after = exc.retry_after if isinstance(exc, PoolBusy) else None
        self.session.emit(ContextFailed(self.id, public_pool_message(str(exc), exc.status, exc.code), exc.code,
                                        exc.status, self.serial, retry_after))


class Session:
    """The contexts of one socket. Every method runs in the socket's reading greenlet but `emit`,
    which the contexts' greenlets call too."""

    def __init__(self, pool: PoolClient, info: EngineInfo, emit: Callable[[Event], None],
                 limits: SessionLimits | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.pool = pool
        self.info = info
        self.emit = emit
        self.limits = limits or SessionLimits()
        self.clock = clock
        self.contexts: dict[str, Context] = {}
        self.closed = False
        self._serials = 0
        self._cancelled: set[int] = set()

    def next_serial(self) -> int:
        self._serials += 1
        return self._serials

    def admit(self) -> None:
        """Raise PoolError (503) or PoolBusy (429 with a retry hint) when a new turn could not start
        now: checked when the socket opens, before any GPU time is spent."""
        self.pool.admit(model=self.info.group or None)

    # -- commands ---------------------------------------------------------------------------------
    def open(self, context_id: str, settings: ContextSettings) -> Context:
        if context_id in self.contexts:
            raise SessionError(f"context {context_id!r} is already open", context_id, code="context_exists",
                               status=409)
        if len(self.contexts) >= self.limits.max_contexts:
            self._evict_for(context_id)
        context = Context(self, context_id, settings)
        self.contexts[context_id] = context
        return context

    def get(self, context_id: str) -> Context:
        context = self.contexts.get(context_id)
        if context is None:
            raise SessionError(f"no open context {context_id!r}", context_id, code="context_not_found", status=404)
        return context

    def append(self, context_id: str, text: str) -> None:
        self.get(context_id).append(text)

    def flush(self, context_id: str, flush_id: object = None, ack: bool = True) -> None:
        self.get(context_id).flush(flush_id, ack)

    def end(self, context_id: str, discard_unreleased: bool = False) -> None:
        self.get(context_id).end(discard_unreleased)

    def cancel(self, context_id: str, reason: str = CANCELLED_BY_CLIENT) -> bool:
        """Barge-in: drop the context's text and stop its job; False if it was not open."""
        context = self.contexts.pop(context_id, None)
        if context is None:
            return False
        context.cancel()
        self._cancelled.add(context.serial)
        REALTIME_CONTEXTS.labels("cancelled" if reason == CANCELLED_BY_CLIENT else "evicted").inc()
        self.emit(Cancelled(context_id, reason, context.serial))
        return True

    def close(self) -> None:
        """The socket is gone or closing: every context stops now (nothing is acknowledged)."""
        self.closed = True
        for context in list(self.contexts.values()):
            context.cancel()
            self._cancelled.add(context.serial)
            REALTIME_CONTEXTS.labels("disconnected").inc()
        self.contexts.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every context has finished; False on timeout."""
        greenlets = [context.greenlet for context in self.contexts.values()]
        done = gevent.joinall(greenlets, timeout=timeout)
        return len(done) == len(greenlets)

    # -- state the protocol layer reads -----------------------------------------------------------
    def live(self, serial: int) -> bool:
        """Whether audio of this context may still be sent: not cancelled, evicted or closed (it may
        have finished: its last events are still on their way)."""
        return serial not in self._cancelled

    def busy(self) -> bool:
        """Some context has text buffered or is synthesizing: the socket is not idle."""
        return any(not context.idle for context in self.contexts.values())

    def forget(self, context: Context) -> None:
        if self.contexts.get(context.id) is context and context.finished:
            del self.contexts[context.id]

    def _evict_for(self, context_id: str) -> None:
        idle = sorted((context for context in self.contexts.values() if context.idle),
                      key=lambda context: context.last_activity)
        if not idle:
            raise SessionError(f"this socket already has {self.limits.max_contexts} contexts open and none is "
                               "idle; close or cancel one first", context_id, code="too_many_contexts", status=429)
        self.cancel(idle[0].id, reason=f"closed to make room for context {context_id!r} (at most "
                                       f"{self.limits.max_contexts} open)")
