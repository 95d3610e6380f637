"""The streaming-input socket (GET /v1/audio/speech/realtime) against the HTTP stream (issue 18, "Speed").

Four parts, each on its own fresh server (tests/serverkit.py's start_server):

- ``first-audio``: a turn streamed word by word; from sending the delta that completes the first
  segment (the one carrying the first character after it: the segmenter decides a cut only then)
  to the first ``speech.audio.delta``, against ``POST /v1/audio/speech/stream`` (pcm) of the same
  first segment's text with the same seed, from sending the request to its first body byte.
  Interleaved, one pair per seed; the audio of both is compared too.
- ``cancel``: a long turn in flight, ``context.cancel`` sent at a random moment after its first
  audio; the time to ``context.cancelled``, the audio of that context that still arrives after the
  acknowledgement, and what the model worker did after the cancel (see ``cancel_trial``).
- ``load``: many sockets with two contexts each on one front worker, every context a short turn
  streamed word by word; checks that nothing is lost, and records wall time, per-socket first
  audio, the front worker's peak RSS and /health latency during the load.
- ``chatterbox``: ``first-audio`` on the Chatterbox engine with a random-weight checkpoint (CPU).

    .venv/bin/python scripts/bench_realtime.py first-audio [--samples 30]
    .venv/bin/python scripts/bench_realtime.py cancel [--samples 20] [--engine hibari|tone]
    .venv/bin/python scripts/bench_realtime.py load [--sockets 100] [--max-queued-jobs N]
    .venv/bin/python scripts/bench_realtime.py chatterbox [--samples 5] [--checkpoint-dir DIR]
    .venv/bin/python scripts/bench_realtime.py all --output results.json
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests
import websockets
from websockets.sync.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serverkit import Server, start_server  # noqa: E402

PATH = "/v1/audio/speech/realtime"
RATE = 24000                                      # hibari, tone and Chatterbox all answer at 24 kHz
TURN = "Hello there, this is a streamed turn that goes on for a while."
FIRST_SEGMENT = "Hello there,"                    # the adaptive segmenter cuts at the first clause end
WORD_GAP = 0.02                                   # seconds between deltas: an LLM at ~50 tokens/s


# -- small helpers ----------------------------------------------------------------------------------
def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else float("nan")


def summary(values: list[float]) -> dict:
    """Median, p90 and max, in milliseconds."""
    return {"n": len(values), "median_ms": round(statistics.median(values) * 1000, 1),
            "p90_ms": round(percentile(values, 0.9) * 1000, 1), "max_ms": round(max(values) * 1000, 1)}


def ws_url(server: Server, query: str = "") -> str:
    return server.base.replace("http://", "ws://", 1) + PATH + query


def deltas(text: str) -> list[str]:
    """The turn as an LLM streams it: one word a delta, its space after it."""
    return [word + " " for word in text.split(" ")]


def completing_index(words: list[str], first_segment: str) -> int:
    """The delta that carries the first visible character after the first segment's text."""
    length = 0
    for index, word in enumerate(words):
        if length >= len(first_segment) and word.strip():
            return index
        length += len(word)
    raise ValueError("the text has nothing after its first segment")


def slots(server: Server) -> list[dict]:
    return server.health()["workers"]["slots"]


