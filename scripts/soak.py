"""Soak test: thousands of requests over every endpoint, with faults, against a real server.

    PYTHONPATH=. .venv/bin/python scripts/soak.py --requests 2000 --output docs/soak-latest.json

Starts gunicorn + model workers (the `tone` engine, whose audio length is exact: 0.15 s a word,
so every response can be checked to the byte), then sends a weighted mix: whole files, raw
streams, SSE, slow readers, clients that hang up at a random point, the Extended API with its
output URLs, voice uploads and deletes, voice conversion, engine errors, hostile uploads and
malformed bodies; every `--kill-every` requests it kills a model worker with SIGKILL.

Every request must end with complete audio or an explicit error (a JSON 4xx/5xx, an SSE `error`
event, or an aborted transfer). Anything else (short audio that looks complete, a 5xx that is not
JSON, a hostile body accepted) is LOST and makes the exit status 1. Memory and open file
descriptors of every process of the server are compared before and after (same roles: a model
worker killed and replaced counts as its slot).
"""
from __future__ import annotations

import argparse
import base64
import collections
import io
import json
import os
import random
import signal
import struct
import sys
import threading
import time
import uuid
import wave
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from serverkit import Server, start_server  # noqa: E402

WORD_BYTES = int(0.15 * 24000) * 2      # the tone engine: 3600 PCM16 samples a word
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november".split()
TIMEOUT = 60


def sentence(rng: random.Random, low: int = 3, high: int = 40) -> tuple[str, int]:
    words = [rng.choice(WORDS) for _ in range(rng.randint(low, high))]
    text = " ".join(words)
    cut = rng.randint(1, len(words) - 1)
    return " ".join(words[:cut]) + ". " + " ".join(words[cut:]) + ".", len(words) if text else 0


