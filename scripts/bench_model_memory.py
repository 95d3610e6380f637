"""Memory of several models on one server over many requests (issue 20: "GPU and host memory go back
to their idle level after a thousand requests over three models and after an unload/reload cycle").

tests/server/test_chatterbox_models.py does the same with a few dozen requests; this is the long run a
person starts by hand. One server (tests/serverkit.py) serves standard, turbo and multilingual, all
preloaded, one model worker each. Measured per model worker (from GET /memory, as a local caller):
its RSS and, on a GPU, torch's allocated/reserved/peak bytes.

1. idle: right after the server is ready (each model loaded and warmed up);
2. warm: after a warm-up round (per model: a library voice, a one-off voice upload, the built-in voice);
3. after `--requests` small requests round-robin over the models (the built-in voice, the library
   voice, and every `--upload-every`-th a one-off upload; a new seed each), with samples on the way;
4. per model, an unload/reload cycle (POST /v1/models/{id}/unload, then /load) and one request after it.

The output (JSON, on stdout and in `--output`) has every sample, the differences to the warm level
and whether they are within the test's tolerances (RSS: max(150 MB, 5%) after the requests,
max(200 MB, 6%) after the cycle; GPU allocated: max(64 MiB, 5%)).

The weights are a random checkpoint built here (standard and multilingual in one directory, turbo in
another, ~2 minutes, 8 GB in a temporary directory) unless `--checkpoint-root` names a directory
with `standard/`, `turbo/` and `multilingual/` (a real checkpoint too). Random weights never stop
early: every request runs to `--tokens`.

    .venv/bin/python scripts/bench_model_memory.py                       # 1000 requests, CPU
    .venv/bin/python scripts/bench_model_memory.py --device cuda --requests 1000 --output mem.json
    .venv/bin/python scripts/bench_model_memory.py --requests 60 --checkpoint-root /data/chatterbox
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serverkit import Server, start_server  # noqa: E402

MODELS = ("standard", "turbo", "multilingual")
MB = 10**6
MIB = 2**20
TEXTS = {"standard": "Hello there.", "turbo": "Hello there.", "multilingual": "Bonjour à tous."}
LANGUAGES = {"multilingual": "fr"}


def model_id(name: str) -> str:
    return f"chatterbox-{name}"


def build_root(directory: Path) -> Path:
    """A random checkpoint root: standard/ and multilingual/ the same directory, turbo/ its own."""
    import chatterbox_checkpoint as checkpoints

    started = time.monotonic()
    both = checkpoints.build_random_checkpoint(directory / "standard-multilingual", seed=0, multilingual=True,
                                               reference_seconds=3.0)
    turbo = checkpoints.build_random_turbo_checkpoint(directory / "turbo", seed=0)
    root = directory / "root"
    root.mkdir()
    for name, target in (("standard", both), ("turbo", turbo), ("multilingual", both)):
        (root / name).symlink_to(target, target_is_directory=True)
    print(f"built a random checkpoint root in {time.monotonic() - started:.0f} s: {root}", file=sys.stderr)
    return root


def voice_files(directory: Path) -> dict[str, bytes]:
    """Voices to clone, over 5 s each (turbo wants that), different enough to be different voices."""
    import chatterbox_checkpoint as checkpoints

    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for index, f0 in enumerate((180.0, 230.0, 140.0, 260.0)):
        path = checkpoints.write_wav(directory / f"voice-{index}.wav",
                                     checkpoints.synthetic_voice(5.5, f0=f0, seed=index + 1))
        out[f"voice-{index}"] = path.read_bytes()
    return out


class Bench:
    def __init__(self, server: Server, models: tuple[str, ...], voices: dict[str, bytes]):
        self.server = server
        self.models = models
        self.voices = voices
        self.slot_of = self._slots()
        self.latencies: dict[str, list[float]] = {name: [] for name in models}
        self.failures: list[str] = []

    def _slots(self) -> dict[str, int]:
        entries = {e["model"]: e for e in self.models_listing() if "state" in e}
        return {name: entries[name]["workers"][0]["slot"] for name in self.models}

    def models_listing(self) -> list[dict]:
        return requests.get(self.server.url("/v1/models"), timeout=30).json()["data"]

    def entry(self, name: str) -> dict:
        return next(e for e in self.models_listing() if e.get("model") == name and "state" in e)

    def sample(self) -> dict[str, dict]:
        """Each model worker's RSS, accelerator memory and conditionals cache, from /memory."""
        info = requests.get(self.server.url("/memory"), timeout=60).json()["memory_info"]
        workers = {w["slot"]: w for w in info["model_workers"]}
        out = {}
        for name, slot in self.slot_of.items():
            worker = workers[slot]
            accelerator = worker.get("accelerator") or {}
            cache = (worker.get("caches") or {}).get("conditionals") or {}
            out[name] = {"slot": slot, "pid": worker["pid"], "state": worker["state"], "rss_bytes": worker["rss_bytes"],
                         "accelerator_allocated_bytes": accelerator.get("allocated_bytes"),
                         "accelerator_reserved_bytes": accelerator.get("reserved_bytes"),
                         "accelerator_peak_allocated_bytes": accelerator.get("peak_allocated_bytes"),
                         "conditionals_entries": cache.get("entries"), "conditionals_capacity": cache.get("capacity"),
                         "conditionals_bytes": cache.get("bytes")}
        return out

    def speak(self, name: str, seed: int, *, voice: str | None = None, upload: bytes | None = None) -> bool:
        body = {"input": TEXTS[name], "model": model_id(name), "seed": seed}
        if name in LANGUAGES:
            body["language"] = LANGUAGES[name]
        if voice is not None:
            body["voice"] = voice
        started = time.perf_counter()
        try:
            if upload is None:
                answer = requests.post(self.server.url("/v1/audio/speech"), json=body, timeout=900)
            else:
                answer = requests.post(self.server.url("/v1/audio/speech/upload"),
                                       data={k: str(v) for k, v in body.items()},
                                       files={"voice_file": ("voice.wav", upload)}, timeout=900)
        except requests.RequestException as exc:
            self.failures.append(f"{name} seed {seed}: {exc}")
            return False
        self.latencies[name].append(time.perf_counter() - started)
        if answer.status_code != 200 or answer.content[:4] != b"RIFF":
            self.failures.append(f"{name} seed {seed}: {answer.status_code} {answer.text[:200]}")
            return False
        return True


