"""Model-worker sends that never block, and parked jobs (a client that reads no audio).

The outbox's framing is checked against multiprocessing's own; the rest runs a real model worker
(tone engine) with a short CHATTERBOX_PARKED_TIMEOUT, driven by PoolClient like tests/unit/test_pool.py
and by raw sockets playing a front worker that stopped reading.
"""
from __future__ import annotations

import os
import selectors
import socket
import threading
import time
from multiprocessing.connection import Connection

import gevent
import pytest
from test_pool import collect, make_job, new_client, wait_for, wait_idle

from chatterbox_server.runtime.pool_client import PoolError
from chatterbox_server.settings import Settings, SettingsError
from workers.ipc.outbox import Outbox, PeerGone, frame
from workers.ipc.protocol import Accepted, AudioChunk, JobFailed
from workers.model_worker import socket_path
from workers.pool import RUN_DIR_ENV, ModelPool
from workers.scheduler.parking import review

PARKED_TIMEOUT = 1.5
PARKED_CAP = 2          # the worker's CHATTERBOX_MAX_QUEUED_JOBS (the clients here pass their own)
BIG_CHUNK = " ".join(f"w{i}" for i in range(300))      # tone: 300 words = 2.2 MB of PCM16, far above a socket buffer


# -- framing and the outbox itself --------------------------------------------------------------
def written_by_multiprocessing(payload: bytes) -> bytes:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        sender = threading.Thread(target=Connection(os.dup(ours.fileno())).send_bytes, args=(payload,))
        sender.start()
        received = bytearray()
        theirs.settimeout(5)
        while len(received) < len(payload) + 4:
            received += theirs.recv(1 << 20)
        sender.join(5)
    return bytes(received)


@pytest.mark.parametrize("size", [0, 1, 16384, 16385, 300_000])
def test_frames_are_byte_for_byte_what_a_connection_sends(size):
    payload = os.urandom(size)
    assert b"".join(frame(payload)) == written_by_multiprocessing(payload)


def test_a_message_over_two_gib_gets_the_long_header():
    class Huge(bytes):
        def __len__(self) -> int:
            return 2**31

    pieces = frame(Huge())
    assert pieces[0] == b"\xff\xff\xff\xff" + (2**31).to_bytes(8, "big")


def test_an_outbox_never_blocks_and_delivers_every_message_in_order():
    ours, theirs = socket.socketpair()
    outbox = Outbox(ours.fileno())
    messages = [AudioChunk(i, os.urandom(700_000), i, i, 0.1) for i in range(4)]
    started = time.monotonic()
    for message in messages:
        outbox.put(message)
    assert outbox.flush() is False              # the peer reads nothing yet: most of it waits here
    assert time.monotonic() - started < 0.5
    assert outbox.pending_bytes > 2_000_000

    received: list = []
    reader = threading.Thread(target=lambda: received.extend(Connection(os.dup(theirs.fileno())).recv()
                                                             for _ in messages))
    reader.start()
    with selectors.PollSelector() as selector:
        selector.register(ours, selectors.EVENT_WRITE)
        while not outbox.flush():
            assert selector.select(5), "the socket never became writable"
    reader.join(5)
    assert received == messages
    assert outbox.pending_bytes == 0 and outbox.stalled_for() == 0
    outbox.close()
    ours.close()                                # the outbox wrote through its own duplicate
    theirs.close()


def test_a_peer_that_went_away_is_reported():
    ours, theirs = socket.socketpair()
    outbox = Outbox(ours.fileno())
    theirs.close()
    outbox.put(Accepted(0, 0))
    with pytest.raises(PeerGone):
        outbox.flush()
    outbox.close()
    ours.close()


def test_stalled_for_counts_from_the_last_byte_the_peer_took():
    now = [100.0]
    ours, theirs = socket.socketpair()
    outbox = Outbox(ours.fileno(), clock=lambda: now[0])
    now[0] = 150.0
    outbox.put(AudioChunk(0, os.urandom(3_000_000), 0, 0, 0.0))
    assert outbox.stalled_for() == 0.0          # waiting bytes start the clock, an idle outbox does not
    outbox.flush()
    now[0] = 160.0
    assert outbox.stalled_for() == 10.0
    outbox.close()
    ours.close()
    theirs.close()


