"""Benchmark a long-text job: a 50,000-character text on hibari, the engine alone vs the server.

1. The engine in this process synthesizes the job's chunks one after another, with the same
   post-processing a model worker applies (fades, PCM16): "the engine's own speed".
2. The same text as a job on a real server (POST /v1/audio/speech/long, hibari, WAV): wall time
   from POST to completed, and the RSS of every server process sampled every second.

Run: .venv/bin/python scripts/bench_long_text.py [--chars 50000] [--output docs/benchmarks-long-text.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from bench_streaming import PARAGRAPHS  # noqa: E402
from serverkit import start_server  # noqa: E402

from chatterbox_server.settings import Settings  # noqa: E402
from chatterbox_server.synthesis.longjobs.rules import DEFAULT_CHUNK_SIZE  # noqa: E402
from chatterbox_server.text.chunking import chunk_texts  # noqa: E402
from workers.audio import fade_edges, to_pcm16  # noqa: E402
from workers.engines import load_engine  # noqa: E402
from workers.engines.base import SynthesisSettings, VoiceRef  # noqa: E402
from workers.ipc.protocol import chunk_seed  # noqa: E402

SEED = 1234
MB = 1024 * 1024


def book(chars: int) -> str:
    parts, index = [], 0
    while sum(len(p) + 2 for p in parts) < chars:
        parts.append(PARAGRAPHS[index % len(PARAGRAPHS)])
        index += 1
    return "\n\n".join(parts)[:chars]


def engine_alone(chunks: list[str]) -> dict:
    engine, info = load_engine(Settings.from_env({}, engine="hibari"), "cpu")
    engine.warmup(info)
    voice = VoiceRef(info.default_voice)
    samples = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for index, text in enumerate(chunks):
        result = engine.synthesize(text, SynthesisSettings(), voice, chunk_seed(SEED, index))
        samples += len(to_pcm16(fade_edges(result.audio, info.sample_rate))) // 2
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 2), "cpu_seconds": round(time.process_time() - cpu_started, 2),
            "audio_seconds": round(samples / info.sample_rate, 1),
            "realtime_factor": round(samples / info.sample_rate / seconds, 1)}


def server_processes(master: int) -> dict[str, list[psutil.Process]]:
    groups: dict[str, list[psutil.Process]] = {"front_workers": [], "model_workers": [], "other": []}
    for child in psutil.Process(master).children(recursive=True):
        try:
            title = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "chatterbox-model-worker" in title:
            groups["model_workers"].append(child)
        elif "gunicorn" in title and "worker" in title:
            groups["front_workers"].append(child)
        else:
            groups["other"].append(child)
    return groups


def rss_mb(processes: list[psutil.Process]) -> float:
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return round(total / MB, 1)


def summary(values: list[float]) -> dict[str, float]:
    return {"first": values[0], "min": min(values), "max": max(values), "last": values[-1]}


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def through_server(text: str, fmt: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine="hibari", front_workers="2")
        try:
            groups = server_processes(server.process.pid)
            server_side = groups["front_workers"] + groups["model_workers"]
            cpu_before = cpu_seconds(server_side)
            started = time.monotonic()
            response = requests.post(server.url("/v1/audio/speech/long"), timeout=30, json={
                "input": text, "seed": SEED, "response_format": fmt})
            response.raise_for_status()
            job_id = response.json()["job_id"]
            samples = []
            while True:
                state = requests.get(server.url(f"/v1/audio/speech/long/{job_id}"), timeout=30).json()
                samples.append({"t": round(time.monotonic() - started, 1),
                                "done": state["metadata"]["completed_chunks"],
                                "front_workers_rss_mb": rss_mb(groups["front_workers"]),
                                "model_workers_rss_mb": rss_mb(groups["model_workers"])})
                if state["status"] in ("completed", "failed", "cancelled"):
                    break
                time.sleep(1.0)
            wall = time.monotonic() - started
            cpu_used = cpu_seconds(server_side) - cpu_before
            assert state["status"] == "completed", state["metadata"]["error"]
            meta = state["metadata"]
            front = [s["front_workers_rss_mb"] for s in samples]
            model = [s["model_workers_rss_mb"] for s in samples]
            created = datetime.datetime.fromisoformat(meta["created_at"])
            finished = datetime.datetime.fromisoformat(meta["processing_completed_at"])
            return {"seconds": round(wall, 2),
                    "seconds_created_to_completed": round((finished - created).total_seconds(), 2),
                    "cpu_seconds_front_and_model_workers": round(cpu_used, 2), "chunks": meta["total_chunks"],
                    "audio_seconds": meta["output_duration_seconds"], "output_bytes": meta["output_size_bytes"],
                    "synthesis_ms_reported_by_model_worker": meta["total_processing_time_ms"],
                    "front_workers_rss_mb": summary(front), "model_workers_rss_mb": summary(model),
                    "samples": samples}
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chars", type=int, default=50_000)
    parser.add_argument("--format", default="wav")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    text = book(args.chars)
    chunks = chunk_texts(text, "sentence", DEFAULT_CHUNK_SIZE)
    alone = engine_alone(chunks)
    alone["load_average_after"] = os.getloadavg()[0]
    print("engine alone:", alone, flush=True)
    served = through_server(text, args.format)
    served["load_average_after"] = os.getloadavg()[0]
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
              "chars": len(text), "chunks": len(chunks), "format": args.format, "engine_alone": alone,
              "server": {k: v for k, v in served.items() if k != "samples"},
              "server_over_engine": round(served["seconds_created_to_completed"] / alone["seconds"], 3),
              "server_cpu_over_engine_cpu": round(
                  served["cpu_seconds_front_and_model_workers"] / alone["cpu_seconds"], 3),
              "server_over_its_model_worker_synthesis": round(
                  served["seconds_created_to_completed"] / (served["synthesis_ms_reported_by_model_worker"] / 1000), 3)}
    print(json.dumps(report, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps({**report, "samples": served["samples"]}, indent=1) + "\n")


if __name__ == "__main__":
    main()
