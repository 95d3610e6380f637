"""Which parked jobs to cancel: the rules, without I/O.

A job is parked while it has work left and no credit (its client is not reading). It is cancelled
once it has been parked for the timeout, and a model worker keeps at most ``cap`` jobs parked:
each keeps its engine state (on Chatterbox a KV cache) while admission no longer counts it, so
without a cap a crowd of paused clients could hold that memory without bound. Standard library only.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Parkable(Protocol):
    parked_since: float | None

    @property
    def parked(self) -> bool: ...


def review(jobs: Iterable[Parkable], now: float, timeout: float, cap: int) -> tuple[list[tuple[Parkable, str]], int]:
    """Stamp newly parked jobs, clear the stamp of those that got credit; returns the jobs to cancel,
    each with the reason, and how many stay parked."""
    parked: list[Parkable] = []
    cancel: list[tuple[Parkable, str]] = []
    for job in jobs:
        if not job.parked:
            job.parked_since = None
            continue
        if job.parked_since is None:
            job.parked_since = now
        if now - job.parked_since >= timeout:
            cancel.append((job, f"the client read no audio for {timeout:g} s"))
        else:
            parked.append(job)
    parked.sort(key=lambda job: job.parked_since)
    while len(parked) > cap:
        job = parked.pop(0)
        cancel.append((job, f"the client read no audio for {now - job.parked_since:.0f} s while {cap} other "
                            "streams were paused on this worker"))
    return cancel, len(parked)
