"""A dialogue: several voices one after another from one request, independent of Flask.

Chatterbox speaks one voice per generation, so a dialogue is one speech job per turn, orchestrated
here. The first turn is submitted alone, so its first audio comes as early as a single request's;
once it speaks, the next turns join it in the model worker's step scheduler (rows of one batch
where the engine batches), at most `lookahead` turns in flight. Each turn's audio is collected as
it comes, so a turn made ahead never waits on credits (and never parks) while an earlier one
plays; the audio goes out in turn order, with `gap` seconds of silence between turns.

`DialogueRun` answers the response bodies of synthesis/speech.py as a `SpeechRun` does; its
`notes()` are the turn events (`dialogue.turn`, `dialogue.turn.done`) the SSE body sends.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import gevent
import gevent.queue

from chatterbox_server.runtime.pool_client import JobHandle, PoolBusy, PoolClient, PoolError
from chatterbox_server.runtime.progress import Progress
from chatterbox_server.runtime.telemetry import FIRST_AUDIO
from chatterbox_server.synthesis.requests import SpeechRequest, TurnRequest
from chatterbox_server.synthesis.speech import NothingToSay, build_job, client_gone
from chatterbox_server.text.markup import MarkupError
from chatterbox_server.text.speakers import resolve_turns, split_speakers
from workers.engines.base import EngineInfo, VoiceRef
from workers.ipc.protocol import AudioChunk, JobDone, SpeechJob

log = logging.getLogger("chatterbox.dialogue")
DEFAULT_VOICE = "default"
RESUBMIT_INTERVAL = 0.2         # seconds between tries of a turn the job-count cap held back
_DONE = object()


@dataclass(frozen=True)
class DialogueTurn:
    voice_name: str             # the voice as the request named it (for the segments)
    voice: VoiceRef
    text: str                   # the turn's text as written
    job: SpeechJob


@dataclass
class Segment:
    """Where one turn lies in the answer's audio, in seconds from its first sample."""
    turn: int
    voice: str
    text: str
    start: float
    end: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"turn": self.turn, "voice": self.voice, "text": self.text, "start": round(self.start, 3),
                "end": None if self.end is None else round(self.end, 3)}


@dataclass
class _InFlight:
    """One submitted turn: its job's audio, collected by its own greenlet as the worker sends it."""
    handle: JobHandle
    queue: gevent.queue.Queue = field(default_factory=gevent.queue.Queue)
    collector: gevent.Greenlet | None = None


def dialogue_seeds(seed: int, chunk_counts: list[int]) -> list[int]:
    """Each turn's job seed: turn n starts where turn n-1's chunks end, so every chunk of the dialogue
    has its own seed (chunk_seed) and a replay with the same seed is the same dialogue."""
    seeds, offset = [], 0
    for count in chunk_counts:
        seeds.append((seed + offset) % (2**32))
        offset += count
    return seeds


class TurnError(ValueError):
    """A turn that cannot be synthesized (its markup, or nothing to say); `turn` is its index."""

    def __init__(self, turn: int, message: str) -> None:
        super().__init__(message)
        self.turn, self.message = turn, message


def inline_turns(request: SpeechRequest) -> list[TurnRequest] | None:
    """The turns of a text with inline speakers (text/speakers.py), voiced from its `speakers` table
    (the request's voice speaks text before the first label); None for a text without speakers.
    Raises SpeakerError for a label with no voice."""
    turns = split_speakers(request.input)
    if turns is None:
        return None
    voiced = resolve_turns(turns, request.speakers or {}, request.voice or DEFAULT_VOICE)
    return [TurnRequest(text, voice) for voice, text in voiced]


def turn_request(base: SpeechRequest, turn: TurnRequest) -> SpeechRequest:
    """The request-wide fields with this turn's text, voice and settings."""
    overrides: dict[str, Any] = dict(turn.overrides)
    return dataclasses.replace(base, input=turn.text, voice=turn.voice if turn.voice is not None else base.voice,
                               **overrides)


