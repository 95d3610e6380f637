"""Which models' weights are resident: the memory budget's decisions (CHATTERBOX_GPU_MEMORY_BUDGET).

The pool supervisor keeps one Resident per model-worker slot and asks `plan` after every change.
A worker that needs its model (a request came, or it is preloaded) waits for a grant; a grant is
given while the loaded and loading models fit in the budget. Otherwise the idle models (no request
at any of their workers), least recently used first, are unloaded to make room, but only when
unloading them would be enough: a load that cannot fit beside the models in use waits for them to
become idle. A model bigger than the whole budget is refused. Loads are granted in the order they
were asked for, so a big model is not starved by small ones. Pure logic: no I/O.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass
class Resident:
    slot: int
    model: str
    loaded_bytes: int = 0              # measured by the worker once loaded
    loaded: bool = False
    loading_bytes: int = 0             # a granted load in progress: its expected size
    wants_since: float | None = None   # asked for a load at this time, not granted yet
    expected: int = 0                  # what the worker expects its load to take (0: unknown)
    busy: bool = False                 # requests at the worker
    last_used: float = 0.0
    unloading: bool = False            # told to unload, not confirmed yet

    @property
    def held(self) -> int:
        return (self.loaded_bytes if self.loaded else 0) + self.loading_bytes


@dataclass(frozen=True)
class Plan:
    grant: tuple[int, ...] = ()
    evict: tuple[int, ...] = ()
    refuse: tuple[tuple[int, str], ...] = ()


def size_of(resident: Resident, measured: dict[str, int]) -> int:
    return max(measured.get(resident.model, 0), resident.expected)


def plan(residents: Sequence[Resident], budget: int | None, measured: dict[str, int]) -> Plan:
    """What to do now; `measured`: the bytes each model took when it last loaded."""
    waiting = sorted((r for r in residents if r.wants_since is not None), key=lambda r: r.wants_since or 0.0)
    if budget is None:
        return Plan(grant=tuple(r.slot for r in waiting))
    committed = sum(r.held for r in residents)
    grant: list[int] = []
    refuse: list[tuple[int, str]] = []
    for resident in waiting:
        need = size_of(resident, measured)
        if committed + need <= budget:
            grant.append(resident.slot)
            committed += need
            continue
        if need > budget:
            refuse.append((resident.slot, f"model {resident.model} needs about {need / 1e9:.2f} GB, more than the "
                                          f"whole memory budget ({budget / 1e9:.2f} GB, CHATTERBOX_GPU_MEMORY_BUDGET)"))
            continue
        evict = room_for(residents, committed + need - budget, keep={resident.model})
        return Plan(tuple(grant), tuple(evict), tuple(refuse))   # later loads wait behind this one
    if committed > budget and not waiting:        # a model measured bigger than expected
        return Plan(tuple(grant), tuple(room_for(residents, committed - budget, keep=set())), tuple(refuse))
    return Plan(tuple(grant), (), tuple(refuse))


def room_for(residents: Sequence[Resident], excess: int, keep: set[str]) -> list[int]:
    """The slots to unload to free `excess` bytes from idle models, least recently used first; none
    when that is not enough (or slots already unloading free it)."""
    excess -= sum(r.held for r in residents if r.unloading)
    if excess <= 0:
        return []
    chosen: list[int] = []
    for model in idle_models(residents, keep):
        if excess <= 0:
            break
        for resident in model:
            if resident.loaded and not resident.unloading:
                chosen.append(resident.slot)
                excess -= resident.held
    return chosen if excess <= 0 else []


def idle_models(residents: Iterable[Resident], keep: set[str]) -> list[list[Resident]]:
    """Loaded models with no request and no load in progress at any worker, least recently used first."""
    by_model: dict[str, list[Resident]] = {}
    for resident in residents:
        by_model.setdefault(resident.model, []).append(resident)
    idle = [slots for name, slots in by_model.items()
            if name not in keep and any(r.loaded and not r.unloading for r in slots)
            and not any(r.busy or r.wants_since is not None or r.loading_bytes for r in slots)]
    return sorted(idle, key=lambda slots: max(r.last_used for r in slots))
