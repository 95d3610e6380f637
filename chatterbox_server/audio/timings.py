"""Word timings as clients want them, from the model worker's per-chunk words (no I/O).

The model worker sends each text chunk's words on that chunk's last ``AudioChunk`` as
``(word, start s, end s)`` from the chunk's first sample (workers/timings.py says where they come
from). ``WordClock`` follows a job's audio as it goes by and moves each chunk's words onto the
timeline of the whole answer; the functions below turn words into the shapes of the APIs clients
know: plain word objects (the SSE event), Kokoro-FastAPI's captions, Cartesia's
``word_timestamps`` and ElevenLabs' character ``alignment``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

Word = tuple[str, float, float]


def offset_words(words: Iterable[Word], seconds: float) -> tuple[Word, ...]:
    """Words moved `seconds` later, rounded to the millisecond."""
    return tuple((word, round(start + seconds, 3), round(end + seconds, 3)) for word, start, end in words)


class WordClock:
    """The running audio position of one answer: feed every audio message in order; a message that
    carries its chunk's words gets them back on the answer's timeline (seconds from its first sample)."""

    def __init__(self, sample_rate: int, start: float = 0.0) -> None:
        self.sample_rate = sample_rate
        self.samples = round(start * sample_rate)    # audio before this answer (a WebSocket context's earlier turns)
        self.index: int | None = None
        self.chunk_start = self.samples

    def feed(self, index: int, pcm_bytes: int, words: Sequence[Word] | None) -> tuple[Word, ...] | None:
        """`pcm_bytes` of PCM16 for text chunk `index`; returns its words offset, or None if it has none."""
        if index != self.index:
            self.index, self.chunk_start = index, self.samples
        self.samples += pcm_bytes // 2
        if words is None:
            return None
        return offset_words(words, self.chunk_start / self.sample_rate)

    @property
    def seconds(self) -> float:
        return self.samples / self.sample_rate


def word_objects(words: Iterable[Word]) -> list[dict]:
    """[{"word", "start", "end"}] in seconds: the SSE `speech.audio.timestamps` event."""
    return [{"word": word, "start": start, "end": end} for word, start, end in words]


def captions(words: Iterable[Word]) -> list[dict]:
    """Kokoro-FastAPI's captioned-speech entries: [{"word", "start_time", "end_time"}] in seconds."""
    return [{"word": word, "start_time": start, "end_time": end} for word, start, end in words]


def cartesia(words: Iterable[Word]) -> dict:
    """Cartesia's `word_timestamps`: parallel lists of words and their start and end in seconds."""
    items = list(words)
    return {"words": [w for w, _, _ in items], "start": [s for _, s, _ in items], "end": [e for _, _, e in items]}


def elevenlabs_alignment(words: Iterable[Word]) -> dict:
    """ElevenLabs' character `alignment` of the words joined by single spaces: each word's time is
    shared evenly by its characters, the space after a word spans the gap to the next one (so the
    durations add up and never overlap). Milliseconds, whole."""
    chars: list[str] = []
    starts: list[int] = []
    durations: list[int] = []
    items = list(words)
    for i, (word, start, end) in enumerate(items):
        begin_ms, end_ms = round(start * 1000), round(end * 1000)
        length = max(1, len(word))
        for k, char in enumerate(word):
            char_start = begin_ms + (end_ms - begin_ms) * k // length
            char_end = begin_ms + (end_ms - begin_ms) * (k + 1) // length
            chars.append(char)
            starts.append(char_start)
            durations.append(char_end - char_start)
        if i + 1 < len(items):
            next_ms = max(end_ms, round(items[i + 1][1] * 1000))
            chars.append(" ")
            starts.append(end_ms)
            durations.append(next_ms - end_ms)
    return {"chars": chars, "charStartTimesMs": starts, "charDurationsMs": durations}


def character_alignment(words: Iterable[Word]) -> dict:
    """ElevenLabs' HTTP alignment (the with-timestamps answers): the characters of the words joined by
    single spaces, each with its start and end in seconds (elevenlabs_alignment's timing)."""
    shape = elevenlabs_alignment(words)
    starts = [ms / 1000 for ms in shape["charStartTimesMs"]]
    ends = [(start + duration) / 1000 for start, duration in zip(shape["charStartTimesMs"], shape["charDurationsMs"],
                                                                 strict=True)]
    return {"characters": shape["chars"], "character_start_times_seconds": starts,
            "character_end_times_seconds": ends}