def reference_wav(seconds: float, rate: int = 24000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        t = [int(8000 * ((i * 440 / rate) % 1.0 - 0.5)) for i in range(int(seconds * rate))]
        out.writeframes(struct.pack(f"<{len(t)}h", *t))
    return buffer.getvalue()


REFERENCE = reference_wav(1.5)


# -- outcomes -------------------------------------------------------------------------------------
def explicit_error(response: requests.Response) -> str:
    """`error:<code>` for a JSON error in either envelope, or LOST when the error is not explicit."""
    try:
        body = response.json()
    except ValueError:
        return f"LOST:non-json {response.status_code}"
    code = body.get("error", {}).get("code") if isinstance(body.get("error"), dict) else body.get("error_code")
    return f"error:{response.status_code}:{(code or 'none').lower()}"


def audio_outcome(response: requests.Response, body: bytes, words: int) -> str:
    if response.status_code != 200:
        return explicit_error(response)
    expected = 44 + words * WORD_BYTES
    return "complete" if len(body) == expected else f"LOST:{len(body)} bytes, expected {expected}"


# -- scenarios: each returns an outcome -----------------------------------------------------------
def speech_wav(server: Server, rng: random.Random) -> str:
    text, words = sentence(rng)
    response = requests.post(server.url("/v1/audio/speech"), json={"input": text}, timeout=TIMEOUT)
    return audio_outcome(response, response.content, words)


def speech_codec(server: Server, rng: random.Random) -> str:
    text, _ = sentence(rng)
    fmt = rng.choice(["mp3", "opus", "aac", "flac", "pcm"])
    response = requests.post(server.url("/v1/audio/speech"), json={"input": text, "response_format": fmt},
                             timeout=TIMEOUT)
    if response.status_code != 200:
        return explicit_error(response)
    return "complete" if response.content else "LOST:empty audio"


def read_stream(response: requests.Response, pause: float = 0.0) -> bytes | str:
    body = b""
    try:
        for piece in response.iter_content(4096):
            body += piece
            if pause:
                time.sleep(pause)
    except requests.exceptions.ChunkedEncodingError:
        return "error:stream_aborted"     # the server's explicit signal: no final chunk
    return body


def stream_wav(server: Server, rng: random.Random, pause: float = 0.0) -> str:
    text, words = sentence(rng, 10, 60)
    with requests.post(server.url("/v1/audio/speech/stream"), json={"input": text, "streaming_chunk_size": 60},
                       stream=True, timeout=TIMEOUT) as response:
        if response.status_code != 200:
            return explicit_error(response)
        body = read_stream(response, pause)
    return body if isinstance(body, str) else audio_outcome(response, body, words)


def slow_reader(server: Server, rng: random.Random) -> str:
    return stream_wav(server, rng, pause=0.05)


def sse(server: Server, rng: random.Random) -> str:
    text, words = sentence(rng, 10, 60)
    with requests.post(server.url("/v1/audio/speech"), stream=True, timeout=TIMEOUT,
                       json={"input": text, "stream_format": "sse", "streaming_chunk_size": 60}) as response:
        if response.status_code != 200:
            return explicit_error(response)
        audio, last = 0, None
        try:
            for line in response.iter_lines():
                if line.startswith(b"data: "):
                    last = json.loads(line[6:])
                    if last["type"] == "speech.audio.delta":
                        audio += len(base64.b64decode(last["audio"]))
        except requests.exceptions.ChunkedEncodingError:
            return "LOST:sse cut without an error event"
    if last is None:
        return "LOST:no event"
    if last["type"] == "error":
        return f"error:sse:{last['error']['code']}"
    if last["type"] != "speech.audio.done":
        return f"LOST:sse ended with {last['type']}"
    return "complete" if audio == words * WORD_BYTES else f"LOST:sse {audio} bytes of {words * WORD_BYTES}"


def disconnect(server: Server, rng: random.Random) -> str:
    text, _ = sentence(rng, 30, 80)
    text += " " + " ".join("[[sleep:0.02]]" for _ in range(5))
    response = requests.post(server.url("/v1/audio/speech/stream"), json={"input": text, "streaming_chunk_size": 50},
                             stream=True, timeout=TIMEOUT)
    if response.status_code != 200:
        return explicit_error(response)
    limit, read = rng.randint(0, 200_000), 0
    try:
        for piece in response.iter_content(4096):
            read += len(piece)
            if read >= limit:
                break
    except requests.exceptions.ChunkedEncodingError:
        pass
    response.close()
    return "client_disconnect"


def extended_tts(server: Server, rng: random.Random) -> str:
    text, words = sentence(rng)
    response = requests.post(server.url("/api/v1/tts?response_mode=url"), timeout=TIMEOUT,
                             json={"text": text, "export_formats": ["wav", "mp3"]})
    if response.status_code != 200:
        return explicit_error(response)
    files = response.json()["output_files"]
    wav = requests.get(files[0]["url"], timeout=TIMEOUT)
    if wav.status_code != 200:
        return f"LOST:output url answered {wav.status_code}"
    return audio_outcome(wav, wav.content, words)


def voice_cycle(server: Server, rng: random.Random) -> str:
    name = f"soak{uuid.uuid4().hex[:12]}"
    created = requests.post(server.url("/v1/voices"), data={"name": name}, timeout=TIMEOUT,
                            files={"voice_file": ("ref.wav", REFERENCE, "audio/wav")})
    if created.status_code != 201:
        return explicit_error(created)
    text, words = sentence(rng)
    spoken = requests.post(server.url("/v1/audio/speech"), json={"input": text, "voice": name}, timeout=TIMEOUT)
    outcome = audio_outcome(spoken, spoken.content, words)
    deleted = requests.delete(server.url(f"/v1/voices/{name}"), timeout=TIMEOUT)
    return outcome if deleted.status_code == 200 else f"LOST:delete answered {deleted.status_code}"


def voice_conversion(server: Server, rng: random.Random) -> str:
    response = requests.post(server.url("/api/v1/vc"), data={"export_formats": "wav"}, timeout=TIMEOUT,
                             files={"input_audio": ("in.wav", REFERENCE, "audio/wav"),
                                    "target_voice_source": ("target.wav", REFERENCE, "audio/wav")})
    if response.status_code != 200:
        return explicit_error(response)
    return "complete" if response.content[:4] == b"RIFF" and len(response.content) > 44 else "LOST:vc audio"


def engine_fault(server: Server, rng: random.Random) -> str:
    marker = rng.choice(["[[fail]]", "[[error]]"])
    response = requests.post(server.url("/v1/audio/speech"), json={"input": f"{marker} words"}, timeout=TIMEOUT)
    expected = 400 if marker == "[[fail]]" else 500
    if response.status_code not in (expected, 429, 503):  # 503: the pool was replacing a killed worker; 429: full
        return f"LOST:{marker} answered {response.status_code}"
    return explicit_error(response)


SDP_AS_MP3 = b"\xff\xfb\x90\x00\nv=0\r\no=- 0 0 IN IP4 127.0.0.1\r\nc=IN IP4 127.0.0.1\r\nm=audio 5004 RTP/AVP 14\r\n"
HOSTILE: list[tuple[str, Callable[[Server], requests.Response]]] = [
    ("sdp upload", lambda s: requests.post(s.url("/v1/audio/speech/upload"), data={"input": "hi"},
                                           files={"voice_file": ("x.mp3", SDP_AS_MP3)}, timeout=TIMEOUT)),
    ("truncated wav", lambda s: requests.post(s.url("/v1/voices"), data={"name": "trunc"},
                                              files={"voice_file": ("x.wav", REFERENCE[:40])}, timeout=TIMEOUT)),
    ("malformed json", lambda s: requests.post(s.url("/v1/audio/speech"), data=b'{"input": "hi',
                                               headers={"Content-Type": "application/json"}, timeout=TIMEOUT)),
    ("nested json", lambda s: requests.post(s.url("/v1/audio/speech"), data=b"[" * 50_000 + b"]" * 50_000,
                                            headers={"Content-Type": "application/json"}, timeout=TIMEOUT)),
    ("unknown field", lambda s: requests.post(s.url("/v1/audio/speech"), json={"input": "hi", "bogus": 1},
                                              timeout=TIMEOUT)),
    ("form as json", lambda s: requests.post(s.url("/v1/audio/speech"), data={"input": "hi"}, timeout=TIMEOUT)),
    ("too long", lambda s: requests.post(s.url("/v1/audio/speech"), json={"input": "word " * 5000},
                                         timeout=TIMEOUT)),
    ("newline name", lambda s: requests.post(s.url("/v1/voices"), data={"name": "evil\n"}, timeout=TIMEOUT,
                                             files={"voice_file": ("x.wav", REFERENCE)})),
    ("cross-site form", lambda s: requests.post(s.url("/v1/audio/speech/upload"), data={"input": "hi"},
                                                headers={"Origin": "https://evil.example"}, timeout=TIMEOUT)),
    ("rebinding host", lambda s: requests.get(s.url("/v1/models"), headers={"Host": "evil.example"},
                                              timeout=TIMEOUT)),
]


def hostile(server: Server, rng: random.Random) -> str:
    name, send = rng.choice(HOSTILE)
    response = send(server)
    if response.status_code == 503:      # no model worker ready: refused before the body is even read
        return explicit_error(response)
    if not 400 <= response.status_code < 500:
        return f"LOST:hostile {name} answered {response.status_code}"
    return "rejected:" + explicit_error(response).split(":", 1)[1]


def metadata(server: Server, rng: random.Random) -> str:
    path = rng.choice(["/v1/models", "/v1/voices", "/v1/status", "/v1/status/progress", "/health",
                       "/api/v1/voices", "/api/v1/health", "/metrics", "/memory"])
    response = requests.get(server.url(path), timeout=TIMEOUT)
    if response.status_code == 200:
        return "complete"
    return explicit_error(response) if response.status_code < 600 else "LOST"


SCENARIOS: dict[str, tuple[int, Callable[[Server, random.Random], str]]] = {
    "speech_wav": (16, speech_wav), "speech_codec": (6, speech_codec), "stream_wav": (16, stream_wav),
    "sse": (10, sse), "slow_reader": (4, slow_reader), "disconnect": (8, disconnect),
    "extended_tts": (7, extended_tts), "voice_cycle": (3, voice_cycle), "voice_conversion": (3, voice_conversion),
    "engine_fault": (3, engine_fault), "hostile": (12, hostile), "metadata": (12, metadata),
}


# -- processes ------------------------------------------------------------------------------------
def role(process: psutil.Process) -> str:
    line = " ".join(process.cmdline())
    for marker, name in (("master", "master"), ("gunicorn: worker", "front workers"),
                         ("chatterbox-pool-supervisor", "pool supervisor"),
                         ("chatterbox-model-worker", "model workers"),
                         ("from multiprocessing.resource_tracker", "resource tracker"), ("-B -", "resource tracker")):
        if marker in line:
            return name
    return "other: " + line[:40]


def snapshot(server: Server) -> dict[str, dict[str, int]]:
    master = psutil.Process(server.process.pid)
    totals: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"processes": 0, "rss": 0, "fds": 0})
    for process in [master, *master.children(recursive=True)]:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            entry = totals[role(process)]
            entry["processes"] += 1
            entry["rss"] += process.memory_info().rss
            entry["fds"] += process.num_fds()
        except psutil.Error:
            continue
    return dict(totals)