def plan_dialogue(base: SpeechRequest, turns: list[TurnRequest], request_id: str,
                  voice_for: Callable[[str | None], VoiceRef], *, streaming: bool, tags: frozenset[str],
                  seed: int, model: str = "") -> tuple[list[DialogueTurn], tuple[str, ...]]:
    """Every turn's job, built before any is submitted (a bad turn costs no GPU time), each distinct
    voice resolved once; and the expressive tags the engine dropped. Raises TurnError."""
    voices: dict[str | None, VoiceRef] = {}
    built: list[tuple[str, SpeechRequest, SpeechJob]] = []
    dropped: dict[str, None] = {}
    for number, turn in enumerate(turns):
        request = turn_request(base, turn)
        if request.voice not in voices:
            voices[request.voice] = voice_for(request.voice)
        try:
            job, plan = build_job(request, voices[request.voice], request_id, streaming=streaming and number == 0,
                                  tags=tags, seed=0, model=model)
        except MarkupError as exc:
            raise TurnError(number, str(exc)) from exc
        except NothingToSay as exc:
            raise TurnError(number, str(exc)) from exc
        dropped.update(dict.fromkeys(plan.dropped_tags))
        built.append((request.voice or DEFAULT_VOICE, request, job))
    seeds = dialogue_seeds(seed, [job.units for _, _, job in built])
    # trim_edges: a turn's own lead-in and tail silence goes, so the gap between turns is the one asked for
    return ([DialogueTurn(name, job.voice, request.input, dataclasses.replace(job, seed=turn_seed, trim_edges=True))
             for (name, request, job), turn_seed in zip(built, seeds, strict=True)], tuple(dropped))


