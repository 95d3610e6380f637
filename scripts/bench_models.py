"""Several models on one server (issue 20, "Speed"). Each part on fresh servers (tests/serverkit.py).

- ``reload``: a model's first audio when it has to be loaded: on a fresh server that has not
  loaded it yet (cold: the worker's first load) against after an idle unload (reload: the worker
  process stays; from a host copy on a GPU, from disk, usually the page cache, on a CPU). Alternating
  cold and reload rounds; the ratio of the medians. The engine is a random-weight Chatterbox
  checkpoint (`--engine chatterbox`, built here unless `--checkpoint-dir`) or the embedded voice
  (`--engine hibari`: CHATTERBOX_ENGINE=auto without weights, each model falls back to hibari).
- ``flood``: first audio of model A (streamed) alone, against while model B is flooded by
  `--flood` concurrent streams that never stop. Interleaved samples; the ratio of the medians.
  Target: within 1.2x. `--flood-engine hibari`: both models are the embedded voice (auto without
  weights), so B's worker really computes, on the same CPU cores as A's. `--flood-engine tone`:
  B's chunks take 0.5 s without using the CPU (as a GPU's work would not use it), which isolates
  what the server itself does; with `--control`, the same flood on A's own model, for comparison.
  `--flood-engine chatterbox`: random-weight checkpoints of standard (A) and turbo (B), built here,
  on `--device` (on a GPU both workers share the one device, as they would in production).

    .venv/bin/python scripts/bench_models.py reload [--engine chatterbox] [--rounds 3]
    .venv/bin/python scripts/bench_models.py flood [--samples 20] [--flood 8]
    .venv/bin/python scripts/bench_models.py all --output results.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serverkit import Server, start_server  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs away into the woods."
LONG_TEXT = " ".join([TEXT] * 12)


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg()}


def first_audio(session: requests.Session, server: Server, body: dict) -> float:
    started = time.perf_counter()
    with session.post(server.url("/v1/audio/speech/stream"), json={"response_format": "pcm", **body},
                      stream=True, timeout=900) as response:
        assert response.status_code == 200, response.text
        next(response.iter_content(None))
        elapsed = time.perf_counter() - started
        for _ in response.iter_content(65536):
            pass
    return elapsed


def model_state(server: Server, model_id: str) -> dict:
    entries = requests.get(server.url("/v1/models"), timeout=10).json()["data"]
    return next(entry for entry in entries if entry["id"] == model_id)


def wait_state(server: Server, model_id: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while model_state(server, model_id)["state"] != state:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{model_id} did not become {state} in {timeout} s")
        time.sleep(0.2)


def engine_settings(args: argparse.Namespace, tmp: Path) -> dict:
    if args.engine == "hibari":
        return {"engine": "auto"}           # no weights: each model falls back to the embedded voice
    checkpoint = args.checkpoint_dir
    if not checkpoint:
        import chatterbox_checkpoint
        checkpoint = str(chatterbox_checkpoint.build_random_checkpoint(tmp / "ckpt", seed=0))
    return {"engine": "chatterbox", "checkpoint_dir": checkpoint, "device": args.device,
            "max_new_tokens": str(args.tokens)}


def run_reload(args: argparse.Namespace) -> dict:
    colds, reloads, load_seconds = [], [], {"cold": [], "reload": []}
    with tempfile.TemporaryDirectory() as tmp:
        settings = engine_settings(args, Path(tmp))
        for round_number in range(args.rounds):
            directory = Path(tmp) / f"round{round_number}"
            directory.mkdir()
            server = start_server(directory, ready_timeout=600, front_workers="1", queue_timeout="900",
                                  models="standard", preload="none", idle_unload_seconds=str(args.idle),
                                  **settings)
            try:
                session = requests.Session()
                colds.append(first_audio(session, server, {"input": TEXT, "seed": 1}))
                load_seconds["cold"].append(model_state(server, "chatterbox-standard")["workers"][0]["load_seconds"])
                for _ in range(args.reloads):
                    wait_state(server, "chatterbox-standard", "unloaded", args.idle + 60)
                    reloads.append(first_audio(session, server, {"input": TEXT, "seed": 1}))
                    load_seconds["reload"].append(
                        model_state(server, "chatterbox-standard")["workers"][0]["load_seconds"])
            finally:
                server.stop()
    cold, reload = statistics.median(colds), statistics.median(reloads)
    return {"engine": settings["engine"] if args.engine == "chatterbox" else "hibari (auto, no weights)",
            "device": settings.get("device", "cpu"), "rounds": args.rounds,
            "cold_first_audio_s": [round(x, 3) for x in colds], "reload_first_audio_s": [round(x, 3) for x in reloads],
            "cold_load_s": load_seconds["cold"], "reload_load_s": load_seconds["reload"],
            "median_cold_s": round(cold, 3), "median_reload_s": round(reload, 3),
            "reload_over_cold": round(reload / cold, 3), "machine": machine()}


def flood_engine_settings(args: argparse.Namespace, tmp: Path) -> dict:
    if args.flood_engine != "chatterbox":
        return {"engine": {"hibari": "auto", "tone": "tone"}[args.flood_engine]}
    import chatterbox_checkpoint
    root = tmp / "models"
    chatterbox_checkpoint.build_random_checkpoint(root / "standard", seed=0, reference_seconds=3.0)
    chatterbox_checkpoint.build_random_turbo_checkpoint(root / "turbo", seed=0)
    return {"engine": "chatterbox", "checkpoint_dir": str(root), "device": args.device,
            "max_new_tokens": str(args.tokens)}


def run_flood(args: argparse.Namespace, flooded_model: str = "chatterbox-turbo") -> dict:
    flood_text = " ".join(["[[sleep:0.5]] one two three."] * 6) if args.flood_engine == "tone" else LONG_TEXT
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), **flood_engine_settings(args, Path(tmp)), models="standard,turbo",
                              preload="all", front_workers="2", max_queued_jobs="1000", max_queued_seconds="0",
                              ready_timeout=600, queue_timeout="900")
        try:
            session = requests.Session()
            for _ in range(3):
                first_audio(session, server, {"input": TEXT, "model": "chatterbox-standard"})
                first_audio(session, server, {"input": TEXT, "model": "chatterbox-turbo"})
            stop = threading.Event()
            flooded = {"requests": 0, "refused": 0}

            def flood() -> None:
                flood_session = requests.Session()
                while not stop.is_set():
                    with flood_session.post(server.url("/v1/audio/speech/stream"), stream=True, timeout=900,
                                            json={"input": flood_text, "model": flooded_model,
                                                  "response_format": "pcm",
                                                  "streaming_chunk_size": 60}) as response:
                        flooded["requests" if response.status_code == 200 else "refused"] += 1
                        for _ in response.iter_content(65536):
                            if stop.is_set():
                                break

            alone, during = [], []
            threads: list[threading.Thread] = []
            for n in range(args.samples):
                alone.append(first_audio(session, server, {"input": TEXT, "seed": n, "model": "chatterbox-standard"}))
                if not threads:
                    threads = [threading.Thread(target=flood, daemon=True) for _ in range(args.flood)]
                    for thread in threads:
                        thread.start()
                    time.sleep(3)       # the flood reaches its steady state
                during.append(first_audio(session, server, {"input": TEXT, "seed": n,
                                                            "model": "chatterbox-standard"}))
                # alone again: the flood pauses between samples (its streams finish their current text)
                stop.set()
                for thread in threads:
                    thread.join(timeout=120)
                threads, stop = [], threading.Event()
                time.sleep(1)
            health = requests.get(server.url("/health"), timeout=10).json()
        finally:
            server.stop()
    a, b = statistics.median(alone), statistics.median(during)
    engines = {"hibari": "hibari for both models (auto, no weights)",
               "tone": "tone for both models, the flood's chunks 0.5 s each without CPU",
               "chatterbox": f"Chatterbox random checkpoints on {args.device}, {args.tokens} tokens a chunk"}
    return {"engine": engines[args.flood_engine], "flooded_model": flooded_model,
            "measured_model": "chatterbox-standard", "samples": args.samples, "flood_streams": args.flood,
            "flood_requests": flooded,
            "alone_first_audio_ms": {"median": round(a * 1000, 1), "max": round(max(alone) * 1000, 1)},
            "during_flood_first_audio_ms": {"median": round(b * 1000, 1), "max": round(max(during) * 1000, 1)},
            "ratio": round(b / a, 3), "target": 1.2, "met": b / a <= 1.2,
            "models_at_end": {k: v["state"] for k, v in health["models"].items()}, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("reload", "flood", "all"))
    parser.add_argument("--engine", choices=("chatterbox", "hibari"), default="chatterbox")
    parser.add_argument("--checkpoint-dir", default="")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tokens", type=int, default=10, help="speech tokens per chunk (Chatterbox)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reloads", type=int, default=2, help="idle unloads and reloads per round")
    parser.add_argument("--idle", type=float, default=3.0, help="CHATTERBOX_IDLE_UNLOAD_SECONDS")
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--flood", type=int, default=8)
    parser.add_argument("--flood-engine", choices=("hibari", "tone", "chatterbox"), default="hibari")
    parser.add_argument("--control", action="store_true", help="also flood A's own model")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    results = {}
    if args.part in ("reload", "all"):
        results["reload"] = run_reload(args)
    if args.part in ("flood", "all"):
        results["flood"] = run_flood(args)
        if args.control:
            results["flood_same_model"] = run_flood(args, flooded_model="chatterbox-standard")
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