def within(value: int | None, reference: int | None, floor: int, share: float) -> bool | None:
    if value is None or reference is None:
        return None
    return abs(value - reference) <= max(floor, share * reference)


def deltas(samples: dict[str, dict], reference: dict[str, dict], rss_floor: int, rss_share: float) -> dict:
    out = {}
    for name, now in samples.items():
        ref = reference[name]
        entry = {"rss_delta_mb": round((now["rss_bytes"] - ref["rss_bytes"]) / MB, 1),
                 "rss_within_tolerance": within(now["rss_bytes"], ref["rss_bytes"], rss_floor, rss_share)}
        if now["accelerator_allocated_bytes"] is not None and ref["accelerator_allocated_bytes"] is not None:
            entry["accelerator_allocated_delta_mb"] = round(
                (now["accelerator_allocated_bytes"] - ref["accelerator_allocated_bytes"]) / MB, 1)
            entry["accelerator_reserved_delta_mb"] = round(
                (now["accelerator_reserved_bytes"] - ref["accelerator_reserved_bytes"]) / MB, 1)
            entry["accelerator_within_tolerance"] = within(now["accelerator_allocated_bytes"],
                                                           ref["accelerator_allocated_bytes"], 64 * MIB, 0.05)
        out[name] = entry
    return out


def plan(requests_wanted: int, models: tuple[str, ...], upload_every: int) -> list[tuple[str, int, str]]:
    """(model, seed, voice kind) of each request: round-robin over the models; kinds built-in, library,
    and every `upload_every`-th an upload."""
    out = []
    for index in range(requests_wanted):
        name = models[index % len(models)]
        turn = index // len(models)
        kind = "upload" if upload_every and turn % upload_every == upload_every - 1 else (
            "library" if turn % 2 else "builtin")
        out.append((name, 1000 + index, kind))
    return out


