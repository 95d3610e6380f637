"""Segment a turn's text as it arrives, in LLM deltas, into the pieces synthesized one at a time.

One :class:`Segmenter` holds one turn (one context of a voice-agent socket). The caller pushes
text as it arrives and gets back the segments that are ready; it owns the clock (``now``, any
monotonic seconds) and the timer, so this module is pure: no I/O, no threads, no sleeping.

- ``push(delta, now)`` appends text. Deltas may split words, be single characters, hold several
  sentences; only their concatenation matters (see "Determinism").
- ``poll(now)`` releases text that has waited longer than the policy's maximum delay;
  ``next_deadline()`` says when a poll would release something (None: not before the next push).
- ``flush(now)`` releases everything buffered, mid-word if that is where the text stops; the turn
  stays open. ``close(now)`` does the same and ends the turn (a later push raises TurnClosed).

Each :class:`Segment` has its text (whitespace-trimmed, never empty), its index in the turn, its
``start``/``end`` offsets in the turn's full text (all deltas joined, so ``full[start:end] ==
text`` and word timings can be mapped back) and the ``reason`` it was cut; ``forced`` is true for
the cuts the caller's clock or commands made (delay, flush, close).

The policy (:class:`SegmentPolicy`, frozen; defaults are the ``adaptive`` mode):

``adaptive`` (our own)
  The first segment goes out as early as it can sound right, at the earliest of: a clause or
  sentence end (``, ; : —``, CJK ``，、；：``, ``. ! ? …``) once it holds ``first_min_words``
  (1: a clause end is a pause the speaker makes anyway, so "Hello," alone sounds right); the end
  of the ``first_max_words``-th word (6: some 2.4 s of speech, which covers the synthesis of the
  next segment, and at an LLM's 30-100 tokens/s it arrives within 100-250 ms); or, once its
  oldest text has waited ``first_max_delay`` (0.25 s: a slow or stalled LLM), the last word
  boundary buffered. Later segments end at sentence ends (one sentence each, so synthesis starts
  as soon as a sentence is whole; the session core joins them), or after ``max_delay`` (1 s: an
  LLM stalled mid-sentence, e.g. on a tool call, should not starve the listener) at the last word
  boundary.
``schedule`` (ElevenLabs' ``chunk_length_schedule``)
  The n-th segment is released at the first word (or clause/sentence) boundary at which it holds
  at least ``schedule[n]`` characters, the last value repeating; no delay by default, as there.
``sentence`` (ElevenLabs' ``auto_mode``)
  Every segment, the first too, ends at a sentence end; no delay by default.

In every mode no segment is longer than ``max_chars`` (300: our "high" preset's chunk size, the
longest a Chatterbox generation keeps well, and over the schedule's usual 290). A segment that
would be longer is cut at its last sentence or clause end within ``max_chars``, else at its last
word boundary, else (one word longer than ``max_chars``, the only cut inside a word that the
policy itself makes) at ``max_chars``, keeping combining marks with their letter.

Sentence, clause and abbreviation rules are :mod:`chatterbox_server.text.chunking`'s, the same the
HTTP streams use: "Dr. Smith paid $3.50." is one sentence, as are "e.g. this" and "3.14"; an
ellipsis, like a period, ends a sentence unless a lowercase letter follows.

Determinism. Whether a position ends a sentence depends on what follows it ("3." then "14", "Dr."
then "Smith", "no." then "5"), so a boundary is decided only once the next visible character after
it has arrived: the segmenter looks one visible character past every cut it makes by itself, and
always takes the earliest decided cut. A decided cut stays decided however the text grows, so
without a timer firing the segments depend only on the text (and where flushes fall in it), never
on how it was split into deltas. The cost is one more token of latency at each cut; a flush, a
close or the delay releases the text without waiting for it.

The delay clock of a segment starts when its first visible character arrived, or when the
previous segment was released if that is later (text left over after a cut starts waiting then),
so a stalled LLM's words are released in groups, not one by one.

Whitespace between segments belongs to none (it is where they join); after a flush the next
segment follows the later-segments rule, and the schedule's index counts every segment released.
The caller bounds the text of a turn (the session's limits); the buffer holds only the text not
yet released: about ``max_chars`` visible characters at most, and the whitespace after them.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

# The chunker's own rules (its private helpers), shared rather than duplicated, so that the HTTP
# streams and the sockets cut sentences alike.
from chatterbox_server.text.chunking import CJK_TERMINATOR, WORD, clause_cuts, sentence_cuts

Mode = Literal["adaptive", "schedule", "sentence"]
Reason = Literal["sentence", "clause", "words", "schedule", "length", "delay", "flush", "close"]
MODES: tuple[Mode, ...] = ("adaptive", "schedule", "sentence")
FORCED: frozenset[str] = frozenset({"delay", "flush", "close"})
ELEVENLABS_SCHEDULE = (120, 160, 250, 290)


class TurnClosed(RuntimeError):
    """Text was pushed to a turn after its close."""


@dataclass(frozen=True)
class SegmentPolicy:
    """How a turn's text is cut; see the module docstring for each mode and default."""

    mode: Mode = "adaptive"
    max_chars: int = 300
    first_min_words: int = 1
    first_max_words: int = 6
    first_max_delay: float | None = 0.25
    max_delay: float | None = 1.0
    schedule: tuple[int, ...] = field(default=ELEVENLABS_SCHEDULE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", tuple(self.schedule))
        if self.mode not in MODES:
            raise ValueError(f"unknown segmenting mode {self.mode!r}; expected one of {MODES}")
        if self.max_chars < 1 or self.first_min_words < 1 or self.first_max_words < 1:
            raise ValueError("max_chars, first_min_words and first_max_words must be >= 1")
        for delay in (self.first_max_delay, self.max_delay):
            if delay is not None and delay < 0:
                raise ValueError(f"a delay must be >= 0 or None, got {delay}")
        if not self.schedule or any(not isinstance(n, int) or n < 1 for n in self.schedule):
            raise ValueError(f"a schedule is a non-empty list of positive character counts, got {self.schedule}")

    @classmethod
    def chunk_schedule(cls, schedule: tuple[int, ...] | list[int] = ELEVENLABS_SCHEDULE,
                       max_chars: int = 300) -> SegmentPolicy:
        """ElevenLabs' ``generation_config.chunk_length_schedule``: thresholds over ``max_chars`` cap at it."""
        return cls(mode="schedule", schedule=tuple(schedule), max_chars=max_chars,
                   first_max_delay=None, max_delay=None)

    @classmethod
    def whole_sentences(cls, max_chars: int = 300) -> SegmentPolicy:
        """ElevenLabs' ``auto_mode``: whole sentences only."""
        return cls(mode="sentence", max_chars=max_chars, first_max_delay=None, max_delay=None)


@dataclass(frozen=True)
class Segment:
    """One piece of a turn to synthesize, and where it lies in the turn's full text."""

    text: str
    index: int
    start: int
    end: int
    reason: Reason

    @property
    def forced(self) -> bool:
        """Cut by the caller's clock or command (delay, flush, close), not by the text alone."""
        return self.reason in FORCED


class Segmenter:
    """The buffer of one turn: push text in, get segments out (see the module docstring)."""

    def __init__(self, policy: SegmentPolicy | None = None) -> None:
        self.policy = policy or SegmentPolicy()
        self._buffer = ""             # text not yet released; never starts with whitespace
        self._base = 0                # offset of the buffer's first character in the turn's text
        self._index = 0               # index of the next segment
        self._released_at = float("-inf")
        self._arrivals: deque[tuple[int, float]] = deque()   # (offset where a delta starts, its time)
        self._closed = False

    @property
    def buffered(self) -> str:
        """The text pushed and not yet released (leading whitespace dropped)."""
        return self._buffer

    @property
    def length(self) -> int:
        """How many characters the turn's text has: the end offset of the next push."""
        return self._base + len(self._buffer)

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def segments_released(self) -> int:
        return self._index

    def push(self, delta: str, now: float) -> list[Segment]:
        """Append text; return the segments it completes (and any whose delay has run out)."""
        if self._closed:
            raise TurnClosed("text pushed to a closed turn")
        if delta:
            self._arrivals.append((self.length, now))
            self._buffer += delta
            self._drop_leading_whitespace()
        segments = self._release_decided(now)
        return segments + self._release_late(now)

    def poll(self, now: float) -> list[Segment]:
        """Release text that has waited longer than the policy's maximum delay."""
        return self._release_decided(now) + self._release_late(now)

    def next_deadline(self) -> float | None:
        """When a poll would release something, if no push comes first; None: not until a push."""
        delay = self._delay()
        if self._closed or delay is None or not self._buffer or self._late_cut() is None:
            return None
        return self._waiting_since() + delay

    def flush(self, now: float) -> list[Segment]:
        """Release everything buffered, even a word in progress; the turn stays open."""
        return self._release_all(now, "flush")

    def close(self, now: float) -> list[Segment]:
        """Release everything buffered and end the turn; closing twice releases nothing."""
        if self._closed:
            return []
        segments = self._release_all(now, "close")
        self._closed = True
        return segments

    # --- the cuts -------------------------------------------------------------------------------

    def _release_decided(self, now: float) -> list[Segment]:
        segments = []
        while (cut := self._decided_cut()) is not None:
            segments.append(self._emit(*cut, now))
        return segments

    def _release_late(self, now: float) -> list[Segment]:
        delay = self._delay()
        if delay is None or not self._buffer or now < self._waiting_since() + delay:
            return []
        cut = self._late_cut()
        return [] if cut is None else [self._emit(cut, "delay", now)]

    def _release_all(self, now: float, reason: Reason) -> list[Segment]:
        segments = self._release_decided(now)
        if self._buffer:                      # under max_chars visible, or a cut would be decided
            segments.append(self._emit(len(self._buffer), reason, now))   # leaves no whitespace either
        return segments

    def _decided_cut(self) -> tuple[int, Reason] | None:
        """The earliest cut the text alone decides, as (offset in the buffer, reason)."""
        text = self._buffer
        last_visible = len(text.rstrip()) - 1
        if last_visible < 0:
            return None
        limit = min(last_visible, self.policy.max_chars)      # decided, and the segment fits
        mode = self.policy.mode
        if mode == "schedule" and last_visible < min(self._threshold(), self.policy.max_chars):
            return None                   # too short for the schedule and for max_chars: skip the scan
        inside = _BracketSpans(text).covers
        sentences = {cut for cut in sentence_cuts(text, 0, len(text)) if 0 < cut <= limit and not inside(cut)}
        if mode == "schedule":
            cut = self._schedule_cut(text, limit, sentences)
            if cut is not None:
                return cut, "schedule"
        elif mode == "adaptive" and self._index == 0:
            found = self._first_cut(text, limit, sentences)
            if found is not None:
                return found
        elif sentences:
            return min(sentences), "sentence"
        if last_visible >= self.policy.max_chars:
            return self._length_cut(text, sentences), "length"
        return None

    def _first_cut(self, text: str, limit: int, sentences: set[int]) -> tuple[int, Reason] | None:
        clauses = _clauses(text, limit)
        enough = [cut for cut in sentences | clauses
                  if len(WORD.findall(text, 0, cut)) >= self.policy.first_min_words]
        ends = _word_ends(text, limit)
        if len(ends) >= self.policy.first_max_words:
            enough.append(ends[self.policy.first_max_words - 1])
        cut = min(enough, default=None)
        if cut is None:
            return None
        return cut, "sentence" if cut in sentences else "clause" if cut in clauses else "words"

    def _schedule_cut(self, text: str, limit: int, sentences: set[int]) -> int | None:
        threshold = self._threshold()
        clauses = _clauses(text, limit)
        boundaries = sorted(sentences | clauses | set(_word_ends(text, limit)))
        return next((cut for cut in boundaries if len(text[:cut].rstrip()) >= threshold), None)

    def _length_cut(self, text: str, sentences: set[int]) -> int:
        """Where to cut a segment that would be over ``max_chars``: the text reaches past it."""
        most = self.policy.max_chars
        punctuation = sentences | _clauses(text, most)
        if punctuation:
            return max(punctuation)
        spaces = _word_ends(text, most)
        if spaces:
            return spaces[-1]
        cut = most                      # one word longer than max_chars
        while 1 < cut and unicodedata.combining(text[cut]):
            cut -= 1
        return cut

    def _late_cut(self) -> int | None:
        """The last boundary buffered, for a segment that waited too long: never inside a word."""
        text = self._buffer
        cuts = _word_ends(text, len(text))
        cuts += clause_cuts(text, 0, len(text))
        cuts += [match.end() for match in CJK_TERMINATOR.finditer(text)]
        inside = _BracketSpans(text).covers
        cuts = [cut for cut in cuts if 0 < cut <= self.policy.max_chars and not inside(cut)]
        return max(cuts, default=None)

    # --- bookkeeping ----------------------------------------------------------------------------

    def _threshold(self) -> int:
        schedule = self.policy.schedule
        return schedule[min(self._index, len(schedule) - 1)]

    def _delay(self) -> float | None:
        return self.policy.first_max_delay if self._index == 0 else self.policy.max_delay

    def _waiting_since(self) -> float:
        arrived = self._arrivals[0][1] if self._arrivals else float("-inf")
        return max(arrived, self._released_at)

    def _emit(self, cut: int, reason: Reason, now: float) -> Segment:
        text = self._buffer[:cut].rstrip()
        segment = Segment(text, self._index, self._base, self._base + len(text), reason)
        self._buffer = self._buffer[cut:]
        self._base += cut
        self._drop_leading_whitespace()
        self._index += 1
        self._released_at = now
        return segment

    def _drop_leading_whitespace(self) -> None:
        kept = self._buffer.lstrip()
        self._base += len(self._buffer) - len(kept)
        self._buffer = kept
        while len(self._arrivals) > 1 and self._arrivals[1][0] <= self._base:
            self._arrivals.popleft()       # the delta holding the buffer's first character stays first


def _word_ends(text: str, limit: int) -> list[int]:
    """Offsets up to ``limit`` where a word ends and whitespace follows it, in order."""
    inside = _BracketSpans(text).covers
    return [match.end() for match in WORD.finditer(text)
            if match.end() <= limit and match.end() < len(text) and not inside(match.end())]


def _clauses(text: str, limit: int) -> set[int]:
    """Offsets up to ``limit`` where a clause ends."""
    inside = _BracketSpans(text).covers
    return {cut for cut in clause_cuts(text, 0, len(text)) if 0 < cut <= limit and not inside(cut)}


class _BracketSpans:
    """`covers(cut)`: whether a cut at an offset would fall inside ``[...]``: a pause, an expressive tag or a speaker
    marker (text/markup.py, text/speakers.py) is never split between segments, and one whose ``]``
    has not arrived yet holds every cut after its ``[`` (a flush or the end of the turn still
    releases it, for the markup reader to judge)."""

    def __init__(self, text: str) -> None:
        self.spans: list[tuple[int, int]] = []
        at = text.find("[")
        while at != -1:
            close = text.find("]", at + 1)
            end = len(text) + 1 if close == -1 else close + 1
            self.spans.append((at, end))
            at = text.find("[", end) if close != -1 else -1

    def covers(self, cut: int) -> bool:
        return any(start < cut < end for start, end in self.spans)