class Job:
    def __init__(self, parked: bool, since: float | None = None) -> None:
        self.parked, self.parked_since = parked, since


def test_parking_stamps_new_parked_jobs_and_forgets_those_that_got_credit():
    new, resumed, running = Job(True), Job(False, since=5.0), Job(False)
    cancel, parked = review([new, resumed, running], now=10.0, timeout=120, cap=8)
    assert (cancel, parked) == ([], 1)
    assert (new.parked_since, resumed.parked_since, running.parked_since) == (10.0, None, None)


def test_parking_cancels_after_the_timeout_and_beyond_the_cap_the_longest_parked():
    overdue, old, middle, young = Job(True, 0.0), Job(True, 50.0), Job(True, 60.0), Job(True, 70.0)
    cancel, parked = review([young, overdue, middle, old], now=120.0, timeout=120, cap=2)
    assert [job for job, _ in cancel] == [overdue, old] and parked == 2
    assert cancel[0][1] == "the client read no audio for 120 s"
    assert cancel[1][1] == "the client read no audio for 70 s while 2 other streams were paused on this worker"


def test_parked_timeout_must_be_positive():
    assert Settings.from_env({}).parked_timeout == 120.0
    assert Settings.from_env({"CHATTERBOX_PARKED_TIMEOUT": "2.5"}).parked_timeout == 2.5
    with pytest.raises(SettingsError, match="CHATTERBOX_PARKED_TIMEOUT"):
        Settings.from_env({"CHATTERBOX_PARKED_TIMEOUT": "0"})


# -- a real model worker ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    saved = os.environ.get(RUN_DIR_ENV)
    settings = Settings.from_env({}, engine="tone", run_dir=str(tmp_path_factory.mktemp("outbox") / "run"),
                                 parked_timeout=PARKED_TIMEOUT, max_queued_jobs=PARKED_CAP, graceful_timeout=5,
                                 log_level="warning")
    pool = ModelPool(settings)
    pool.start()
    client = new_client(pool)
    wait_for(lambda: client.ready_slots(), 20.0, what="the worker to be ready")
    client.board.close()
    yield pool
    pool.stop()
    if saved is None:
        os.environ.pop(RUN_DIR_ENV, None)
    else:
        os.environ[RUN_DIR_ENV] = saved


@pytest.fixture
def client(pool):
    client = new_client(pool, max_queued_jobs=1, queue_timeout=5.0, chunk_timeout=5.0)
    wait_idle(client, 1)
    wait_for(lambda: parked(client) == 0, 5.0, what="no parked job left by an earlier test")
    yield client
    client.board.close()


def parked(client) -> int:
    return client.slots()[0].info.get("outbox", {}).get("parked_jobs", 0)


def test_a_front_worker_that_stops_reading_does_not_hold_up_the_other_jobs(pool, client):
    # a front worker that is alive but reads nothing (stopped, busy): its job's audio fills the socket
    stuck = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stuck.connect(socket_path(pool.run_dir, 0))
    Connection(os.dup(stuck.fileno())).send(make_job(*[BIG_CHUNK] * 10, buffer_size=3))
    roomy = new_client(pool, max_queued_jobs=4, queue_timeout=5.0, chunk_timeout=5.0)
    try:
        wait_for(lambda: client.slots()[0].active + parked(client) == 1, 2.0, what="the stuck job to start")
        started = time.monotonic()
        chunks = collect(roomy.submit(make_job(*[f"other {i}" for i in range(5)], buffer_size=3)))
        assert [c.index for c in chunks] == [0, 1, 2, 3, 4]
        assert time.monotonic() - started < 2.0
        assert parked(client) == 1              # the stuck job made its three messages, and waits
        # the stuck peer took no byte for CHATTERBOX_PARKED_TIMEOUT: its connection is dropped
        wait_for(lambda: client.slots()[0].active == 0 and parked(client) == 0, PARKED_TIMEOUT + 3.0,
                 what="the stuck connection to be dropped")
        stuck.settimeout(5)
        drained = 0
        while piece := stuck.recv(1 << 20):
            drained += len(piece)
        assert 0 < drained <= 3 * len(BIG_CHUNK.split()) * 7200 + 4096     # at most the credited audio, then EOF
    finally:
        roomy.board.close()
        stuck.close()


