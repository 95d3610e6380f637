"""PostgreSQL down, hung (SIGSTOP of every postgres process) and slow, on a real server: the
server boots without it, speech (which needs no database) goes on at full speed, the routes that
need it answer 503 `database_unavailable` within the configured bound, and everything comes
back, history included, once the database does."""
from __future__ import annotations

import concurrent.futures
import os
import signal
import time

import psutil
import pytest
import requests
from pgkit import postgres  # noqa: F401 - the session fixture
from serverkit import Server, start_server

pytestmark = [pytest.mark.server, pytest.mark.slow]
LONG = "/v1/audio/speech/long"
DB_TIMEOUT = 3.0


def speak(server: Server) -> float:
    started = time.monotonic()
    response = requests.post(server.url("/v1/audio/speech"), json={"input": "Still speaking.",
                                                                   "response_format": "wav"}, timeout=30)
    assert response.status_code == 200, response.text
    assert len(response.content) > 1000
    return time.monotonic() - started


def timed(server: Server, path: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(server.url(path), timeout=60)
    return response, time.monotonic() - started


def assert_unavailable(server: Server, path: str, within: float) -> None:
    response, seconds = timed(server, path)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers.get("Retry-After")
    assert seconds < within, seconds


def test_the_server_boots_and_speaks_with_postgresql_down(tmp_path):
    nowhere = tmp_path / "no-postgres-here"
    nowhere.mkdir()
    server = start_server(tmp_path, engine="tone", front_workers="2", database_timeout=str(DB_TIMEOUT),
                          database_url=f"postgresql://postgres@/chatterbox?host={nowhere}&port=5999")
    try:
        for _ in range(4):
            assert speak(server) < 3.0
        assert_unavailable(server, LONG, within=DB_TIMEOUT + 2)
        assert_unavailable(server, "/v1/status/history", within=DB_TIMEOUT + 2)
        response = requests.post(server.url(LONG), json={"input": "A long story.", "response_format": "wav"},
                                 timeout=30)
        assert response.status_code == 503 and response.json()["error"]["code"] == "database_unavailable"
        # /health says so (each front worker knows what its own requests met)
        states = [server.health()["optional"]["database"] for _ in range(8)]
        assert all(state["available"] is not True for state in states)
        assert any(state["code"] == "unreachable" and state["reason"] for state in states), states
        assert server.process.poll() is None
        assert "Worker failed to boot" not in server.log()
    finally:
        server.stop()


def cluster_processes(cluster) -> list[psutil.Process]:  # noqa: ANN001 - pgkit.Cluster
    with open(os.path.join(cluster.directory, "data", "postmaster.pid")) as f:
        postmaster = psutil.Process(int(f.readline()))
    return [postmaster, *postmaster.children(recursive=True)]


def signal_all(processes: list[psutil.Process], sig: int) -> None:
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            pass


def history_ids(server: Server) -> set[str]:
    response = requests.get(server.url("/v1/status/history?limit=50"), timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    entries = body.get("request_history") or body.get("history") or []
    return {entry["request_id"] for entry in entries}


def test_a_hung_then_slow_postgresql_stalls_nothing_that_does_not_need_it(tmp_path, postgres):  # noqa: F811
    url = postgres.new_database()
    server = start_server(tmp_path, engine="tone", front_workers="1", database_timeout=str(DB_TIMEOUT),
                          database_connect_timeout="2", database_url=url)
    processes: list[psutil.Process] = []
    try:
        speak(server)
        assert timed(server, LONG)[0].status_code == 200       # pooled connections now exist
        before = len(history_ids(server))
        processes = cluster_processes(postgres)
        signal_all(processes, signal.SIGSTOP)                   # hung: accepts nothing, answers nothing
        for _ in range(3):
            assert speak(server) < 3.0
        assert_unavailable(server, LONG, within=DB_TIMEOUT + 2)
        assert_unavailable(server, f"{LONG}/some-job", within=3)     # failing fast meanwhile
        assert speak(server) < 3.0
        signal_all(processes, signal.SIGCONT)
        processes = []
        deadline = time.monotonic() + 20
        while (response := timed(server, LONG)[0]).status_code != 200:
            assert time.monotonic() < deadline, response.text
            time.sleep(0.5)
        # the requests spoken while it hung reach the history once it is back
        deadline = time.monotonic() + 20
        while len(history_ids(server)) < before + 4:
            assert time.monotonic() < deadline, (before, history_ids(server))
            time.sleep(0.5)
        # slow: a database that answers late, within the bound, makes the request late, not failed
        processes = cluster_processes(postgres)
        signal_all(processes, signal.SIGSTOP)
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            late = executor.submit(timed, server, LONG)
            time.sleep(1.5)
            signal_all(processes, signal.SIGCONT)
            processes = []
            response, seconds = late.result()
        assert response.status_code == 200 and 1.4 < seconds < DB_TIMEOUT, (response.text, seconds)
        assert server.process.poll() is None
    finally:
        signal_all(processes, signal.SIGCONT)
        server.stop()
