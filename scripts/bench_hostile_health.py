"""/health latency while hostile requests of one kind at a time are in flight (issue 16).

For each kind of request over a budget (tests/server/test_budgets.py's hostile_requests), three
keep-alive clients send only that kind for a few seconds while /health is probed every 50 ms; the
same probes on an idle server come first, as the baseline of the same run. Prints one line a kind:
/health p50, p95 and max, and how many hostile requests were answered and their median time.

    .venv/bin/python scripts/bench_hostile_health.py [KIND ...] [--seconds 6]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "server")]

import test_budgets  # noqa: E402
from serverkit import start_server  # noqa: E402


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0.0


def measure(server, request: tuple[str, dict] | None, seconds: float) -> tuple[list[float], list[float]]:
    stop = threading.Event()
    hostile: list[float] = []

    def attack() -> None:
        session = requests.Session()
        url, kwargs = request
        while not stop.is_set():
            started = time.monotonic()
            try:
                session.post(url, timeout=10, **kwargs)
            except requests.RequestException:
                session = requests.Session()
            hostile.append(time.monotonic() - started)
    threads = [threading.Thread(target=attack, daemon=True) for _ in range(3 if request else 0)]
    for thread in threads:
        thread.start()
    probes = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            requests.get(server.url("/health"), timeout=5)
        except requests.RequestException:
            pass                                        # counted at its full wait
        probes.append(time.monotonic() - started)
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    return probes, hostile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine="tone", front_workers="2", model_workers="1",
                              max_vc_seconds=str(test_budgets.VC_LIMIT_SECONDS),
                              longtext_max_chunks=str(test_budgets.LONG_CHUNKS))
        try:
            hostile = test_budgets.hostile_requests(server)
            for kind in [None, *(args.kinds or sorted(hostile))]:
                probes, answered = measure(server, hostile[kind] if kind else None, args.seconds)
                print(f"{kind or 'idle':16} /health p50 {percentile(probes, 0.5) * 1000:5.0f} "
                      f"p95 {percentile(probes, 0.95) * 1000:5.0f} max {max(probes) * 1000:5.0f} ms; "
                      f"{len(answered):5d} hostile, median {percentile(answered, 0.5) * 1000:4.0f} ms", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
