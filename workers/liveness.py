"""Is a model worker alive and well? Heartbeat silence and engine-failure streaks.

A model worker writes the pool board's `beat` field after every engine step, and about once a
second when idle. Whoever watches it (the supervisor, a front worker waiting for audio) samples
that value now and then and measures silence on its own monotonic clock from the moment it saw
the value change: no clocks are compared across processes, so a wall-clock step cannot make a
worker look hung. Standard library only.
"""
from __future__ import annotations

MIN_CHECK_SECONDS = 0.05
MAX_CHECK_SECONDS = 2.0


class Silence:
    """How long a heartbeat has stood still, as seen by one watcher."""

    def __init__(self, beat: float, now: float) -> None:
        self._beat = beat
        self._since = now

    def observe(self, beat: float, now: float) -> float:
        """Seconds since the heartbeat last changed, given its value `beat` read at `now`."""
        if beat != self._beat:
            self._beat, self._since = beat, now
        return now - self._since


def check_interval(limit: float) -> float:
    """How often to sample a heartbeat for a silence limit: often enough to act within about a
    quarter of the limit, rarely enough to cost nothing."""
    if limit <= 0:
        return MAX_CHECK_SECONDS
    return min(max(limit / 4, MIN_CHECK_SECONDS), MAX_CHECK_SECONDS)


def hang_reason(silent: float, limit: float, active: int) -> str | None:
    """Why a READY worker counts as hung, or None while it does not (limit 0: never)."""
    if limit <= 0 or silent < limit:
        return None
    doing = f"while busy with {active} job{'' if active == 1 else 's'}" if active > 0 else "while idle"
    return f"hung: no heartbeat for {silent:.0f} s {doing}"


class FailureStreak:
    """Engine failures in a row: an engine step in which requests failed with engine errors (not
    bad requests) and none made audio adds one; audio made ends the streak. At `limit` (0: never)
    the engine counts as broken."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.last = ""

    def failed(self, description: str) -> bool:
        """Count one failure; True when the streak has reached the limit."""
        self.count += 1
        self.last = description
        return self.limit > 0 and self.count >= self.limit

    def succeeded(self) -> bool:
        """End the streak; True when there was one (the published count changes)."""
        had_streak, self.count = self.count > 0, 0
        return had_streak

    def describe(self) -> str:
        return f"{self.count} engine failures in a row (the last: {self.last})"
