"""Two instances behind one nginx (config/nginx/chatterbox-server-cluster.conf): spread and failover.

Starts two servers (tone engine) on one data directory and nginx on loopback, sends short requests
through nginx, then SIGKILLs the process group of the box serving a long stream and reports what
the stream's clients (requests and curl) see, how fast, and what happens to the requests after.
Needs nginx (apt-get install nginx-light) and curl. Results: docs/benchmarks.md.

    .venv/bin/python scripts/bench_cluster.py --requests 50 --output cluster.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from nginxkit import Nginx, run_nginx  # noqa: E402
from serverkit import ROOT, Server, free_port, start_server  # noqa: E402

SITE = ROOT / "config" / "nginx" / "chatterbox-server-cluster.conf"
LONG_TEXT = " ".join(f"Sentence {i} is here. [[sleep:0.25]]" for i in range(40))


def short_requests(base: str, count: int) -> list[tuple[int, float]]:
    results = []
    for _ in range(count):
        started = time.perf_counter()
        response = requests.post(base + "/v1/audio/speech", json={"input": "one two three"}, timeout=60)
        results.append((response.status_code, (time.perf_counter() - started) * 1000))
    return results


def summary(results: list[tuple[int, float]], nginx: Nginx, first_line: int) -> dict:
    lines = [line for line in nginx.access_lines()[first_line:] if line.startswith("POST /v1/audio/speech ")]
    tried = [line.split("upstreams=")[1].split(" statuses=")[0] for line in lines]
    latencies = [ms for _, ms in results]
    return {"statuses": dict(Counter(status for status, _ in results)),
            "served_by": dict(Counter(attempts.split(", ")[-1] for attempts in tried)),
            "passed_on_to_another_box": sum(", " in attempts for attempts in tried),
            "latency_ms": {"median": round(statistics.median(latencies), 1),
                           "max": round(max(latencies), 1), "first_3": [round(ms, 1) for ms in latencies[:3]]}}


def curl_stream(base: str) -> subprocess.Popen:
    return subprocess.Popen(["curl", "-sS", "-o", os.devnull, "-X", "POST", base + "/v1/audio/speech/stream",
                             "-H", "Content-Type: application/json", "-d", json.dumps({"input": LONG_TEXT})],
                            stderr=subprocess.PIPE, text=True)


def requests_stream(base: str, report: dict, key: str, killed: threading.Event, kill_time: list[float]) -> None:
    received = 0
    try:
        with requests.post(base + "/v1/audio/speech/stream", json={"input": LONG_TEXT}, stream=True,
                           timeout=60) as response:
            for chunk in response.iter_content(None):
                received += len(chunk)
        outcome = "complete"
    except requests.RequestException as exc:
        outcome = repr(exc)
    report[key] = {"bytes": received, "outcome": outcome,
                   "ms_after_kill": round((time.perf_counter() - kill_time[0]) * 1000, 1) if killed.is_set() else None}


def kill_group(server: Server) -> float:
    started = time.perf_counter()
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    return started


def run(count: int, workdir: Path) -> dict:
    shared = workdir / "shared-data"
    servers: list[Server] = []
    try:
        for name in ("a", "b"):
            (workdir / name).mkdir()
            servers.append(start_server(workdir / name, engine="tone", data_dir=str(shared), trust_proxy="1"))
        port = free_port()
        boxes = iter(server.base.removeprefix("http://") for server in servers)
        site = re.sub(r"server 10\.0\.0\.\d+:4123", lambda _: f"server {next(boxes)}",
                      SITE.read_text().replace("listen 80;", f"listen 127.0.0.1:{port};"))
        (workdir / "nginx").mkdir()
        with run_nginx(workdir / "nginx", site, port) as nginx:
            report: dict = {"both_up": summary(short_requests(nginx.base, count), nginx, 0)}
            # a curl stream, then a requests stream: least_conn puts them on different boxes
            curl = curl_stream(nginx.base)
            deadline = time.monotonic() + 10
            while sum(server.health()["jobs_in_flight"] for server in servers) < 1:
                assert time.monotonic() < deadline, "the curl stream never started"
                time.sleep(0.05)
            victim = next(server for server in servers if server.health()["jobs_in_flight"] == 1)
            killed, kill_time = threading.Event(), [0.0]
            streams: dict = {}
            other = threading.Thread(target=requests_stream, args=(nginx.base, streams, "stream_on_live_box",
                                                                   killed, kill_time))
            other.start()
            time.sleep(1.0)
            kill_time[0] = kill_group(victim)
            killed.set()
            _, curl_error = curl.communicate(timeout=30)
            streams["stream_on_killed_box"] = {
                "client": "curl", "exit_code": curl.returncode, "stderr": curl_error.strip(),
                "ms_after_kill": round((time.perf_counter() - kill_time[0]) * 1000, 1)}
            first_line = len(nginx.access_lines())
            after = short_requests(nginx.base, count)
            other.join(timeout=60)
            report["streams"] = streams
            report["one_box_killed"] = summary(after, nginx, first_line)
            report["killed_box"] = victim.base.removeprefix("http://")
            report["nginx_error_log"] = [line.split("] ", 1)[1][:400] for line in nginx.error_log().splitlines()
                                         if "[error]" in line or "[warn]" in line]
            return report
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="short requests before and after the kill")
    parser.add_argument("--output", type=Path, help="write the report as JSON here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as workdir:
        report = run(args.requests, Path(workdir))
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
