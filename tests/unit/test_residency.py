"""The memory budget's pure plan (workers/scheduler/residency.py): which loads are granted, which idle
models are unloaded to make room, which loads wait and which are refused."""
from __future__ import annotations

from workers.scheduler.residency import Plan, Resident, plan

MB = 10**6


def loaded(slot: int, model: str, size: int = 40 * MB, last_used: float = 0.0, **fields) -> Resident:
    return Resident(slot, model, loaded_bytes=size, loaded=True, last_used=last_used, **fields)


def wanting(slot: int, model: str, since: float, expected: int = 40 * MB, **fields) -> Resident:
    return Resident(slot, model, wants_since=since, expected=expected, **fields)


# -- no budget, room enough -------------------------------------------------------------------------
def test_without_a_budget_every_waiting_load_is_granted_in_the_order_asked():
    residents = [loaded(0, "standard"), wanting(1, "turbo", since=5.0), wanting(2, "multilingual", since=2.0),
                 Resident(3, "spare")]
    assert plan(residents, None, {}) == Plan(grant=(2, 1))


def test_nothing_waits_nothing_to_do():
    assert plan([loaded(0, "standard"), Resident(1, "turbo")], 100 * MB, {}) == Plan()


def test_loads_that_fit_beside_the_loaded_models_are_granted_without_evicting():
    residents = [loaded(0, "standard"), wanting(1, "turbo", since=1.0), wanting(2, "multilingual", since=2.0)]
    assert plan(residents, 120 * MB, {}) == Plan(grant=(1, 2))


def test_a_measured_size_counts_over_a_smaller_expectation():
    residents = [loaded(0, "standard"), wanting(1, "turbo", since=1.0, expected=10 * MB)]
    assert plan(residents, 60 * MB, {}) == Plan(grant=(1,))
    # turbo took 30 MB when it last loaded: it no longer fits beside standard's 40
    assert plan(residents, 60 * MB, {"turbo": 30 * MB}).grant == ()


def test_a_load_in_progress_holds_its_expected_room():
    residents = [loaded(0, "standard"), Resident(1, "turbo", loading_bytes=40 * MB),
                 wanting(2, "multilingual", since=1.0)]
    # standard is idle and would make room: it is evicted, the load waits for the room
    result = plan(residents, 100 * MB, {})
    assert result.grant == () and result.evict == (0,)


# -- eviction -----------------------------------------------------------------------------------------
def test_the_least_recently_used_idle_model_is_evicted_and_only_it():
    residents = [loaded(0, "standard", last_used=10.0), loaded(1, "turbo", last_used=5.0),
                 wanting(2, "multilingual", since=20.0)]
    assert plan(residents, 100 * MB, {}) == Plan(evict=(1,))
    residents[0].last_used, residents[1].last_used = 3.0, 30.0
    assert plan(residents, 100 * MB, {}) == Plan(evict=(0,))


def test_as_many_idle_models_as_the_room_needs_are_evicted_oldest_first():
    residents = [loaded(0, "standard", 30 * MB, last_used=1.0), loaded(1, "turbo", 30 * MB, last_used=2.0),
                 loaded(2, "extra", 30 * MB, last_used=3.0), wanting(3, "multilingual", since=4.0, expected=60 * MB)]
    assert plan(residents, 100 * MB, {}) == Plan(evict=(0, 1))


def test_a_busy_model_is_never_evicted_even_when_it_is_the_least_recently_used():
    residents = [loaded(0, "standard", last_used=1.0, busy=True), loaded(1, "turbo", last_used=9.0),
                 wanting(2, "multilingual", since=10.0)]
    assert plan(residents, 100 * MB, {}).evict == (1,)


def test_a_model_with_a_load_in_progress_or_wanted_at_another_worker_is_not_idle():
    # standard has two workers: one loaded and idle (the least recently used model), the other loading or
    # asking to load -> standard is in use; turbo, used later, makes the room
    for other in (Resident(1, "standard", loading_bytes=1), Resident(1, "standard", wants_since=9.0)):
        residents = [loaded(0, "standard", last_used=1.0), other, loaded(2, "turbo", 30 * MB, last_used=8.0),
                     wanting(3, "multilingual", since=0.2)]
        assert plan(residents, 100 * MB, {}) == Plan(evict=(2,))