def wait_idle(server: Server, timeout: float = 600.0) -> float:
    """Poll /health until no model worker holds a job; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if sum(slot["active_jobs"] + slot.get("parked_jobs", 0) for slot in slots(server)) == 0:
            return time.monotonic() - started
        time.sleep(0.01)
    raise RuntimeError(f"the server did not become idle: {slots(server)}")


def jobs_done(server: Server) -> int:
    return sum(slot["jobs_done"] for slot in slots(server))


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": [round(x, 2) for x in os.getloadavg()],
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


# -- one socket turn, one HTTP stream ---------------------------------------------------------------
def socket_first_audio(server: Server, text: str, first_segment: str, seed: int, query: str = "",
                       timeout: float = 60.0, finish: bool = True) -> dict:
    """Stream `text` word by word; seconds from the completing delta to the first audio delta."""
    words = deltas(text)
    completing = completing_index(words, first_segment)
    with connect(ws_url(server, f"?seed={seed}{query}"), max_size=None, open_timeout=30) as ws:
        created = json.loads(ws.recv(timeout=30))
        assert created["type"] == "session.created", created
        for word in words[:completing]:
            ws.send(json.dumps({"type": "input_text.append", "text": word}))
            time.sleep(WORD_GAP)
        sent = time.perf_counter()
        ws.send(json.dumps({"type": "input_text.append", "text": words[completing]}))
        audio = b""
        first = None
        while first is None:
            event = json.loads(ws.recv(timeout=timeout))
            if event["type"] == "error":
                raise RuntimeError(f"socket error: {event}")
            if event["type"] == "speech.audio.delta":
                first = time.perf_counter() - sent
                audio += base64.b64decode(event["audio"])
        if not finish:
            ws.send(json.dumps({"type": "context.cancel"}))
            return {"first_audio": first, "audio": audio}
        for word in words[completing + 1:]:
            ws.send(json.dumps({"type": "input_text.append", "text": word}))
        ws.send(json.dumps({"type": "input_text.done"}))
        while True:
            event = json.loads(ws.recv(timeout=timeout))
            if event["type"] == "speech.audio.delta":
                audio += base64.b64decode(event["audio"])
            elif event["type"] == "speech.audio.done":
                return {"first_audio": first, "audio": audio, "usage": event["usage"]}
            elif event["type"] == "error":
                raise RuntimeError(f"socket error: {event}")


def http_first_audio(session: requests.Session, server: Server, text: str, seed: int, finish: bool = True,
                     timeout: float = 60.0) -> dict:
    """POST /v1/audio/speech/stream (pcm): seconds from sending to the first body byte."""
    sent = time.perf_counter()
    with session.post(server.url("/v1/audio/speech/stream"), stream=True, timeout=timeout,
                      json={"input": text, "response_format": "pcm", "seed": seed}) as response:
        response.raise_for_status()
        body = response.raw.read(1)
        first = time.perf_counter() - sent
        if finish:
            body += response.raw.read()
    return {"first_audio": first, "audio": body}


def first_audio_pairs(server: Server, samples: int, text: str, first_segment: str, seed0: int,
                      finish: bool = True, between=None, timeout: float = 60.0) -> dict:
    """Interleaved pairs (the order alternates), one seed a pair."""
    session = requests.Session()
    sock, http, same, lengths = [], [], 0, []
    for n in range(samples):
        seed = seed0 + n
        order = ("socket", "http") if n % 2 == 0 else ("http", "socket")
        got = {}
        for kind in order:
            if kind == "socket":
                got[kind] = socket_first_audio(server, text, first_segment, seed, finish=finish, timeout=timeout)
            else:
                got[kind] = http_first_audio(session, server, first_segment, seed, finish=finish, timeout=timeout)
            if between is not None:
                between()
        sock.append(got["socket"]["first_audio"])
        http.append(got["http"]["first_audio"])
        if finish:
            head = got["http"]["audio"]
            same += got["socket"]["audio"][:len(head)] == head
            lengths.append(len(head) / 2 / RATE)
        print(f"  {n + 1}/{samples}: socket {sock[-1] * 1000:7.1f} ms   http {http[-1] * 1000:7.1f} ms",
              flush=True)
    differences = [s - h for s, h in zip(sock, http, strict=True)]
    result = {"socket": summary(sock), "http": summary(http),
              "difference_of_medians_ms": round((statistics.median(sock) - statistics.median(http)) * 1000, 1),
              "median_paired_difference_ms": round(statistics.median(differences) * 1000, 1),
              "raw_socket_s": sock, "raw_http_s": http}
    if finish:
        result["first_segment_audio_identical"] = f"{same}/{samples}"
        result["first_segment_audio_seconds"] = round(statistics.median(lengths), 3)
    return result


def run_first_audio(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine="hibari", front_workers=str(args.front_workers))
        try:
            for n in range(3):                          # warm both paths (imports, encoders, arenas)
                socket_first_audio(server, TURN, FIRST_SEGMENT, 1000 + n)
                http_first_audio(requests.Session(), server, FIRST_SEGMENT, 1000 + n)
            result = first_audio_pairs(server, args.samples, TURN, FIRST_SEGMENT, 1)
        finally:
            server.stop()
    result.update(engine="hibari", front_workers=args.front_workers, text=TURN, first_segment=FIRST_SEGMENT,
                  word_gap_s=WORD_GAP, machine=machine())
    return result


# -- cancel -----------------------------------------------------------------------------------------
def long_turn(engine: str, step_seconds: float) -> str:
    if engine == "tone":                 # each segment (one sentence) takes step_seconds in the engine
        return " ".join(f"[[sleep:{step_seconds}]] Part {n} of a long answer." for n in range(40))
    return " ".join(f"Sentence number {n} of a long answer goes on for a few more words." for n in range(60))


def cancel_trial(server: Server, text: str, seed: int, delay: float) -> dict:
    """One long turn, cancelled `delay` s after its first audio.

    Model-worker side: each segment is one job of one chunk, so one engine step. A step that ran
    for this context after the cancel shows up either as a job the worker finished whose audio
    never reached the client (jobs_done grows by more than the segments delivered) or as a job it
    dropped ("request <session>-default-<n> cancelled after 0/1 chunks" in the server log). The
    slot's busy time after the cancel says whether that was the step already running (at most one
    step long) or a new one.
    """
    before_done = jobs_done(server)
    with connect(ws_url(server, f"?seed={seed}"), max_size=None, open_timeout=30) as ws:
        session_id = json.loads(ws.recv(timeout=30))["session_id"]
        ws.send(json.dumps({"type": "input_text.append", "text": text}))
        ws.send(json.dumps({"type": "input_text.done"}))
        delivered = 0
        while True:
            event = json.loads(ws.recv(timeout=60))
            if event["type"] == "speech.audio.delta":
                delivered += 1
                break
        until = time.monotonic() + delay
        while (left := until - time.monotonic()) > 0:
            try:
                event = json.loads(ws.recv(timeout=left))
            except TimeoutError:
                break
            delivered += event["type"] == "speech.audio.delta"
        sent = time.perf_counter()
        ws.send(json.dumps({"type": "context.cancel"}))
        while True:
            event = json.loads(ws.recv(timeout=30))
            if event["type"] == "context.cancelled":
                ack = time.perf_counter() - sent
                break
            delivered += event["type"] == "speech.audio.delta"
        busy = wait_idle(server)
        after = []
        deadline = time.monotonic() + 1.0
        while (left := deadline - time.monotonic()) > 0:
            try:
                after.append(json.loads(ws.recv(timeout=left)))
            except TimeoutError:
                break
    finished = jobs_done(server) - before_done
    dropped = len(re.findall(rf"request {session_id}-default-\d+ cancelled after", server.log()))
    return {"ack": ack, "audio_after_ack": sum(e["type"] == "speech.audio.delta" for e in after),
            "events_after_ack": len(after), "segments_delivered": delivered, "jobs_finished": finished,
            "jobs_dropped": dropped, "steps_after_cancel": max(0, finished - delivered) + dropped,
            "busy_after_cancel": busy}


def run_cancel(args) -> dict:
    engine = args.engine
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine=engine, front_workers=str(args.front_workers))
        try:
            text = long_turn(engine, args.step_seconds)
            rng = random.Random(7)
            cancel_trial(server, text, 999, 0.1)             # warm-up
            trials = []
            for n in range(args.samples):
                trial = cancel_trial(server, text, n + 1, rng.uniform(0.0, args.max_delay))
                trials.append(trial)
                print(f"  {n + 1}/{args.samples}: ack {trial['ack'] * 1000:6.1f} ms, audio after ack "
                      f"{trial['audio_after_ack']}, delivered {trial['segments_delivered']}, worker finished "
                      f"{trial['jobs_finished']} dropped {trial['jobs_dropped']}, busy after cancel "
                      f"{trial['busy_after_cancel'] * 1000:.0f} ms", flush=True)
        finally:
            server.stop()
    return {"engine": engine, "step_seconds": args.step_seconds if engine == "tone" else None,
            "ack": summary([t["ack"] for t in trials]),
            "audio_after_ack_total": sum(t["audio_after_ack"] for t in trials),
            "steps_after_cancel_max": max(t["steps_after_cancel"] for t in trials),
            "steps_after_cancel_counts": {str(k): sum(t["steps_after_cancel"] == k for t in trials)
                                          for k in sorted({t["steps_after_cancel"] for t in trials})},
            "busy_after_cancel": summary([t["busy_after_cancel"] for t in trials]),
            "trials": trials, "machine": machine()}


# -- load -------------------------------------------------------------------------------------------
def front_worker_pids(server: Server) -> list[int]:
    master = psutil.Process(server.process.pid)
    pids = []
    for child in master.children():
        try:
            if child.cmdline()[0].startswith("gunicorn: worker"):
                pids.append(child.pid)
        except psutil.Error:
            pass
    return pids


class Sampler:
    """Peak RSS of the front workers and /health latency, in a thread while the load runs."""

    def __init__(self, server: Server, pids: list[int]) -> None:
        self.server, self.processes = server, [psutil.Process(pid) for pid in pids]
        self.peak_rss = {p.pid: p.memory_info().rss for p in self.processes}
        self.start_rss = dict(self.peak_rss)
        self.health: list[float] = []
        self.health_failures = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for process in self.processes:
                self.peak_rss[process.pid] = max(self.peak_rss[process.pid], process.memory_info().rss)
            started = time.perf_counter()
            try:
                requests.get(self.server.url("/health"), timeout=10).raise_for_status()
            except requests.RequestException:
                self.health_failures += 1
            self.health.append(time.perf_counter() - started)
            time.sleep(0.05)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=20)


async def load_socket(url: str, index: int, contexts: tuple[str, ...], started: float) -> dict:
    texts = {c: f"Hello from socket {index}, context {c}. This is a short turn." for c in contexts}
    state = {c: {"bytes": 0, "first": None, "done": None, "error": None} for c in contexts}
    errors: list[dict] = []
    record = {"index": index, "contexts": state, "errors": errors, "first_audio": None, "close": None}
    try:
        async with websockets.connect(url, max_size=None, open_timeout=120, close_timeout=5) as ws:
            created = json.loads(await ws.recv())
            if created["type"] != "session.created":
                errors.append(created)
                return record

            async def read() -> None:
                while any(s["done"] is None and s["error"] is None for s in state.values()):
                    event = json.loads(await ws.recv())
                    kind, c = event["type"], event.get("context_id")
                    if kind == "speech.audio.delta":
                        now = time.perf_counter()
                        record["first_audio"] = record["first_audio"] or now - first_sent
                        state[c]["first"] = state[c]["first"] or now - first_sent
                        state[c]["bytes"] += len(base64.b64decode(event["audio"]))
                    elif kind == "speech.audio.done":
                        state[c]["done"] = event["usage"]
                    elif kind == "error":
                        errors.append(event)
                        if c in state:
                            state[c]["error"] = event["error"]
            reader = asyncio.ensure_future(read())
            first_sent = time.perf_counter()
            record["first_sent"] = first_sent - started
            words = {c: deltas(texts[c]) for c in contexts}
            for step in range(max(len(w) for w in words.values())):
                for c in contexts:
                    if step < len(words[c]):
                        await ws.send(json.dumps({"type": "input_text.append", "context_id": c,
                                                  "text": words[c][step]}))
                await asyncio.sleep(WORD_GAP)
            for c in contexts:
                await ws.send(json.dumps({"type": "input_text.done", "context_id": c}))
            await asyncio.wait_for(reader, timeout=600)
    except websockets.ConnectionClosed as exc:
        record["close"] = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else repr(exc)
    except Exception as exc:  # noqa: BLE001 - recorded and counted as a loss
        record["close"] = repr(exc)
    return record


async def load_all(server: Server, sockets: int) -> tuple[list[dict], float]:
    started = time.perf_counter()
    records = await asyncio.gather(*(load_socket(ws_url(server), n, ("a", "b"), started)
                                     for n in range(sockets)))
    return list(records), time.perf_counter() - started


def run_load_once(args, max_queued_jobs: int | None) -> dict:
    settings = {"max_queued_jobs": str(max_queued_jobs)} if max_queued_jobs else {}
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine="hibari", front_workers="1", **settings)
        try:
            socket_first_audio(server, TURN, FIRST_SEGMENT, 1)      # warm-up
            pids = front_worker_pids(server)
            with Sampler(server, pids) as sampler:
                records, wall = asyncio.run(load_all(server, args.sockets))
            log = server.log()
            idle_health = []
            for _ in range(40):
                started = time.perf_counter()
                requests.get(server.url("/health"), timeout=10)
                idle_health.append(time.perf_counter() - started)
                time.sleep(0.05)
        finally:
            server.stop()
    complete, lost, refused, other_errors, mismatched = 0, 0, 0, [], 0
    for record in records:
        for s in record["contexts"].values():
            if s["done"] is not None:
                complete += 1
                if abs(s["done"]["audio_seconds"] - round(s["bytes"] / 2 / RATE, 3)) > 0.0015:
                    mismatched += 1
            elif s["error"] is not None and s["error"].get("status") == 429:
                refused += 1
            else:
                lost += 1
        for error in record["errors"]:
            if error.get("error", {}).get("status") != 429:
                other_errors.append(error)
    firsts = [r["first_audio"] for r in records if r["first_audio"] is not None]
    return {"sockets": args.sockets, "contexts": 2 * args.sockets, "max_queued_jobs": max_queued_jobs or 64,
            "wall_s": round(wall, 2), "complete": complete, "refused_429": refused, "lost": lost,
            "audio_mismatched": mismatched, "other_errors": other_errors[:5], "n_other_errors": len(other_errors),
            "sockets_closed_early": [r["close"] for r in records if r["close"]][:5],
            "first_audio_per_socket": summary(firsts) if firsts else None,
            "front_worker_rss_mb": {"start": round(sum(sampler.start_rss.values()) / 2**20, 1),
                                    "peak": round(sum(sampler.peak_rss.values()) / 2**20, 1)},
            "front_workers": len(pids),
            "health_during": summary(sampler.health) | {"p95_ms": round(percentile(sampler.health, 0.95) * 1000, 1),
                                                        "failures": sampler.health_failures},
            "health_idle": summary(idle_health) | {"p95_ms": round(percentile(idle_health, 0.95) * 1000, 1)},
            "audio_seconds_total": round(sum(s["bytes"] for r in records for s in r["contexts"].values())
                                         / 2 / RATE, 1),
            "lost_records": [r for r in records if any(s["done"] is None and (s["error"] or {}).get("status") != 429
                                                       for s in r["contexts"].values())][:3],
            "server_log_problems": [line for line in log.splitlines()
                                    if re.search(r"WORKER TIMEOUT|Traceback|Error|error|exited|killed", line)][-40:],
            "machine": machine()}


def run_load(args) -> dict:
    runs = [run_load_once(args, args.max_queued_jobs)]
    print(json.dumps({k: v for k, v in runs[0].items() if k != "machine"}, indent=1), flush=True)
    if runs[0]["refused_429"] and not args.max_queued_jobs:
        runs.append(run_load_once(args, 1000))
        print(json.dumps({k: v for k, v in runs[1].items() if k != "machine"}, indent=1), flush=True)
    return {"runs": runs}


# -- Chatterbox on the random checkpoint ------------------------------------------------------------
def run_chatterbox(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint_dir
        if checkpoint is None:
            import chatterbox_checkpoint
            print("building a random checkpoint ...", flush=True)
            checkpoint = str(chatterbox_checkpoint.build_random_checkpoint(Path(tmp) / "ckpt", seed=0,
                                                                            reference_seconds=3.0))
        server = start_server(Path(tmp), engine="chatterbox", checkpoint_dir=checkpoint, device="cpu",
                              max_new_tokens=str(args.tokens), stream_tokens=str(args.stream_tokens),
                              front_workers="1", queue_timeout="600", chunk_timeout="600",
                              max_queued_seconds="0", ready_timeout=900)
        try:
            text, first = "Hi there, friend.", "Hi there,"
            def idle() -> None:
                wait_idle(server)
            socket_first_audio(server, text, first, 500, finish=False, timeout=900)     # warm-up
            idle()
            result = first_audio_pairs(server, args.samples, text, first, 1, finish=False, between=idle,
                                       timeout=900)
        finally:
            server.stop()
    result.update(engine="chatterbox (random weights, CPU)", max_new_tokens=args.tokens,
                  stream_tokens=args.stream_tokens, text=text, first_segment=first, machine=machine())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("first-audio", "cancel", "load", "chatterbox", "all"))
    parser.add_argument("--samples", type=int, default=None, help="pairs (first-audio, chatterbox) or cancels")
    parser.add_argument("--front-workers", type=int, default=2)
    parser.add_argument("--engine", choices=("hibari", "tone"), default="hibari", help="cancel: the engine")
    parser.add_argument("--step-seconds", type=float, default=0.3, help="cancel on tone: each step's length")
    parser.add_argument("--max-delay", type=float, default=0.4, help="cancel: latest cancel after first audio")
    parser.add_argument("--sockets", type=int, default=100)
    parser.add_argument("--max-queued-jobs", type=int, default=None)
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--tokens", type=int, default=12, help="chatterbox: CHATTERBOX_MAX_NEW_TOKENS")
    parser.add_argument("--stream-tokens", type=int, default=4, help="chatterbox: CHATTERBOX_STREAM_TOKENS")
    parser.add_argument("--output", default=None, help="write every number as JSON here")
    args = parser.parse_args()
    parts = ("first-audio", "cancel", "load", "chatterbox") if args.part == "all" else (args.part,)
    runners = {"first-audio": (run_first_audio, 30), "cancel": (run_cancel, 20), "load": (run_load, None),
               "chatterbox": (run_chatterbox, 5)}
    results = {}
    samples = args.samples
    for part in parts:
        runner, default = runners[part]
        args.samples = samples or default
        print(f"== {part}", flush=True)
        results[part] = runner(args)
        print(json.dumps({k: v for k, v in results[part].items() if not k.startswith(("raw_", "trials"))},
                         indent=1), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