def run(args: argparse.Namespace, root: Path, work: Path) -> dict:
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    started = time.monotonic()
    (work / "server").mkdir()
    server = start_server(work / "server", engine="chatterbox", models=",".join(models), preload="all",
                          checkpoint_dir=str(root), device=args.device, max_new_tokens=str(args.tokens),
                          front_workers="1", queue_timeout="1800", chunk_timeout="1800", max_queued_seconds="0",
                          max_queued_jobs=str(max(64, args.concurrency * 2)), ready_timeout=1800)
    try:
        ready_seconds = time.monotonic() - started
        voices = voice_files(work / "voices")
        bench = Bench(server, models, voices)
        loads = {name: {k: bench.entry(name)["workers"][0][k] for k in ("load_seconds", "weight_bytes", "device")}
                 for name in models}
        idle = bench.sample()

        answer = requests.post(server.url("/v1/voices"), data={"name": "bench-library"},
                               files={"voice_file": ("library.wav", voices["voice-0"])}, timeout=60)
        if answer.status_code != 201:
            raise RuntimeError(f"uploading the library voice: {answer.status_code} {answer.text}")
        uploads = [voices[f"voice-{i}"] for i in (1, 2, 3)]
        warm_started = time.monotonic()
        for name in models:
            bench.speak(name, 1, voice="bench-library")
            bench.speak(name, 2, upload=uploads[0])
            bench.speak(name, 3)
        warm_seconds = time.monotonic() - warm_started
        warm = bench.sample()

        todo = plan(args.requests, models, args.upload_every)
        series = []
        done = 0

        def one(item: tuple[str, int, str]) -> bool:
            name, seed, kind = item
            if kind == "upload":
                return bench.speak(name, seed, upload=uploads[seed % len(uploads)])
            return bench.speak(name, seed, voice="bench-library" if kind == "library" else None)

        load_started = time.monotonic()
        step = max(1, args.sample_every)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for start in range(0, len(todo), step):
                batch = todo[start:start + step]
                list(pool.map(one, batch))
                done += len(batch)
                series.append({"requests": done, "seconds": round(time.monotonic() - load_started, 1),
                               "rss_mb": {n: round(s["rss_bytes"] / MB, 1) for n, s in bench.sample().items()}})
                print(f"{done}/{len(todo)} requests, {series[-1]['seconds']:.0f} s: {series[-1]['rss_mb']}",
                      file=sys.stderr)
        load_seconds = time.monotonic() - load_started
        after = bench.sample()

        cycles = {}
        for name in models:
            before = bench.sample()
            unload = requests.post(server.url(f"/v1/models/{model_id(name)}/unload"), timeout=300)
            unloaded = bench.sample()
            cycle_started = time.monotonic()
            load = requests.post(server.url(f"/v1/models/{model_id(name)}/load"), timeout=1800)
            reload_seconds = time.monotonic() - cycle_started
            reloaded = bench.sample()
            bench.speak(name, 7)
            spoken = bench.sample()
            cycles[name] = {
                "unload_status": unload.status_code, "load_status": load.status_code,
                "reload_seconds": round(reload_seconds, 2),
                "rss_mb": {"before": round(before[name]["rss_bytes"] / MB, 1),
                           "unloaded": round(unloaded[name]["rss_bytes"] / MB, 1),
                           "reloaded": round(reloaded[name]["rss_bytes"] / MB, 1),
                           "after_a_request": round(spoken[name]["rss_bytes"] / MB, 1)},
                "accelerator_allocated_mb": {
                    key: (round(s[name]["accelerator_allocated_bytes"] / MB, 1)
                          if s[name]["accelerator_allocated_bytes"] is not None else None)
                    for key, s in (("before", before), ("unloaded", unloaded), ("reloaded", reloaded),
                                   ("after_a_request", spoken))},
                "reloaded_vs_before": deltas({name: reloaded[name]}, {name: before[name]}, 200 * MB, 0.06)[name],
                "after_a_request_vs_before": deltas({name: spoken[name]}, {name: before[name]}, 200 * MB, 0.06)[name],
            }
        final = bench.sample()
    finally:
        server.stop()

    def mb(samples: dict[str, dict]) -> dict:
        """Byte counts in MB (10**6), their keys ending in _mb."""
        return {name: {(key[:-6] + "_mb" if key.endswith("_bytes") else key):
                       (round(value / MB, 1) if key.endswith("_bytes") and value is not None else value)
                       for key, value in sample.items()} for name, sample in samples.items()}

    return {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_average": os.getloadavg(),
                    "device": args.device},
        "settings": {"requests": args.requests, "tokens": args.tokens, "models": list(models),
                     "upload_every": args.upload_every, "concurrency": args.concurrency,
                     "checkpoint_root": str(root) if args.checkpoint_root else "random (built here)"},
        "server_ready_seconds": round(ready_seconds, 1),
        "loads": loads,
        "warm_up_seconds": round(warm_seconds, 1),
        "requests": {"count": len(todo), "seconds": round(load_seconds, 1), "failures": bench.failures,
                     "median_seconds": {name: round(statistics.median(values), 3) if values else None
                                        for name, values in bench.latencies.items()}},
        "idle": mb(idle),
        "warm": mb(warm),
        "after_requests": mb(after),
        "after_requests_vs_warm": deltas(after, warm, 150 * MB, 0.05),
        "after_requests_vs_idle": deltas(after, idle, 150 * MB, 0.05),
        "series": series,
        "unload_reload": cycles,
        "final": mb(final),
        "final_vs_warm": deltas(final, warm, 200 * MB, 0.06),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000, help="requests after the warm-up (default 1000)")
    parser.add_argument("--tokens", type=int, default=4,
                        help="CHATTERBOX_MAX_NEW_TOKENS: speech tokens per request (random weights run to it)")
    parser.add_argument("--checkpoint-root", default="",
                        help="a directory with standard/, turbo/ and multilingual/; default: build a random one")
    parser.add_argument("--device", default="cpu", help="CHATTERBOX_DEVICE: cpu (default), cuda, cuda:N")
    parser.add_argument("--models", default=",".join(MODELS), help="CHATTERBOX_MODELS (default: all three)")
    parser.add_argument("--upload-every", type=int, default=10,
                        help="every N-th round over the models uses one-off voice uploads (0: never)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once")
    parser.add_argument("--sample-every", type=int, default=30, help="requests between two memory samples")
    parser.add_argument("--output", default="", help="also write the JSON here")
    args = parser.parse_args()
    if args.device.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            parser.error("--device cuda: torch.cuda is not available here")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="bench-model-memory-"))
    try:
        root = Path(args.checkpoint_root) if args.checkpoint_root else build_root(work / "checkpoints")
        result = run(args, root, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0 if not result["requests"]["failures"] else 1


if __name__ == "__main__":
    sys.exit(main())
