"""Fault injection against a real server: crashes, engine errors, disconnects, shutdown.

The `tone` test engine synthesizes instantly and obeys markers in the text: [[sleep:S]],
[[fail]] (a request error), [[error]] (an unexpected exception) and [[crash]] (the model-worker
process dies on the spot).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import time
from urllib.parse import urlparse

import psutil
import pytest
import requests
from serverkit import start_server

pytestmark = pytest.mark.server
FIRST = "Alpha beta gamma delta epsilon zeta eta theta."     # one chunk of its own at size 50


def stream_body(second: str, **extra) -> dict:
    return {"input": f"{FIRST} {second}", "streaming_chunk_size": 50, **extra}


def restarts(server) -> int:
    return sum(slot["restarts"] for slot in server.health()["workers"]["slots"])


def wait_ready_again(server, restarts_before: int) -> None:
    server.wait_until(lambda h: h["ready"] and sum(s["restarts"] for s in h["workers"]["slots"]) > restarts_before,
                      timeout=30)


def test_engine_error_before_audio_is_a_clear_400(tone_server):
    response = requests.post(tone_server.url("/v1/audio/speech/stream"), json={"input": "[[fail]] words"})
    assert response.status_code == 400
    assert "asked to fail" in response.json()["error"]["message"]


def test_unexpected_engine_error_is_a_json_500_and_the_worker_survives(tone_server):
    before = restarts(tone_server)
    response = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "[[error]] words"})
    assert response.status_code == 500
    error = response.json()["error"]
    assert error["code"] == "synthesis_failed" and "RuntimeError" not in error["message"]      # no exception text
    assert "broke unexpectedly" in tone_server.log()                                           # the log has it
    assert requests.post(tone_server.url("/v1/audio/speech"), json={"input": "fine now"}).status_code == 200
    assert restarts(tone_server) == before


def test_crash_before_audio_is_503_and_the_worker_is_replaced(tone_server):
    before = restarts(tone_server)
    response = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "[[crash]] words"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "model_worker_died"
    wait_ready_again(tone_server, before)
    assert requests.post(tone_server.url("/v1/audio/speech"), json={"input": "back again"}).status_code == 200


def test_crash_mid_stream_aborts_the_transfer_instead_of_ending_it_cleanly(tone_server):
    before = restarts(tone_server)
    response = requests.post(tone_server.url("/v1/audio/speech/stream"),
                             json=stream_body("[[sleep:0.2]] [[crash]] Omega."), stream=True)
    assert response.status_code == 200
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for _ in response.iter_content(4096):
            pass
    wait_ready_again(tone_server, before)


def test_crash_mid_sse_ends_with_an_error_event(tone_server):
    before = restarts(tone_server)
    response = requests.post(tone_server.url("/v1/audio/speech"),
                             json=stream_body("[[sleep:0.2]] [[crash]] Omega.", stream_format="sse"), stream=True)
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    types = [event["type"] for event in events]
    assert types[0] == "speech.audio.info" and "speech.audio.delta" in types
    assert types[-1] == "error" and "speech.audio.done" not in types
    assert events[-1]["error"]["code"] == "model_worker_died"
    wait_ready_again(tone_server, before)


def test_error_after_first_chunk_in_sse_is_an_error_event(tone_server):
    response = requests.post(tone_server.url("/v1/audio/speech"),
                             json=stream_body("[[error]] Omega.", stream_format="sse"), stream=True)
    events = [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]
    assert events[-1]["type"] == "error" and events[-1]["error"]["code"] == "synthesis_failed"
    assert "RuntimeError" not in events[-1]["error"]["message"]        # no exception text for clients


def test_killed_model_worker_mid_stream_ends_the_request_with_an_error(tone_server):
    before = restarts(tone_server)
    pid = tone_server.health()["workers"]["slots"][0]["pid"]
    text = " ".join(f"Sentence number {i} is here. [[sleep:0.2]]" for i in range(30))
    response = requests.post(tone_server.url("/v1/audio/speech/stream"),
                             json={"input": text, "streaming_chunk_size": 50}, stream=True)
    chunks = response.iter_content(4096)
    next(chunks)
    os.kill(pid, signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for _ in chunks:
            pass
    assert time.monotonic() - started < 5
    wait_ready_again(tone_server, before)


def test_client_disconnect_cancels_the_job_quickly(tone_server):
    text = " ".join(f"Sentence number {i} is here. [[sleep:0.3]]" for i in range(40))
    address = urlparse(tone_server.base)
    body = json.dumps({"input": text, "streaming_chunk_size": 50}).encode()
    with socket.create_connection((address.hostname, address.port)) as sock:
        sock.sendall(b"POST /v1/audio/speech/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        tone_server.wait_until(lambda h: h["jobs_in_flight"] == 1, timeout=5)
    closed = time.monotonic()
    tone_server.wait_until(lambda h: h["jobs_in_flight"] == 0, timeout=5, interval=0.05)
    assert time.monotonic() - closed < 1.5      # one 0.3 s chunk at most, not 40 of them
    assert requests.get(tone_server.url("/v1/status")).json()["active_requests"] == 0


def test_killed_front_worker_releases_its_job(tone_server):
    text = " ".join(f"Sentence number {i} is here. [[sleep:0.3]]" for i in range(40))
    response = requests.post(tone_server.url("/v1/audio/speech/stream"),
                             json={"input": text, "streaming_chunk_size": 50}, stream=True)
    chunks = response.iter_content(4096)     # kept: a collected iterator would hang up (and cancel)
    next(chunks)
    holder = requests.get(tone_server.url("/v1/status/progress")).json()["front_worker_pid"]
    assert holder in {p.pid for p in psutil.Process(tone_server.process.pid).children()}
    os.kill(holder, signal.SIGKILL)
    killed = time.monotonic()
    tone_server.wait_until(lambda h: h["jobs_in_flight"] == 0, timeout=5, interval=0.05)
    assert time.monotonic() - killed < 1.5
    response.close()
    tone_server.wait_until(lambda h: h["ready"], timeout=30)
    assert requests.post(tone_server.url("/v1/audio/speech"), json={"input": "still here"}).status_code == 200


def test_graceful_stop_finishes_running_streams_and_leaves_no_process(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", graceful_timeout="20")
    tree = [server.process.pid] + [p.pid for p in psutil.Process(server.process.pid).children(recursive=True)]
    text = " ".join(f"Word {i}. [[sleep:0.1]]" for i in range(20))
    response = requests.post(server.url("/v1/audio/speech/stream"),
                             json={"input": text, "streaming_chunk_size": 50}, stream=True)
    chunks = response.iter_content(4096)
    first = next(chunks)
    server.process.send_signal(signal.SIGTERM)
    body = first + b"".join(chunks)        # completes, no ChunkedEncodingError
    words = len(text.split()) - 20
    assert len(body) - 44 == pytest.approx(words * 0.15 * 24000 * 2, rel=0.01)
    assert server.process.wait(timeout=30) == 0
    time.sleep(0.5)
    assert [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"] == []


def front_worker_pids(master: psutil.Process) -> set[int]:
    pids = set()
    for child in master.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "gunicorn: worker" in " ".join(child.cmdline()):
                pids.add(child.pid)
        except psutil.Error:
            pass     # exiting
    return pids


def test_reload_replaces_front_workers_and_keeps_the_model_pool(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="2", graceful_timeout="5")
    try:
        master = psutil.Process(server.process.pid)
        fronts = front_worker_pids(master)
        model_pid = server.health()["workers"]["slots"][0]["pid"]
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = front_worker_pids(master)
            if len(now) == 2 and not now & fronts:
                break
            time.sleep(0.2)
        assert len(now) == 2 and not now & fronts, (fronts, now)
        # the new front workers exist before they answer: on a loaded machine their boot takes seconds
        report = server.wait_until(lambda h: bool(h["workers"]["slots"]), timeout=30)
        assert report["workers"]["slots"][0]["pid"] == model_pid
        after = requests.post(server.url("/v1/audio/speech"), json={"input": "after reload"}, timeout=60)
        assert after.status_code == 200
        tree = [server.process.pid] + [p.pid for p in master.children(recursive=True)]
    finally:
        assert server.stop() == 0
    time.sleep(0.5)
    assert [pid for pid in tree if psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"] == []


def test_a_killed_supervisor_is_replaced_with_new_model_workers(tone_server):
    before = tone_server.health()["workers"]["slots"][0]["pid"]
    supervisor = next(p for p in psutil.Process(tone_server.process.pid).children()
                      if p.cmdline() and p.cmdline()[0].startswith("chatterbox-pool-supervisor"))
    supervisor.kill()
    report = tone_server.wait_until(
        lambda h: h["ready"] and h["workers"]["slots"][0]["pid"] not in (before, 0), timeout=30)
    assert report["workers"]["supervisor_alive"] is True
    assert not psutil.pid_exists(before) or psutil.Process(before).status() == psutil.STATUS_ZOMBIE
    assert requests.post(tone_server.url("/v1/audio/speech"), json={"input": "new pool"}).status_code == 200