class DialogueRun:
    """The turns of one dialogue admitted to the pool, their audio in order with gaps."""

    def __init__(self, pool: PoolClient, turns: list[DialogueTurn], info: EngineInfo, request_id: str,
                 progress: Progress, *, gap_seconds: float, lookahead: int, seed: int,
                 first_alone: bool = True) -> None:
        if not turns:
            raise ValueError("a dialogue needs at least one turn")
        self.pool, self.turns, self.info, self.request_id = pool, turns, info, request_id
        self.progress, self.seed = progress, seed
        self.gap_samples = round(gap_seconds * info.sample_rate)
        self.lookahead = max(1, lookahead)
        self.first_alone = first_alone      # a listener waits for the first audio; a whole file does not
        self.flights: dict[int, _InFlight] = {}
        self.next_to_submit = 0
        self.segments: list[Segment] = []
        self.pending_notes: list[dict[str, Any]] = []
        self.tokens = [0, 0]                    # input, output
        self.samples = 0
        self.synth_seconds = 0.0
        self.chunks_done = 0
        self.first: AudioChunk | None = None
        self._stream: Iterator[AudioChunk] | None = None
        self.watcher: gevent.Greenlet | None = None
        self.client_socket: object | None = None
        self.cancel_reason: str | None = None
        self.closed = False
        self.started = time.monotonic()
        self.cleanups: list[Any] = []

    # -- the interface of SpeechRun ---------------------------------------------------------------
    @classmethod
    def start(cls, pool: PoolClient, turns: list[DialogueTurn], info: EngineInfo, request_id: str,
              client_socket: object | None, progress: Progress, *, gap_seconds: float, lookahead: int,
              seed: int, first_alone: bool = True) -> DialogueRun:
        """Admits the first turn and waits for its first audio, as SpeechRun.start does. `first_alone`
        (a streamed answer): the other turns start once the first has audio, so that it comes as
        early as a single request's; else (a whole file) `lookahead` turns start at once."""
        run = cls(pool, turns, info, request_id, progress, gap_seconds=gap_seconds, lookahead=lookahead, seed=seed,
                  first_alone=first_alone)
        progress.begin(request_id, sum(turn.job.units for turn in turns), turns[0].text[:80])
        try:
            run._submit(0, admitted=False)
            if not first_alone:
                run._top_up(0)
            if client_socket is not None:
                run.client_socket = client_socket
                run.watcher = gevent.spawn(run._watch_client, client_socket)
            run._stream = run._in_order()
            run.first = next(run._stream, None)
        except BaseException:
            run.close()
            raise
        FIRST_AUDIO.observe(time.monotonic() - run.started)
        return run

    def audio(self) -> Iterator[AudioChunk]:
        if self.first is not None:
            yield self.first
        if self._stream is not None:
            yield from self._stream

    def notes(self) -> list[dict[str, Any]]:
        """The turn events since the last call, for the SSE body (before the audio they describe)."""
        notes, self.pending_notes = self.pending_notes, []
        return notes

    @property
    def usage(self) -> tuple[int, int]:
        return self.tokens[0], self.tokens[1]

    @property
    def result(self) -> JobDone:
        return JobDone(self.tokens[0], self.tokens[1], self.samples / self.info.sample_rate, self.synth_seconds)

    def abort_client(self) -> bool:
        return False        # a stalled client is cut by the per-turn jobs' own failure (408)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.watcher is not None:
            self.watcher.kill(block=False)
        for flight in list(self.flights.values()):
            self._stop(flight)
        self.flights.clear()
        self.progress.end(self.request_id, self.result, self.cancel_reason)
        while self.cleanups:
            self.cleanups.pop()()

    # -- submitting -----------------------------------------------------------------------------
    def _submit(self, index: int, admitted: bool) -> None:
        handle = self.pool.submit(self.turns[index].job, admitted=admitted)
        flight = _InFlight(handle)
        flight.collector = gevent.spawn(self._collect, flight)
        self.flights[index] = flight
        self.next_to_submit = index + 1

    def _collect(self, flight: _InFlight) -> None:
        try:
            for chunk in flight.handle.chunks():
                flight.queue.put(chunk)
            flight.queue.put(_DONE)
        except PoolError as exc:
            flight.queue.put(exc)
        except gevent.GreenletExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which raises it
            flight.queue.put(exc)

    def _top_up(self, playing: int) -> None:
        """Submit further turns while fewer than `lookahead` are in flight from `playing` on; a turn the
        job-count cap holds back waits for a later call (or for _await_submission)."""
        while (self.cancel_reason is None and self.next_to_submit < len(self.turns)
               and self.next_to_submit - playing < self.lookahead):
            try:
                self._submit(self.next_to_submit, admitted=True)
            except PoolBusy:
                return

    def _await_submission(self, index: int) -> None:
        """Turn `index` is due and not yet submitted: try until the pool takes it or the queue timeout."""
        deadline = time.monotonic() + max(self.pool.queue_timeout, RESUBMIT_INTERVAL)
        while True:
            try:
                self._submit(index, admitted=True)
                return
            except PoolBusy:
                if time.monotonic() >= deadline:
                    raise
                gevent.sleep(RESUBMIT_INTERVAL)

    # -- the audio, in order --------------------------------------------------------------------
    def _in_order(self) -> Iterator[AudioChunk]:
        samples, index_base = 0, 0
        for number, turn in enumerate(self.turns):
            if self.cancel_reason is not None:
                raise PoolError(f"cancelled: {self.cancel_reason}", status=499, code="cancelled")
            if number not in self.flights:
                self._await_submission(number)
            segment = Segment(number, turn.voice_name, turn.text, samples / self.info.sample_rate)
            self.segments.append(segment)
            self.pending_notes.append({"type": "dialogue.turn", **segment.as_dict()})
            last_index = index_base
            for chunk in self._turn_audio(number):
                last_index = index_base + chunk.index
                samples += len(chunk.pcm) // 2
                yield dataclasses.replace(chunk, index=last_index)
                if number == 0 and self.first_alone and self.next_to_submit == 1:
                    self._top_up(0)         # the first turn's audio is out: the others may start now
            segment.end = samples / self.info.sample_rate
            self.pending_notes.append({"type": "dialogue.turn.done", "turn": number,
                                       "start": round(segment.start, 3), "end": round(segment.end, 3)})
            index_base += turn.job.units
            self._top_up(number + 1)
            if number < len(self.turns) - 1 and self.gap_samples:
                samples += self.gap_samples
                self.samples += self.gap_samples
                yield AudioChunk(last_index, bytes(2 * self.gap_samples), 0, 0, 0.0)

    def _turn_audio(self, number: int) -> Iterator[AudioChunk]:
        flight = self.flights[number]
        while True:
            item = flight.queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            self.chunks_done += 1
            self.progress.chunk_done(self.request_id, self.chunks_done)
            self.tokens[0] += item.input_tokens
            self.tokens[1] += item.output_tokens
            self.samples += len(item.pcm) // 2
            self.synth_seconds += item.synth_seconds
            yield item
        del self.flights[number]
        flight.handle.close()

    # -- endings --------------------------------------------------------------------------------
    def _stop(self, flight: _InFlight) -> None:
        if flight.collector is not None:
            flight.collector.kill(block=False)
        flight.handle.close()

    def _watch_client(self, client_socket: object) -> None:
        if client_gone(client_socket):
            self.cancel("the client disconnected")

    def cancel(self, reason: str) -> None:
        """Stop every turn in flight from another greenlet; the consumer gets PoolError 499."""
        self.cancel_reason = reason
        for number, flight in list(self.flights.items()):
            flight.handle.cancel(reason)
            flight.queue.put(PoolError(f"cancelled: {reason}", status=499, code="cancelled"))
            log.info("dialogue %s: turn %d cancelled: %s", self.request_id, number, reason)
