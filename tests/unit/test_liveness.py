"""Heartbeat silence, the hang rule and engine-failure streaks (workers/liveness.py)."""
import pytest

from workers.liveness import MAX_CHECK_SECONDS, FailureStreak, Silence, check_interval, hang_reason


def test_silence_counts_from_the_last_change_seen_on_the_watchers_clock():
    silence = Silence(beat=1000.0, now=50.0)
    assert silence.observe(1000.0, 52.0) == 2.0
    assert silence.observe(1000.5, 53.0) == 0.0         # a new beat value: the worker moved
    assert silence.observe(1000.5, 60.0) == 7.0
    # the beat is the worker's wall clock: a value that jumps back still means a beat, never silence
    assert silence.observe(900.0, 61.0) == 0.0


def test_check_interval_is_a_quarter_of_the_limit_within_bounds():
    assert check_interval(120.0) == MAX_CHECK_SECONDS
    assert check_interval(2.0) == 0.5
    assert check_interval(0.01) == pytest.approx(0.05)
    assert check_interval(0) == MAX_CHECK_SECONDS


@pytest.mark.parametrize(("silent", "limit", "active", "expected"), [
    (29.9, 30.0, 2, None),
    (30.0, 30.0, 1, "hung: no heartbeat for 30 s while busy with 1 job"),
    (45.2, 30.0, 3, "hung: no heartbeat for 45 s while busy with 3 jobs"),
    (31.0, 30.0, 0, "hung: no heartbeat for 31 s while idle"),
    (1e6, 0.0, 5, None),                                 # 0: never
])
def test_hang_reason(silent, limit, active, expected):
    assert hang_reason(silent, limit, active) == expected


def test_a_streak_breaks_the_engine_at_the_limit_and_audio_ends_it():
    streak = FailureStreak(3)
    assert not streak.failed("RuntimeError: a")
    assert not streak.failed("RuntimeError: b")
    assert streak.succeeded() is True and streak.count == 0
    assert streak.succeeded() is False
    assert [streak.failed(f"CUDA error {i}") for i in range(3)] == [False, False, True]
    assert streak.describe() == "3 engine failures in a row (the last: CUDA error 2)"


def test_a_limit_of_zero_never_breaks_the_engine():
    streak = FailureStreak(0)
    assert not any(streak.failed("x") for _ in range(100))
    assert streak.count == 100
