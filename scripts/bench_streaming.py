"""Benchmark streaming speech: the engine on its own, then through a real server.

Measures, with one engine (hibari by default, CPU):

1. the engine in this process: load time, time to the first chunk's audio, throughput;
2. POST /v1/audio/speech/stream through a real gunicorn server, for 1 and 8 concurrent clients:
   time to the first audio byte, stream duration, per-stream real-time factor, aggregate throughput,
   and GET /health latency polled every 50 ms meanwhile;
3. time to the first audio byte for a one-sentence input vs a ~20,000-character one.

Run: .venv/bin/python scripts/bench_streaming.py --output docs/benchmarks-latest.json
(`make bench`); --quick for a short smoke run. The server is started with start_server from
tests/serverkit.py (the helper behind tests/server/conftest.py) in a temporary directory.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serverkit import Server, start_server  # noqa: E402  (tests/serverkit.py, what tests/server/conftest uses)

from chatterbox_server.text.chunking import split_text  # noqa: E402
from workers.engines.base import Engine, SynthesisSettings, VoiceRef  # noqa: E402

WAV_HEADER_BYTES = 44
BYTES_PER_SAMPLE = 2                  # PCM16 mono
CHUNK_SIZE = 200
STRATEGY = "sentence"
HEALTH_INTERVAL_S = 0.05
SEED = 1234
PACKAGES = ("hibari-tts", "onnxruntime", "gunicorn", "gevent", "flask")
LONG_TEXT_CHARS = 20_000

# A fixed, varied English text of about 3,000 characters: the "long text" every stream speaks.
PARAGRAPHS = (
    "The lighthouse on the northern cape was built in 1872, when the shipping lanes still ran close "
    "to the rocks. For almost a century a keeper climbed its one hundred and twelve steps every evening, "
    "trimmed the wick, and wound the clockwork that turned the lens. Nobody remembers all their names, "
    "but the logbooks survive: storms, fog, a whale stranded on the shingle, and once, in a neat hand, "
    "\"nothing to report.\"",
    "Modern bread starts with the same four ingredients as ancient bread: flour, water, salt and yeast. "
    "What changed is time. A commercial loaf may go from sack to shelf in under three hours, while a "
    "slow sourdough rests overnight, sometimes for two days, as bacteria and wild yeast break down the "
    "starches. Bakers argue about which tastes better; chemists point out that the slow loaf really is "
    "different, with more acids and fewer simple sugars.",
    "Dr. Alvarez opened the meeting at nine sharp. \"We have three problems,\" she said, \"and only "
    "enough money for two of them.\" The roof leaked, the heating failed on cold mornings, and the "
    "library had not bought a new book since March. After an hour of polite disagreement, the committee "
    "voted to fix the roof first. The heating, someone joked, could wait for summer.",
    "Why do cats knock things off tables? Researchers have offered several answers. Some say it is play, "
    "a rehearsal of the swipe that pins a mouse. Others think it is simply a way to get attention, since "
    "few owners can ignore the sound of a glass hitting the floor. The cats, of course, have declined to "
    "comment.",
    "On a clear night, far from city lights, you can see about four and a half thousand stars with the "
    "naked eye. That sounds like a lot until you learn that our galaxy holds somewhere between one hundred "
    "and four hundred billion of them. Most are smaller and dimmer than the Sun. A few are giants so large "
    "that, placed where the Sun is, they would swallow the orbit of Mars.",
    "The train left the station eleven minutes late, which by local standards counted as punctual. "
    "Outside, the fields gave way to low hills, then to a river that followed the tracks for miles. "
    "A conductor came through the carriage, checked tickets without looking at them, and announced "
    "that the dining car was closed. Nobody seemed surprised. Someone unwrapped a sandwich; someone "
    "else fell asleep against the window, and the afternoon went on.",
    "Learning a second language as an adult is slow, but it is not hopeless. The first few hundred words "
    "carry most everyday conversation; the next few thousand add precision, humour and the ability to "
    "argue. Mistakes are part of the process. Native speakers, it turns out, are far more patient than "
    "learners expect, especially when someone asks, \"Sorry, could you say that again, a bit slower?\"",
    "At 6:45 a.m. the market was already busy. Fishermen unloaded crates of mackerel and squid, a baker "
    "stacked round loaves on a wooden cart, and two old men played chess beside the fountain, as they had "
    "every Tuesday for thirty years. By noon the stalls were folded away, the square was swept, and only "
    "the pigeons stayed behind.",
)
STREAM_TEXT = "\n\n".join(PARAGRAPHS)
# The one-sentence input: also the first chunk of every long text, so that short and long inputs
# wait for the same first synthesis and differ only in what the length itself costs.
SHORT_TEXT = PARAGRAPHS[0].split(". ")[0] + "."


# -- texts ----------------------------------------------------------------------------------------
def text_of_length(chars: int) -> str:
    """Whole paragraphs of PARAGRAPHS, cycled, until the text is at least ``chars`` long."""
    parts: list[str] = []
    index = 0
    while sum(len(part) + 2 for part in parts) < chars:
        parts.append(PARAGRAPHS[index % len(PARAGRAPHS)])
        index += 1
    return "\n\n".join(parts)


def chunks_of(text: str) -> list[str]:
    return [chunk.text for chunk in split_text(text, STRATEGY, CHUNK_SIZE)]


# -- statistics -----------------------------------------------------------------------------------
def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (0 < fraction <= 1)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(fraction * len(ordered))))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def machine_info() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu_model": model, "platform": platform.platform(),
            "python": platform.python_version(), "packages": package_versions()}


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# -- 1. the engine in this process ----------------------------------------------------------------
def make_engine(name: str) -> Engine:
    if name == "hibari":
        from workers.engines.hibari import HibariEngine
        return HibariEngine()
    if name == "tone":
        from workers.engines.tone import ToneEngine
        return ToneEngine()
    raise SystemExit(f"unsupported engine for this benchmark: {name}")


def synth_seconds(engine: Engine, text: str, voice: VoiceRef, seed: int = SEED) -> tuple[float, int]:
    """Wall seconds to synthesize one chunk, and how many samples it produced."""
    started = time.perf_counter()
    result = engine.synthesize(text, SynthesisSettings(), voice, seed)
    return time.perf_counter() - started, int(result.audio.size)


def bench_engine(name: str, text: str, repeats: int) -> dict[str, Any]:
    engine = make_engine(name)
    started = time.perf_counter()
    info = engine.load()
    load_s = time.perf_counter() - started
    voice = VoiceRef(info.default_voice)
    chunks = chunks_of(text)
    cold_first_s, _ = synth_seconds(engine, chunks[0], voice)
    warm_first = [synth_seconds(engine, chunks[0], voice)[0] for _ in range(max(repeats, 5))]
    runs = []
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        samples = sum(synth_seconds(engine, chunk, voice)[1] for chunk in chunks)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        audio = samples / info.sample_rate
        runs.append({"wall_s": wall, "cpu_s": cpu, "audio_s": audio, "rtf": audio / wall,
                     "audio_per_cpu_s": audio / cpu})
    return {
        "engine": info.engine, "model": info.model, "device": info.device, "sample_rate": info.sample_rate,
        "load_s": load_s, "first_chunk_chars": len(chunks[0]), "chunks": len(chunks), "text_chars": len(text),
        "first_audio_cold_s": cold_first_s, "first_audio_warm_s": median(warm_first),
        "throughput_runs": runs,
        "audio_s": median([run["audio_s"] for run in runs]),
        "wall_s": median([run["wall_s"] for run in runs]),
        "rtf": median([run["rtf"] for run in runs]),
        "audio_per_cpu_s": median([run["audio_per_cpu_s"] for run in runs]),
    }


# -- 2. streams through the server ----------------------------------------------------------------
@dataclass
class StreamResult:
    first_audio_s: float = float("nan")     # from sending the request to the first byte after the header
    total_s: float = float("nan")
    body_bytes: int = 0
    chunks_header: int = 0
    error: str | None = None


def open_stream(server: Server, text: str) -> requests.Response:
    body = {"input": text, "streaming_chunk_size": CHUNK_SIZE, "streaming_strategy": STRATEGY, "seed": SEED}
    response = requests.post(server.url("/v1/audio/speech/stream"), json=body, stream=True, timeout=600)
    response.raise_for_status()
    return response


def stream_once(server: Server, text: str, stop_after_first_audio: bool = False) -> StreamResult:
    result = StreamResult()
    started = time.perf_counter()
    try:
        with open_stream(server, text) as response:
            result.chunks_header = int(response.headers.get("X-Chatterbox-Chunks", 0))
            for data in response.iter_content(chunk_size=None):
                result.body_bytes += len(data)
                if result.body_bytes > WAV_HEADER_BYTES and math.isnan(result.first_audio_s):
                    result.first_audio_s = time.perf_counter() - started
                    if stop_after_first_audio:
                        break
        result.total_s = time.perf_counter() - started
    except requests.RequestException as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


@dataclass
class HealthPoller:
    """Polls GET /health every HEALTH_INTERVAL_S on its own thread and records each latency."""
    server: Server
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> HealthPoller:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                ok = requests.get(self.server.url("/health"), timeout=10).status_code == 200
            except requests.RequestException:
                ok = False
            elapsed = time.perf_counter() - started
            if ok:
                self.latencies.append(elapsed)
            else:
                self.failures += 1
            self._stop.wait(max(0.0, HEALTH_INTERVAL_S - elapsed))


def health_summary(latencies: list[float], failures: int) -> dict[str, Any]:
    if not latencies:
        return {"polls": failures, "failures": failures}
    return {"polls": len(latencies) + failures, "failures": failures,
            "p50_ms": percentile(latencies, 0.50) * 1000, "p95_ms": percentile(latencies, 0.95) * 1000,
            "max_ms": max(latencies) * 1000, "over_50ms": sum(latency > 0.05 for latency in latencies)}


def run_concurrently(count: int, task: Callable[[], StreamResult]) -> tuple[list[StreamResult], float]:
    """Start ``count`` threads at once on ``task``; their results and the wall time of the whole batch."""
    results: list[StreamResult | None] = [None] * count
    barrier = threading.Barrier(count + 1)

    def worker(slot: int) -> None:
        barrier.wait()
        results[slot] = task()

    threads = [threading.Thread(target=worker, args=(slot,)) for slot in range(count)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return [result for result in results if result is not None], time.perf_counter() - started


def batch_metrics(results: list[StreamResult], wall_s: float, sample_rate: int) -> dict[str, Any]:
    good = [result for result in results if result.error is None]
    audio = [(result.body_bytes - WAV_HEADER_BYTES) / BYTES_PER_SAMPLE / sample_rate for result in good]
    first = [result.first_audio_s for result in good]
    rtf = [seconds / result.total_s for seconds, result in zip(audio, good, strict=True)]
    return {
        "clients": len(results), "errors": [result.error for result in results if result.error],
        "first_audio_median_s": median(first), "first_audio_max_s": max(first, default=float("nan")),
        "stream_total_median_s": median([result.total_s for result in good]),
        "stream_total_max_s": max((result.total_s for result in good), default=float("nan")),
        "audio_s_per_stream": median(audio),
        "stream_rtf_median": median(rtf),
        "stream_rtf_min": min(rtf, default=float("nan")),
        "aggregate_throughput": sum(audio) / wall_s, "batch_wall_s": wall_s,
    }


CPU_ROLES = ("model_worker", "front_workers", "server_other", "bench_client", "other_processes")


def server_role(title: str) -> str:
    if "chatterbox-model-worker" in title:
        return "model_worker"
    return "front_workers" if "gunicorn: worker" in title else "server_other"


def cpu_seconds(server: Server) -> dict[str, float]:
    """CPU seconds used so far by each part of the server, by this process, and by the whole machine."""
    totals = dict.fromkeys(CPU_ROLES, 0.0)
    master = psutil.Process(server.process.pid)
    for proc in [master, *master.children(recursive=True)]:
        try:
            title, times = " ".join(proc.cmdline()), proc.cpu_times()
        except psutil.Error:
            continue
        totals[server_role(title)] += times.user + times.system
    own = psutil.Process().cpu_times()
    totals["bench_client"] = own.user + own.system
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    totals["other_processes"] = busy - sum(totals[role] for role in CPU_ROLES[:-1])
    return totals


def cores_used(before: dict[str, float], after: dict[str, float], wall_s: float) -> dict[str, float]:
    """Average cores each role kept busy between two cpu_seconds() snapshots."""
    return {role: (after[role] - before[role]) / wall_s for role in CPU_ROLES}


def wait_idle(server: Server, timeout: float = 120.0) -> None:
    """Wait until no job is in flight (cancelled streams finish their current chunk first)."""
    server.wait_until(lambda report: report.get("jobs_in_flight", 0) == 0, timeout=timeout)


def bench_concurrency(server: Server, clients: int, text: str, repeats: int,
                      sample_rate: int) -> dict[str, Any]:
    runs, latencies, failures = [], [], 0
    for _ in range(repeats):
        wait_idle(server)
        with HealthPoller(server) as poller:
            before = cpu_seconds(server)
            results, wall = run_concurrently(clients, lambda: stream_once(server, text))
            cores = cores_used(before, cpu_seconds(server), wall)
        latencies += poller.latencies
        failures += poller.failures
        metrics = batch_metrics(results, wall, sample_rate)
        metrics["audio_per_model_worker_cpu_s"] = metrics["aggregate_throughput"] / max(cores["model_worker"], 1e-9)
        runs.append({**metrics, "cores": cores, "load_average_after": load_average()})
        print(f"  {clients} client(s): first audio median {runs[-1]['first_audio_median_s']:.3f} s, "
              f"batch {wall:.1f} s, aggregate {runs[-1]['aggregate_throughput']:.1f}x", flush=True)
    keys = [key for key, value in runs[0].items() if isinstance(value, float)]
    summary = {key: median([run[key] for run in runs]) for key in keys}
    cores = {role: median([run["cores"][role] for run in runs]) for role in CPU_ROLES}
    return {"clients": clients, "repeats": repeats, **summary, "cores": cores,
            "errors": sum(len(run["errors"]) for run in runs),
            "health": health_summary(latencies, failures), "runs": runs}


def bench_idle_health(server: Server, seconds: float) -> dict[str, Any]:
    wait_idle(server)
    with HealthPoller(server) as poller:
        time.sleep(seconds)
    return health_summary(poller.latencies, poller.failures)


# -- 3. first audio: short vs long input ----------------------------------------------------------
def bench_first_audio(server: Server, texts: dict[str, str], samples: int) -> dict[str, Any]:
    """Interleaved: one short, one long, ... so that background noise hits both alike."""
    firsts: dict[str, list[float]] = {name: [] for name in texts}
    chunks: dict[str, int] = {}
    errors: list[str] = []
    for _ in range(samples):
        for name, text in texts.items():
            wait_idle(server)
            result = stream_once(server, text, stop_after_first_audio=True)
            if result.error:
                errors.append(f"{name}: {result.error}")
                continue
            firsts[name].append(result.first_audio_s)
            chunks[name] = result.chunks_header
    first_chunks = {name: chunks_of(text)[0] for name, text in texts.items()}
    return {name: {"chars": len(texts[name]), "chunks": chunks.get(name),
                   "first_chunk_chars": len(first_chunks[name]), "samples_s": values,
                   "median_s": median(values), "max_s": max(values, default=float("nan"))}
            for name, values in firsts.items()} | {
        "errors": errors, "same_first_chunk": len(set(first_chunks.values())) == 1}


# -- running it all -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    engine: str
    front_workers: int
    model_workers: int
    clients: tuple[int, ...]
    repeats: int
    first_audio_samples: int
    stream_text: str
    long_text: str


def make_plan(args: argparse.Namespace) -> Plan:
    return Plan(engine=args.engine, front_workers=args.front_workers, model_workers=args.model_workers,
                clients=tuple(args.clients), repeats=1 if args.quick else args.repeats,
                first_audio_samples=1 if args.quick else args.first_audio_samples,
                stream_text="\n\n".join(PARAGRAPHS[:2]) if args.quick else STREAM_TEXT,
                long_text=text_of_length(LONG_TEXT_CHARS))


@contextmanager
def served(plan: Plan) -> Iterator[Server]:
    """A real server for the plan, in a temporary data directory, stopped afterwards."""
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as tmp:
        server = start_server(Path(tmp), engine=plan.engine, front_workers=str(plan.front_workers),
                              model_workers=str(plan.model_workers))
        try:
            yield server
        finally:
            code = server.stop()
            if code not in (0, None):
                print(f"server exited with {code}; log tail:\n{server.log()[-2000:]}", file=sys.stderr)


def bench_server(plan: Plan) -> dict[str, Any]:
    with served(plan) as server:
        started = time.perf_counter()
        report = server.health()
        sample_rate = int(report["sample_rate"])
        print(f"server ready: {report['engine']} ({report['workers']['ready']} model worker(s))", flush=True)
        idle_health = bench_idle_health(server, seconds=3.0)
        concurrency = [bench_concurrency(server, clients, plan.stream_text, plan.repeats, sample_rate)
                       for clients in plan.clients]
        print("first audio, short vs long input", flush=True)
        first_audio = bench_first_audio(server, {"short": SHORT_TEXT, "long": plan.long_text},
                                        plan.first_audio_samples)
        return {"sample_rate": sample_rate, "idle_health": idle_health, "concurrency": concurrency,
                "first_audio": first_audio, "seconds": time.perf_counter() - started}


def run(plan: Plan) -> dict[str, Any]:
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(), "load_average_start": load_average(),
        "config": {**asdict(plan), "stream_text": None, "long_text": None,
                   "stream_text_chars": len(plan.stream_text), "long_text_chars": len(plan.long_text),
                   "streaming_chunk_size": CHUNK_SIZE, "streaming_strategy": STRATEGY,
                   "health_interval_s": HEALTH_INTERVAL_S},
    }
    print(f"engine directly ({plan.engine})", flush=True)
    results["engine_direct"] = bench_engine(plan.engine, plan.stream_text, plan.repeats)
    results["load_average_after_engine"] = load_average()
    print("through the server", flush=True)
    results["server"] = bench_server(plan)
    results["load_average_end"] = load_average()
    results["total_seconds"] = time.perf_counter() - started
    return results


# -- the report -----------------------------------------------------------------------------------
def fmt(value: float, digits: int = 2) -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}"


def ms(health: dict[str, Any], key: str) -> str:
    return fmt(health.get(key, float("nan")), 1)


def markdown(results: dict[str, Any]) -> str:
    engine, server = results["engine_direct"], results["server"]
    lines = [
        f"Engine directly ({engine['engine']}, in-process, {engine['text_chars']} chars in "
        f"{engine['chunks']} chunks):", "",
        "| metric | value |", "| --- | --- |",
        f"| load time | {fmt(engine['load_s'])} s |",
        f"| first chunk ({engine['first_chunk_chars']} chars), first call after load | "
        f"{fmt(engine['first_audio_cold_s'], 3)} s |",
        f"| first chunk, warm (median) | {fmt(engine['first_audio_warm_s'], 3)} s |",
        f"| whole text: audio / wall | {fmt(engine['audio_s'], 1)} s / {fmt(engine['wall_s'], 2)} s |",
        f"| throughput (audio s per wall s) | {fmt(engine['rtf'], 1)}x |",
        f"| audio s per CPU s | {fmt(engine['audio_per_cpu_s'], 1)} |", "",
        "Through the server (POST /v1/audio/speech/stream, medians over repeats):", "",
        "| clients | first audio byte median | first audio byte max | stream time median | "
        "audio per stream | per-stream RTF median (min) | aggregate throughput | "
        "/health p50 / p95 / max (polls, slow) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in server["concurrency"]:
        health = row["health"]
        lines.append(
            f"| {row['clients']} | {fmt(row['first_audio_median_s'], 3)} s "
            f"| {fmt(row['first_audio_max_s'], 3)} s "
            f"| {fmt(row['stream_total_median_s'])} s | {fmt(row['audio_s_per_stream'], 1)} s "
            f"| {fmt(row['stream_rtf_median'], 1)}x ({fmt(row['stream_rtf_min'], 1)}x) "
            f"| {fmt(row['aggregate_throughput'], 1)}x "
            f"| {ms(health, 'p50_ms')} / {ms(health, 'p95_ms')} / {ms(health, 'max_ms')} ms "
            f"({health['polls']}, {health.get('over_50ms', 0)} > 50 ms) |")
    lines += ["", f"CPU kept busy during the batches (cores, of {results['machine']['nproc']}; medians):", "",
              "| clients | " + " | ".join(CPU_ROLES) + " | audio s per model-worker CPU s |",
              "| --- |" + " --- |" * (len(CPU_ROLES) + 1)]
    for row in server["concurrency"]:
        cores = " | ".join(fmt(row["cores"][role]) for role in CPU_ROLES)
        lines.append(f"| {row['clients']} | {cores} | {fmt(row['audio_per_model_worker_cpu_s'], 1)} |")
    idle = server["idle_health"]
    lines += ["", f"/health while idle: p50 {ms(idle, 'p50_ms')} ms, p95 {ms(idle, 'p95_ms')} ms, "
                  f"max {ms(idle, 'max_ms')} ms ({idle['polls']} polls).", "",
              "First audio byte, short vs long input (one client, idle server):", "",
              "| input | chars | chunks | first chunk chars | first audio byte median | max |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name in ("short", "long"):
        row = server["first_audio"][name]
        lines.append(f"| {name} | {row['chars']} | {row['chunks']} | {row['first_chunk_chars']} | "
                     f"{fmt(row['median_s'], 3)} s | {fmt(row['max_s'], 3)} s |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--engine", default="hibari", choices=("hibari", "tone"))
    parser.add_argument("--front-workers", type=int, default=2)
    parser.add_argument("--model-workers", type=int, default=1)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8], help="concurrent clients per batch")
    parser.add_argument("--repeats", type=int, default=3, help="batches per client count (median reported)")
    parser.add_argument("--first-audio-samples", type=int, default=5, help="short/long first-audio samples")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: one repeat, one first-audio sample, a ~900-character stream text")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run(make_plan(args))
    print()
    print(markdown(results))
    print(f"\ntotal {results['total_seconds']:.0f} s; load average start {results['load_average_start']}, "
          f"end {results['load_average_end']}")
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 1 if any(row["errors"] for row in results["server"]["concurrency"]) else 0


if __name__ == "__main__":
    sys.exit(main())