def test_when_evicting_every_idle_model_is_not_enough_nothing_is_evicted_and_the_load_waits():
    residents = [loaded(0, "standard", 50 * MB, busy=True), loaded(1, "turbo", 20 * MB, last_used=1.0),
                 wanting(2, "multilingual", since=2.0, expected=50 * MB)]
    # 50 busy + 50 wanted = 100 > 90 even with turbo gone: turbo stays, multilingual waits
    assert plan(residents, 90 * MB, {}) == Plan()


def test_when_both_loaded_models_are_busy_the_third_waits_without_evictions():
    residents = [loaded(0, "standard", busy=True), loaded(1, "turbo", busy=True), wanting(2, "multilingual", 3.0)]
    assert plan(residents, 100 * MB, {}) == Plan()
    residents[1].busy = False          # turbo's request ended: now it makes room
    assert plan(residents, 100 * MB, {}) == Plan(evict=(1,))


def test_the_model_that_wants_the_load_is_never_evicted_for_itself():
    # a second worker of multilingual is loaded and idle; its first worker wants room
    residents = [loaded(0, "multilingual", last_used=1.0), wanting(1, "multilingual", since=2.0),
                 loaded(2, "standard", last_used=3.0)]
    result = plan(residents, 100 * MB, {})
    assert result.evict == (2,)


# -- refusals, order ---------------------------------------------------------------------------------
def test_a_model_bigger_than_the_whole_budget_is_refused_with_a_message_naming_it_and_the_budget():
    residents = [loaded(0, "standard"), wanting(1, "turbo", since=1.0, expected=200 * MB)]
    result = plan(residents, 100 * MB, {})
    assert result.grant == () and result.evict == ()
    [(slot, message)] = result.refuse
    assert slot == 1
    assert "turbo" in message and "CHATTERBOX_GPU_MEMORY_BUDGET" in message and "0.10 GB" in message


def test_a_refused_model_does_not_hold_up_the_loads_behind_it():
    residents = [wanting(0, "turbo", since=1.0, expected=200 * MB), wanting(1, "standard", since=2.0)]
    result = plan(residents, 100 * MB, {})
    assert result.grant == (1,) and [slot for slot, _ in result.refuse] == [0]


def test_loads_are_granted_first_come_first_served_a_small_one_waits_behind_one_making_room():
    residents = [loaded(0, "standard", 60 * MB, last_used=1.0),
                 wanting(1, "multilingual", since=2.0, expected=80 * MB),
                 wanting(2, "turbo", since=3.0, expected=10 * MB)]
    # turbo alone would fit (60 + 10 <= 100), but multilingual asked first and needs standard's room
    result = plan(residents, 100 * MB, {})
    assert result.grant == () and result.evict == (0,)


def test_slots_already_unloading_count_as_freed():
    residents = [loaded(0, "standard", last_used=1.0, unloading=True), loaded(1, "turbo", last_used=2.0),
                 wanting(2, "multilingual", since=3.0)]
    # standard's unload frees the room: turbo is not evicted as well, the load waits for the confirmation
    assert plan(residents, 100 * MB, {}) == Plan()


def test_over_budget_after_a_measured_load_evicts_the_least_recently_used_idle_model():
    # every model expected 30 MB, multilingual measured 50 once loaded: 110 > 100
    residents = [loaded(0, "standard", 30 * MB, last_used=5.0), loaded(1, "turbo", 30 * MB, last_used=2.0),
                 loaded(2, "multilingual", 50 * MB, last_used=9.0)]
    assert plan(residents, 100 * MB, {"multilingual": 50 * MB}) == Plan(evict=(1,))


def test_over_budget_with_only_busy_models_evicts_nothing():
    residents = [loaded(0, "standard", 60 * MB, busy=True), loaded(1, "turbo", 60 * MB, busy=True)]
    assert plan(residents, 100 * MB, {}) == Plan()


def test_a_model_with_two_workers_counts_both_copies():
    residents = [loaded(0, "standard", 40 * MB, last_used=1.0), loaded(1, "standard", 40 * MB, last_used=2.0),
                 wanting(2, "turbo", since=3.0)]
    # 80 + 40 > 100: standard's two workers are unloaded together
    assert plan(residents, 100 * MB, {}) == Plan(evict=(0, 1))
    # a model is as recent as its most recent worker: turbo-old (used at 1.5) goes before standard (at 2)
    residents.append(loaded(3, "turbo-old", 20 * MB, last_used=1.5))
    assert plan(residents, 120 * MB, {}) == Plan(evict=(3,))
    # two workers wanting the same model each need their own room
    two = [wanting(0, "standard", since=1.0), wanting(1, "standard", since=1.1)]
    assert plan(two, 60 * MB, {}) == Plan(grant=(0,))
