"""Choosing among candidate takes (chatterbox_server/synthesis/takes.py): seeds, scores, the peer's rules."""
from __future__ import annotations

import pytest

from chatterbox_server.synthesis.takes import PASS_SCORE, Take, candidate_seed, choose, make_takes, similarity


def test_seeds_are_reproducible_distinct_and_never_zero():
    seeds = {candidate_seed(42, chunk, cand, attempt)
             for chunk in range(3) for cand in range(4) for attempt in range(3)}
    assert len(seeds) == 36 and 0 not in seeds
    assert candidate_seed(42, 0, 0, 0) == 42 and candidate_seed(42, 2, 0, 0) == 44
    assert candidate_seed(42, 1, 2, 1) == candidate_seed(42, 1, 2, 1) != candidate_seed(43, 1, 2, 1)
    assert candidate_seed(2**32 - 1, 1, 0, 0) == 1      # wraps, skipping 0 ("random" on this API)


def test_similarity_ignores_case_and_punctuation():
    assert similarity("Hello, world!", "hello world") == 1.0
    assert similarity("well-known", "well known") == 1.0
    assert similarity("The quick brown fox.", "A slow green turtle.") < 0.6


def take(candidate, seconds, transcript=None, score=None, attempt=0):
    return Take(0, candidate, attempt, candidate + 1, seconds, transcript, score)


def test_a_wrong_take_loses_to_a_right_one_even_when_shorter():
    right, wrong = take(1, 3.0, "the quick brown fox", 1.0), take(0, 1.0, "the quick bread box", 0.8)
    assert choose([wrong, right], True) == (right, "passed")


def test_among_passing_takes_the_shortest_wins():
    a, b = take(0, 3.0, "x", 0.97), take(1, 2.5, "x", PASS_SCORE)
    assert choose([a, b], True)[0] is b


def test_when_none_passes_the_longest_transcript_or_the_best_score():
    long_, best = take(0, 2.0, "a much longer transcript here", 0.5), take(1, 2.0, "short", 0.9)
    assert choose([long_, best], True) == (long_, "longest transcript (none passed)")
    assert choose([long_, best], False) == (best, "best score (none passed)")


def test_without_whisper_the_shortest_take():
    assert choose([take(0, 2.0), take(1, 1.5), take(2, 1.9)], True)[0].candidate == 1


def test_choose_needs_takes():
    with pytest.raises(ValueError):
        choose([], True)


def test_make_takes_retries_rounds_until_one_passes():
    said = {}

    def synthesize(seeds):
        for seed in seeds:
            said[seed] = "right" if len(said) >= 4 else "wrong"      # the first two rounds of two are wrong
        return [seed.to_bytes(4, "big") for seed in seeds]

    def hear(data):
        return "the right words" if said[int.from_bytes(data, "big")] == "right" else "something else"

    takes, audio = make_takes(0, "the right words", 7, 2, 5, synthesize, lambda d: 1.0, hear)
    assert [(t.candidate, t.attempt) for t in takes] == [(0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2)]
    assert [t.passed for t in takes] == [False] * 4 + [True] * 2 and len(audio) == 6


def test_make_takes_stops_at_max_attempts_and_once_without_whisper():
    takes, _ = make_takes(0, "x", 7, 3, 2, lambda seeds: [b"\0\0"] * len(seeds), lambda d: 1.0, lambda d: "nope")
    assert len(takes) == 6 and not any(t.passed for t in takes)
    takes, _ = make_takes(0, "x", 7, 3, 5, lambda seeds: [b"\0\0"] * len(seeds), lambda d: 1.0, None)
    assert len(takes) == 3 and all(t.transcript is None for t in takes)
