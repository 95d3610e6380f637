"""Which jobs a model worker advances in its next engine step, and how long a newcomer would wait: the
rules, without I/O.

Each job has one open stream (its current text chunk, or voice-conversion window) and holds a row of the
engine's batch until that chunk is done. Free rows go to interactive jobs before background ones, then to
jobs that have not produced audio yet (time to first audio), then to the others in turn (fairness); a
background job gives its row up to an interactive job that is waiting. A job out of credit (its client is
``buffer_size`` messages behind) is parked and competes for no row (parking.py).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from multiprocessing.connection import Connection

import numpy as np

from workers.engines.base import Stream
from workers.ipc.protocol import ConvertJob, JobStats, SpeechJob
from workers.scheduler.estimate import CostMeter, queued_seconds, work_units
from workers.timings import ChunkWords


@dataclasses.dataclass(eq=False)
class ActiveJob:
    conn: Connection
    job: SpeechJob | ConvertJob
    credits: int
    next_index: int = 0                    # the chunk (or window) being made, or made next
    stream: Stream | None = None           # the open stream of chunk next_index; kept while paused
    stretch: float = 1.0                   # time-stretch still to apply to the open chunk
    pieces_in_chunk: int = 0               # audio messages sent for chunk next_index
    trimmed: int = 0                       # samples of engine silence cut from chunk next_index's start
    pieces: int = 0                        # audio messages sent in all
    last_served: float = 0.0
    stats: JobStats = dataclasses.field(default_factory=JobStats)
    source: np.ndarray | None = None       # voice conversion: the whole input, read once
    tail: np.ndarray | None = None         # voice conversion: output held back to crossfade
    parked_since: float | None = None      # when it ran out of credit with work left
    row_seconds: float = 0.0               # engine-step time chunk next_index has had on a batch row
    words: ChunkWords | None = None        # chunk next_index's word timings in the making (timestamps jobs)

    @property
    def runnable(self) -> bool:
        return self.credits > 0 and self.next_index < self.job.units

    @property
    def parked(self) -> bool:
        """Out of credit with work left: its client is not reading."""
        return self.credits <= 0 and self.next_index < self.job.units

    @property
    def background(self) -> bool:
        return bool(getattr(self.job, "background", False))

    def work(self) -> tuple[str, float]:
        """Kind and size of chunk next_index, for the cost meter."""
        return work_units(self.job, self.next_index)

    def priority(self) -> tuple[bool, bool, float]:
        """Sort key for a free batch row: interactive first, then no audio yet, then least recently served."""
        return (self.background, self.pieces > 0, self.last_served)


def select_batch(current: list[ActiveJob], jobs: Iterable[ActiveJob], capacity: int) -> list[ActiveJob]:
    """The next step's rows: members of `current` keep theirs while runnable and still among `jobs`; free
    rows go by ActiveJob.priority, and a background member gives its row up to an interactive job waiting."""
    alive = list(jobs)
    members = [job for job in current if job.runnable and job in alive]
    waiting = sorted((job for job in alive if job.runnable and job not in members), key=ActiveJob.priority)
    interactive_waiting = sum(1 for job in waiting if not job.background)
    while interactive_waiting > capacity - len(members) and any(j.background for j in members):
        evicted = max((j for j in members if j.background), key=lambda j: j.last_served)
        members.remove(evicted)
        waiting.append(evicted)
        interactive_waiting -= 1
    for job in waiting:
        if len(members) >= capacity:
            break
        if job.background and any(not j.background and j not in members for j in waiting):
            continue    # a row an interactive job could use
        members.append(job)
    return members


def newcomer_wait(jobs: Iterable[ActiveJob], batch: list[ActiveJob], capacity: int, cost: CostMeter) -> float:
    """A new interactive job's wait for a row (estimate.py); `jobs` in arrival order, the order waiting
    jobs get rows."""
    members = set(batch)
    holding, waiting = [], []
    for active in jobs:
        if not active.runnable or active.background:
            continue
        expected = cost.seconds(*active.work())
        if active in members and active.stream is not None:
            holding.append(expected - active.row_seconds)
        elif active.pieces == 0:
            waiting.append(expected)
    return queued_seconds(capacity, holding, waiting)
