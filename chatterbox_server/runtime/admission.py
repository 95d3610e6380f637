"""Which model worker takes a new job, or why none may (the front worker's admission rules).

Two kinds of "not now", with different statuses:

- 503 + Retry-After: the server cannot serve now (no model worker ready; draining on shutdown).
- 429 + Retry-After: the server is healthy but full. A worker is full when it already holds
  ``max_jobs`` jobs, or when the wait it estimates for a new job (workers/scheduler/estimate.py) is above
  ``max_queued_seconds``. A job goes to the least-loaded worker that is not full; when every
  ready worker is full, the refusal's Retry-After is the soonest any of them has room: the
  seconds until its estimate drops to the limit, or ``FULL_RETRY_SECONDS`` for a job-count cap
  (when a job ends is not known in advance).

Background jobs (long-text jobs) give their rows to interactive ones, so they do not lengthen
anyone's wait: only the job-count cap applies to them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from workers.scheduler.estimate import retry_after

FULL_RETRY_SECONDS = 5


@dataclass(frozen=True)
class WorkerLoad:
    slot: int
    jobs: int                   # jobs on the worker, with those sent by this front worker not yet counted
    queued_seconds: float       # the worker's estimate of a new job's wait for a row


@dataclass(frozen=True)
class Limits:
    max_jobs: int
    max_queued_seconds: float   # 0: no limit on the estimate

    @classmethod
    def of(cls, max_jobs: int, max_queued_seconds: float, queue_timeout: float) -> Limits:
        """A wait longer than the queue timeout would end in a 504 anyway: the limit never exceeds it."""
        if max_queued_seconds > 0 and queue_timeout > 0:
            max_queued_seconds = min(max_queued_seconds, queue_timeout)
        return cls(max_jobs, max_queued_seconds)

    def too_long(self, load: WorkerLoad) -> bool:
        return self.max_queued_seconds > 0 and load.queued_seconds > self.max_queued_seconds


@dataclass(frozen=True)
class Refusal:
    message: str
    retry_after: int


def admissible(loads: Sequence[WorkerLoad], limits: Limits, check_wait: bool = True) -> list[int]:
    """Slots that may take the job, least loaded first (fewest jobs, then shortest wait).
    `check_wait=False` (background jobs): only the job-count cap applies."""
    ordered = sorted(loads, key=lambda load: (load.jobs, load.queued_seconds, load.slot))
    return [load.slot for load in ordered
            if load.jobs < limits.max_jobs and not (check_wait and limits.too_long(load))]


def refusal(loads: Sequence[WorkerLoad], limits: Limits) -> Refusal:
    """Why no worker may take a job (every one is full), and when to try again."""
    def wait(load: WorkerLoad) -> int:
        if load.jobs >= limits.max_jobs:
            return FULL_RETRY_SECONDS
        return retry_after(load.queued_seconds, limits.max_queued_seconds)

    soonest = min(loads, key=lambda load: (wait(load), load.slot))
    seconds = wait(soonest)
    if soonest.jobs >= limits.max_jobs:
        cause = f"every model worker already holds {limits.max_jobs} jobs (CHATTERBOX_MAX_QUEUED_JOBS)"
    else:
        cause = (f"a new request would wait about {soonest.queued_seconds:.0f} s before its synthesis starts, "
                 f"over the limit of {limits.max_queued_seconds:g} s (CHATTERBOX_MAX_QUEUED_SECONDS)")
    return Refusal(f"The server is busy: {cause}. Please try again in {seconds}s.", seconds)
