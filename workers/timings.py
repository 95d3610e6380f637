"""Word timings in the model worker: where each word of a text chunk starts and ends in its audio.

A chunk's words are its whitespace-separated tokens, punctuation attached ("Hello," "world."), so
joining them with spaces gives the chunk's text back. Times are seconds from the chunk's first
sample, after the model worker's own post-processing (time-stretch, fades).

Two sources, one result (``Word`` tuples):

* engines that know their alignment say so: hibari's duration predictor gives each phoneme a
  number of 12.5 ms frames, and ``spread_over_groups`` maps the chunk's words onto the spoken
  phoneme words (workers/engines/hibari_align.py); the tone engine knows its own layout;
* for the others (Chatterbox: no text alignment is exposed) ``estimate_words`` spreads the voiced
  span of the chunk's audio over its words by length, anchoring punctuation at the pauses heard in
  the audio energy.

``ChunkWords`` is what the model worker keeps per text chunk while a job asks for timings (and
nothing at all otherwise). numpy only: the front workers never import this module.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Word = tuple[str, float, float]       # (word, start s, end s) from the start of its chunk's audio

BREAK_PUNCTUATION = frozenset(",.;:!?…—–")
FRAME_SECONDS = 0.01                  # energy frames of the estimate
SILENCE_BELOW_PEAK_DB = 35.0          # quieter than this under the loudest frame counts as a pause
SILENCE_DB = -70.0                    # and anything below this is silence whatever the peak (digital zero)
MIN_PAUSE_SECONDS = 0.08              # shorter gaps are stops and closures inside speech, not pauses
MIN_HEARD_SECONDS = 0.05              # a trimmed word keeps at least this much of its engine span
UNMATCHED_COST = 0.35                 # s: leaving a pause or a punctuation mark without its partner


def split_words(text: str) -> list[str]:
    return text.split()


def word_weight(word: str) -> float:
    """Relative speaking time of a word: its letters, a digit reads as about three (\"7\" = \"seven\")."""
    letters = sum(1 for c in word if c.isalpha())
    digits = sum(1 for c in word if c.isdigit())
    return max(1.0, letters + 3.0 * digits)


def ends_clause(word: str) -> bool:
    stripped = word.rstrip("\"'”’)]}")
    return bool(stripped) and stripped[-1] in BREAK_PUNCTUATION


# -- engine alignments ----------------------------------------------------------------------------
def spread_over_groups(words: Sequence[str], counts: Sequence[float],
                       spans: Sequence[tuple[float, float]]) -> tuple[Word, ...]:
    """Words over the spoken units (`spans`, in order), word i taking `counts[i]` of them.

    When the counts add up to the units there are, each word gets exactly its own; otherwise they
    are scaled to fit and a word may take part of a unit (a unit's time is split evenly). A word
    with a zero count gets an instant at its place. The result is monotonic whatever the input."""
    if not words:
        return ()
    if not spans:
        return tuple((word, 0.0, 0.0) for word in words)
    total = float(sum(counts))
    scale = len(spans) / total if total > 0 else 0.0
    bounds = np.concatenate([[0.0], np.cumsum(np.asarray(counts, dtype=np.float64))]) * scale
    if total <= 0:
        bounds = np.linspace(0.0, len(spans), len(words) + 1)
    result = []
    for i, word in enumerate(words):
        start, end = _unit_time(spans, bounds[i], start=True), _unit_time(spans, bounds[i + 1], start=False)
        result.append((word, start, max(start, end)))
    return tuple(result)


def _unit_time(spans: Sequence[tuple[float, float]], position: float, *, start: bool) -> float:
    """Time at a fractional unit position: the start of a word at 2.0 is unit 2's start, the end of a
    word at 2.0 is unit 1's end; 2.5 is halfway through unit 2."""
    last = len(spans) - 1
    position = min(max(position, 0.0), float(len(spans)))
    k = int(np.floor(position)) if start else int(np.ceil(position)) - 1
    k = min(max(k, 0), last)
    fraction = min(max(position - k, 0.0), 1.0)
    begin, end = spans[k]
    return float(begin + fraction * (end - begin))


def scale_words(words: Sequence[Word], factor: float) -> tuple[Word, ...]:
    """Timings of audio whose length was multiplied by `factor` (a time-stretch)."""
    return tuple((word, start * factor, end * factor) for word, start, end in words)


def shift_words(words: Sequence[Word], seconds: float, floor: float | None = None) -> tuple[Word, ...]:
    """Timings of the same audio with `seconds` of silence in front of it (negative: cut from its
    front), at ChunkWords' precision; `floor` bounds the moved times from below."""
    low = float("-inf") if floor is None else floor
    return tuple((word, round(max(start + seconds, low), 4), round(max(end + seconds, low), 4))
                 for word, start, end in words)


def trim_to_voice(words: Sequence[Word], audio: np.ndarray, sample_rate: int) -> tuple[Word, ...]:
    """Engine timings pulled in to the audible part of each word: a duration model lengthens the
    last vowel before a pause (hibari gives a sentence's last word some 300 ms that decay below
    hearing), and the vocoder's window smears sound across the edges. A word without a voiced frame
    keeps its span. A word whose voice starts just before its predicted end (a short word at a fast
    speed, on a CPU whose kernels round it so) keeps MIN_HEARD_SECONDS, taken back from its own span,
    so the order of words never changes."""
    levels = frame_levels(audio, sample_rate)
    if levels.size == 0:
        return tuple(words)
    voiced = voiced_frames(levels)
    trimmed = []
    for word, start, end in words:
        first, last = int(start / FRAME_SECONDS), min(levels.size, int(np.ceil(end / FRAME_SECONDS)))
        where = np.flatnonzero(voiced[first:last])
        if where.size:
            heard_start = max(start, (first + where[0]) * FRAME_SECONDS)
            heard_end = max(heard_start, min(end, (first + where[-1] + 1) * FRAME_SECONDS))
            keep = min(MIN_HEARD_SECONDS, end - start)
            if heard_end - heard_start < keep:
                heard_start = max(start, heard_end - keep)
                heard_end = min(end, heard_start + keep)
            start, end = heard_start, heard_end
        trimmed.append((word, start, end))
    return tuple(trimmed)


# -- the estimate -----------------------------------------------------------------------------------
def frame_levels(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Energy in dB per FRAME_SECONDS frame."""
    hop = max(1, int(sample_rate * FRAME_SECONDS))
    frames = audio[: audio.size // hop * hop].astype(np.float64).reshape(-1, hop)
    return 10.0 * np.log10(np.mean(frames * frames, axis=1) + 1e-12)


def voiced_frames(levels: np.ndarray) -> np.ndarray:
    if levels.size == 0:
        return np.zeros(0, bool)
    return (levels > levels.max() - SILENCE_BELOW_PEAK_DB) & (levels > SILENCE_DB)


def find_pauses(levels: np.ndarray) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """(the voiced span, the pauses inside it), in frames [start, end)."""
    voiced = voiced_frames(levels)
    where = np.flatnonzero(voiced)
    if where.size == 0:
        return None, []
    first, last = int(where[0]), int(where[-1]) + 1
    pauses, run_start = [], None
    min_frames = max(1, round(MIN_PAUSE_SECONDS / FRAME_SECONDS))
    for i in range(first, last):
        if not voiced[i] and run_start is None:
            run_start = i
        elif voiced[i] and run_start is not None:
            if i - run_start >= min_frames:
                pauses.append((run_start, i))
            run_start = None
    return (first, last), pauses


def estimate_words(text: str, audio: np.ndarray, sample_rate: int) -> tuple[Word, ...]:
    """Words spread over the chunk's voiced span by `word_weight`, cut at the pauses that best match
    the words ending a clause (a monotonic matching on expected position, so a missing or extra
    pause costs one anchor, not the whole chunk)."""
    words = split_words(text)
    if not words:
        return ()
    span, pauses = find_pauses(frame_levels(audio, sample_rate))
    if span is None:
        end = audio.size / sample_rate
        return tuple((word, end, end) for word in words)
    begin, finish = span[0] * FRAME_SECONDS, span[1] * FRAME_SECONDS
    weights = np.array([word_weight(word) for word in words])
    cumulative = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    breaks = [i for i, word in enumerate(words[:-1]) if ends_clause(word)]
    expected = [begin + cumulative[i + 1] * (finish - begin) for i in breaks]
    seconds = [(a * FRAME_SECONDS, b * FRAME_SECONDS) for a, b in pauses]
    anchors = _match(expected, [(a + b) / 2 for a, b in seconds])
    # segments of words between anchored pauses, each spread over its own stretch of speech
    cuts = [(breaks[j], seconds[k]) for j, k in anchors]
    result: list[Word] = []
    first_word, seg_start = 0, begin
    for last_word, (pause_start, pause_end) in [*cuts, (len(words) - 1, (finish, finish))]:
        result += _spread(words[first_word:last_word + 1], weights[first_word:last_word + 1], seg_start, pause_start)
        first_word, seg_start = last_word + 1, pause_end
    return tuple(result)


def _spread(words: Sequence[str], weights: np.ndarray, start: float, end: float) -> list[Word]:
    edges = start + np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum() * max(0.0, end - start)
    return [(word, float(edges[i]), float(edges[i + 1])) for i, word in enumerate(words)]


def _match(expected: Sequence[float], observed: Sequence[float]) -> list[tuple[int, int]]:
    """Monotonic matching of expected break times to observed pause times (edit distance: a pair
    costs its time difference, either side left alone costs UNMATCHED_COST)."""
    n, m = len(expected), len(observed)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0] = np.arange(n + 1) * UNMATCHED_COST
    cost[0, :] = np.arange(m + 1) * UNMATCHED_COST
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + abs(expected[i - 1] - observed[j - 1]),
                             cost[i - 1, j] + UNMATCHED_COST, cost[i, j - 1] + UNMATCHED_COST)
    pairs, i, j = [], n, m
    while i and j:
        if cost[i, j] == cost[i - 1, j - 1] + abs(expected[i - 1] - observed[j - 1]):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif cost[i, j] == cost[i - 1, j] + UNMATCHED_COST:
            i -= 1
        else:
            j -= 1
    return pairs[::-1]


# -- per chunk in the model worker ----------------------------------------------------------------
class ChunkWords:
    """One text chunk's timings in the making: the audio as sent (for the estimate) and how much
    the engine made (to scale its own timings by the time-stretch)."""

    def __init__(self, text: str, sample_rate: int) -> None:
        self.text = text
        self.sample_rate = sample_rate
        self.engine_samples = 0
        self.sent: list[np.ndarray] = []

    def add(self, engine_audio: np.ndarray, sent_audio: np.ndarray) -> None:
        self.engine_samples += engine_audio.size
        self.sent.append(sent_audio)

    def finish(self, engine_words: Sequence[Word] | None) -> tuple[Word, ...]:
        sent_samples = sum(part.size for part in self.sent)
        if engine_words is not None:
            factor = sent_samples / self.engine_samples if self.engine_samples else 1.0
            words = trim_to_voice(scale_words(engine_words, factor), np.concatenate(self.sent), self.sample_rate)
        else:
            audio = np.concatenate(self.sent) if self.sent else np.zeros(0, np.float32)
            words = estimate_words(self.text, audio, self.sample_rate)
        end = sent_samples / self.sample_rate
        return tuple((word, round(min(start, end), 4), round(min(stop, end), 4)) for word, start, stop in words)