def test_a_parked_job_is_not_counted_and_is_cancelled_after_the_timeout(client):
    failed_before = client.slots()[0].jobs_failed
    held = client.submit(make_job(*[f"chunk {i}" for i in range(8)], buffer_size=2))
    try:
        wait_for(lambda: held.messages.qsize() >= 3, 2.0, what="Accepted and two chunks")
        parked_at = time.monotonic()
        wait_for(lambda: parked(client) == 1 and client.slots()[0].active == 0, 1.0,
                 what="the job to show as parked, not active")
        # CHATTERBOX_MAX_QUEUED_JOBS=1 here: the parked job leaves room for another
        other = collect(client.submit(make_job("next one", "and more", buffer_size=2)))
        assert [c.index for c in other] == [0, 1]
        assert not any(isinstance(m, JobFailed) for m in held.messages.queue)
        failure = wait_for(lambda: next((m for m in held.messages.queue if isinstance(m, JobFailed)), None),
                           PARKED_TIMEOUT + 2.0, what="the parked job to be cancelled")
        waited = time.monotonic() - parked_at
        assert PARKED_TIMEOUT - 0.2 < waited < PARKED_TIMEOUT + 1.5, waited
        assert (failure.status, failure.kind) == (408, "client")
        assert "read no audio for 1.5 s" in failure.message
        received = []
        with pytest.raises(PoolError) as info:
            for chunk in held.chunks():
                received.append(chunk.index)
        assert received == [0, 1] and info.value.status == 408
        wait_for(lambda: parked(client) == 0, 1.0, what="parked_jobs back to 0")
        assert client.slots()[0].jobs_failed == failed_before     # the client's doing, not the engine's
    finally:
        held.close()


def test_a_worker_keeps_at_most_max_queued_jobs_parked_and_cancels_the_oldest(pool, client):
    roomy = new_client(pool, max_queued_jobs=8, queue_timeout=5.0, chunk_timeout=5.0)
    handles = []
    try:
        for count in range(1, PARKED_CAP + 2):
            handles.append(roomy.submit(make_job(*[f"job{count} chunk{i}" for i in range(6)], buffer_size=1)))
            wait_for(lambda: handles[-1].messages.qsize() >= 2, 2.0, what="Accepted and one chunk")
            gevent.sleep(0.05)      # parked in this order
        oldest = wait_for(lambda: next((m for m in handles[0].messages.queue if isinstance(m, JobFailed)), None),
                          1.0, what="the oldest parked job to be cancelled")
        assert oldest.status == 408 and f"while {PARKED_CAP} other streams were paused" in oldest.message
        assert parked(client) == PARKED_CAP
        assert not any(isinstance(m, JobFailed) for h in handles[1:] for m in h.messages.queue)
    finally:
        for handle in handles:
            handle.close()
        roomy.board.close()


def test_a_reader_that_pauses_less_than_the_timeout_gets_every_chunk(client):
    handle = client.submit(make_job(*[f"part {i}" for i in range(6)], buffer_size=2))
    try:
        chunks = handle.chunks()
        first = next(chunks)
        wait_for(lambda: parked(client) == 1, 1.0, what="the job to park")
        gevent.sleep(PARKED_TIMEOUT * 0.6)
        rest = list(chunks)
    finally:
        handle.close()
    assert [c.index for c in [first, *rest]] == list(range(6))
    assert handle.result is not None
