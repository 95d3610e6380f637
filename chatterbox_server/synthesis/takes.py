"""Choosing among candidate takes of a chunk by what Whisper heard (the Extended family's quality loop).

Pure logic: scores, seeds and the choice. The peer's rule, kept: a take passes when the
similarity of its transcript to the chunk's text (difflib ratio of the normalized strings) is at
least PASS_SCORE; among passing takes the shortest wins (fewest stray sounds); when none passes,
the one with the longest transcript (use_longest_transcript_on_fail) or the best score.
"""
from __future__ import annotations

import difflib
import hashlib
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

PASS_SCORE = 0.95
SEED_SPACE = 2**32


def normalize_for_compare(text: str) -> str:
    text = re.sub(r"[\u2013\u2014-]", " ", text)
    text = re.sub(rf"[{re.escape(string.punctuation)}\u2018\u2019\u201c\u201d]", "", text)
    return re.sub(r"\s+", " ", text).lower().strip()


def similarity(expected: str, heard: str) -> float:
    return difflib.SequenceMatcher(None, normalize_for_compare(heard), normalize_for_compare(expected)).ratio()


def candidate_seed(request_seed: int, chunk: int, candidate: int, attempt: int) -> int:
    """The seed of one take: the request's own seed for the first take of the first chunk's first
    attempt... and for every (chunk, candidate, attempt) a fixed derivation of it, so the same
    request always makes the same takes. Never 0 (0 means "random" on this API)."""
    if candidate == 0 and attempt == 0:
        return (request_seed + chunk) % SEED_SPACE or 1
    digest = hashlib.blake2b(f"{request_seed}:{chunk}:{candidate}:{attempt}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") or 1


@dataclass(frozen=True)
class Take:
    chunk: int
    candidate: int
    attempt: int
    seed: int
    seconds: float
    transcript: str | None = None     # None: not transcribed (Whisper bypassed)
    score: float | None = None

    @property
    def passed(self) -> bool:
        return self.score is not None and self.score >= PASS_SCORE

    def describe(self) -> dict:
        return {"chunk": self.chunk, "candidate": self.candidate, "attempt": self.attempt, "seed": self.seed,
                "duration_seconds": round(self.seconds, 3), "transcript": self.transcript,
                "score": None if self.score is None else round(self.score, 4), "passed": self.passed}


def choose(takes: list[Take], use_longest_transcript_on_fail: bool) -> tuple[Take, str]:
    """(the take to keep, why). Takes without a transcript (Whisper bypassed): the shortest."""
    if not takes:
        raise ValueError("no takes to choose from")
    if all(take.score is None for take in takes):
        return min(takes, key=lambda t: (t.seconds, t.candidate, t.attempt)), "shortest (whisper bypassed)"
    passing = [take for take in takes if take.passed]
    if passing:
        return min(passing, key=lambda t: (t.seconds, t.attempt, t.candidate)), "passed"
    if use_longest_transcript_on_fail:
        return max(takes, key=lambda t: (len(t.transcript or ""), t.score or 0.0)), "longest transcript (none passed)"
    return max(takes, key=lambda t: (t.score or 0.0, -t.seconds)), "best score (none passed)"


def make_takes(index: int, text: str, seed: int, per_chunk: int, max_attempts: int,
               synthesize: Callable[[list[int]], list[bytes]], seconds_of: Callable[[bytes], float],
               hear: Callable[[bytes], str | None] | None) -> tuple[list[Take], dict[tuple[int, int], bytes]]:
    """Every take of one chunk: rounds of `per_chunk` candidates (each with its derived seed; a
    round's takes are synthesized together, so several model workers can share it), stopping
    after the first round in which one passes; one round when nothing hears them (`hear` None).
    `hear` answering None means the check went off (Whisper busy): that take and the rest of the
    round stay unheard and no further round is made. Returns the takes and their audio by
    (candidate, attempt)."""
    takes: list[Take] = []
    audio: dict[tuple[int, int], bytes] = {}
    checking = hear is not None
    for attempt in range(max_attempts if hear is not None else 1):
        seeds = [candidate_seed(seed, index, candidate, attempt) for candidate in range(per_chunk)]
        for candidate, (take_seed, data) in enumerate(zip(seeds, synthesize(seeds), strict=True)):
            audio[(candidate, attempt)] = data
            heard = hear(data) if checking else None
            checking = checking and heard is not None
            score = similarity(text, heard) if heard is not None else None
            takes.append(Take(index, candidate, attempt, take_seed, seconds_of(data), heard, score))
        if not checking or any(take.passed for take in takes):
            break
    return takes, audio
