"""The model worker's estimate of how long a new interactive job would wait before it starts.

What a newcomer waits for (see workers/model_worker.py): the worker advances up to ``rows`` jobs
per engine step; a job keeps its row until its current chunk is done, then competes again. Free
rows go to interactive jobs first, and among them to jobs without audio yet, in arrival order;
jobs that already have audio go after a newcomer, background jobs give their rows up to it, and
jobs out of credit (parked: their client is not reading) do not compete at all. So what stands
between a newcomer and its row is only:

- the rest of the current chunk of every interactive job holding a row, and
- the first chunk of every interactive job still without audio that arrived before it.

A long stream paced by its reader is therefore never "100,000 characters ahead" of anyone: at
most its current chunk is.

The estimate places that work on the rows the way the worker does (list scheduling): each row
is free at the time its current chunk ends (now, for a free row); each waiting job, in order,
takes the earliest free row and holds it for its first chunk; the newcomer's row is then the
earliest free one::

    free_i     = remaining(holding_i)         for each held row, 0 for each free row
    for w in waiting (arrival order):  free_min += seconds(first chunk of w)
    queued     = min_i free_i

Seconds come from a cost the worker measures itself: for every finished chunk, the wall time of
the engine steps its row took part in divided by the chunk's size (characters of text; seconds of
input audio for voice conversion), averaged with an exponential weight. A batched step that
takes longer because it carries more rows makes every row's chunk cost more, so the cost reflects
batching as it happens. The remaining time of a chunk in progress is its expected cost minus the
step time it already had. Until the worker has finished one chunk of a kind, that kind costs 0
(the job-count cap still applies). The newcomer's own first chunk comes on top of the estimate:
it is the same whether the server is busy or not, so it is no part of the queue.

The queue ahead of a waiting newcomer shrinks by one second per second (later arrivals queue
behind it), which is what makes ``retry_after`` below an honest answer.

The board shows a job from the moment its worker reads it. A front worker adds the jobs it has
sent that the worker has not yet acknowledged (a burst that arrives during one engine step) as
``in_flight_seconds``: their first chunks spread over the rows, at the cost the worker published
in its board info when it last ran out of jobs.
"""
from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from workers.engines.base import VC_INPUT_RATE
from workers.ipc.protocol import ConvertJob, SpeechJob

SMOOTHING = 0.3       # weight of the newest chunk in the cost average


@dataclass
class CostMeter:
    """Seconds of engine-step time one batch row spends per unit of work, per kind of job."""
    smoothing: float = SMOOTHING
    per_unit: dict[str, float] = field(default_factory=dict)

    def observe(self, kind: str, units: float, seconds: float) -> None:
        """A chunk of `units` units finished after `seconds` of steps on its row."""
        if units <= 0 or seconds <= 0:
            return
        sample = seconds / units
        previous = self.per_unit.get(kind)
        self.per_unit[kind] = sample if previous is None else previous + self.smoothing * (sample - previous)

    def seconds(self, kind: str, units: float) -> float:
        """Expected row time of a chunk of `units` units; 0 while nothing of this kind was measured."""
        return self.per_unit.get(kind, 0.0) * max(units, 0.0)


def work_units(job: SpeechJob | ConvertJob, index: int) -> tuple[str, float]:
    """The kind and size of chunk `index`: characters of text, or seconds of input audio."""
    if isinstance(job, ConvertJob):
        start, end = job.windows[index]
        return "convert", (end - start) / VC_INPUT_RATE
    return "speech", float(len(job.chunks[index]))


def in_flight_seconds(job: SpeechJob | ConvertJob, per_unit: dict[str, float], rows: int) -> float:
    """What a job sent but not yet acknowledged adds to a newcomer's wait: its first chunk over the rows."""
    if not job.units or getattr(job, "background", False):
        return 0.0
    kind, units = work_units(job, 0)
    return per_unit.get(kind, 0.0) * units / max(1, rows)


def queued_seconds(rows: int, holding: Iterable[float], waiting: Sequence[float]) -> float:
    """Seconds until a new interactive job gets a batch row.

    `holding`: the remaining seconds of the current chunk of each interactive job holding a row;
    `waiting`: the first-chunk seconds of each interactive job without audio and without a row,
    in the order they will get rows.
    """
    rows = max(1, rows)
    free_at = sorted(max(0.0, seconds) for seconds in holding)[:rows]
    free_at += [0.0] * (rows - len(free_at))
    heapq.heapify(free_at)
    for seconds in waiting:
        heapq.heapreplace(free_at, free_at[0] + max(0.0, seconds))
    return free_at[0]


def retry_after(queued: float, limit: float) -> int:
    """Whole seconds until a queue estimated at `queued` seconds drops to `limit` (at least 1)."""
    return max(1, math.ceil(queued - limit))