def model_worker_pids(server: Server) -> list[int]:
    report = requests.get(server.url("/health"), timeout=10).json()
    return [slot["pid"] for slot in report["workers"]["slots"] if slot.get("pid", 0) > 0 and slot["state"] == "ready"]


def wait_ready(server: Server, timeout: float = 90) -> None:
    """Until every model worker is ready again (a slot killed often waits out its restart back-off)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            workers = requests.get(server.url("/health"), timeout=5).json()["workers"]
            if workers["ready"] == workers["total"]:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready again")


# -- the run --------------------------------------------------------------------------------------
def drive(server: Server, plan: list[str], concurrency: int, kill_every: int, seed: int,
          rng: random.Random, sample_every: int = 0) -> tuple[dict[str, collections.Counter], list[int], list]:
    """Send the planned requests from `concurrency` threads; SIGKILL a model worker every `kill_every`;
    note the front workers' memory every `sample_every` requests."""
    outcomes: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    lock = threading.Lock()
    done = [0]
    kills: list[int] = []
    samples: list[tuple[int, float]] = []

    def one(index: int) -> None:
        scenario = plan[index]
        try:
            outcome = SCENARIOS[scenario][1](server, random.Random(seed * 100_003 + index))
        except requests.RequestException as exc:
            outcome = f"LOST:{type(exc).__name__}"
        with lock:
            outcomes[scenario][outcome] += 1
            done[0] += 1
            kill = kill_every and done[0] % kill_every == 0
            sample = sample_every and done[0] % sample_every == 0
            count = done[0]
        if sample:
            front = snapshot(server).get("front workers", {"rss": 0})
            samples.append((count, round(front["rss"] / 2 ** 20, 1)))
        if kill:
            pids = model_worker_pids(server)
            if pids:
                os.kill(rng.choice(pids), signal.SIGKILL)
                kills.append(done[0])

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(len(plan))))
    return outcomes, kills, sorted(samples)


def run(args: argparse.Namespace) -> dict:
    import tempfile
    rng = random.Random(args.seed)
    names = list(SCENARIOS)
    weights = [SCENARIOS[name][0] for name in names]
    plan = [rng.choices(names, weights)[0] for _ in range(args.requests)]
    warmup = [rng.choices(names, weights)[0] for _ in range(args.warmup)]
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        server = start_server(Path(tmp), engine="tone", front_workers=str(args.front_workers),
                              model_workers=str(args.model_workers), max_streams_per_key="0")
        try:
            # every code path, codec and thread pool is loaded before the first snapshot
            drive(server, warmup, args.concurrency, 0, args.seed + 1, rng)
            wait_ready(server)
            time.sleep(3)
            before = snapshot(server)
            started = time.monotonic()
            outcomes, kills, samples = drive(server, plan, args.concurrency, args.kill_every, args.seed, rng,
                                             args.sample_every)
            elapsed = time.monotonic() - started
            wait_ready(server)
            time.sleep(3)                   # idle connections close, the last replacement settles
            after = snapshot(server)
        finally:
            server.stop()
    return {"requests": args.requests, "warmup_requests": args.warmup, "concurrency": args.concurrency,
            "seed": args.seed, "seconds": round(elapsed, 1), "model_worker_kills_after_requests": kills,
            "outcomes": {name: dict(counter) for name, counter in sorted(outcomes.items())},
            "front_worker_rss_mb_after_requests": samples,
            "processes_before": before, "processes_after": after}


def summarize(result: dict) -> tuple[str, bool]:
    by_cause: collections.Counter = collections.Counter()
    lost = []
    for scenario, counter in result["outcomes"].items():
        for outcome, count in counter.items():
            cause = outcome.split(":", 1)[0]
            by_cause[outcome if cause in ("error", "rejected") else cause] += count
            if cause == "LOST":
                lost.append(f"{scenario}: {outcome} x{count}")
    lines = [f"{result['requests']} requests in {result['seconds']} s, concurrency {result['concurrency']}, "
             f"model worker killed after requests {result['model_worker_kills_after_requests']}", "",
             "| outcome | requests |", "| --- | --- |"]
    lines += [f"| {outcome} | {count} |" for outcome, count in sorted(by_cause.items())]
    lines += ["", "| process role | processes | RSS before (MB) | RSS after (MB) | growth (MB) | growth a process "
              "(MB) | fds before | fds after |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    healthy = not lost
    for name, first in sorted(result["processes_before"].items()):
        last = result["processes_after"].get(name, {"processes": 0, "rss": 0, "fds": 0})
        growth = (last["rss"] - first["rss"]) / 2 ** 20
        each = growth / max(first["processes"], 1)
        lines.append(f"| {name} | {first['processes']} -> {last['processes']} | {first['rss'] / 2 ** 20:.1f} | "
                     f"{last['rss'] / 2 ** 20:.1f} | {growth:+.1f} | {each:+.1f} | {first['fds']} | {last['fds']} |")
        healthy = healthy and each < 50 and last["fds"] <= first["fds"]
    samples = result.get("front_worker_rss_mb_after_requests")
    if samples:
        lines += ["", "front workers' RSS (MB) after N requests: "
                  + ", ".join(f"{count}: {rss}" for count, rss in samples)]
    if lost:
        lines += ["", "LOST:", *lost]
    return "\n".join(lines), healthy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--kill-every", type=int, default=300, help="SIGKILL a model worker every N requests")
    parser.add_argument("--front-workers", type=int, default=2)
    parser.add_argument("--model-workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--warmup", type=int, default=300, help="requests before the first memory snapshot")
    parser.add_argument("--sample-every", type=int, default=500, help="note front-worker memory every N requests")
    parser.add_argument("--output", help="write the raw result as JSON here")
    args = parser.parse_args()
    result = run(args)
    text, healthy = summarize(result)
    print(text)
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
