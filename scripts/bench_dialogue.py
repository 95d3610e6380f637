"""Dialogue (POST /v1/audio/dialogue) against single requests (issue 19, "Speed").

Two parts, each on a fresh server (tests/serverkit.py's start_server):

- ``first-audio``: a 10-turn dialogue streamed (``/v1/audio/dialogue/stream``, pcm) against
  ``/v1/audio/speech/stream`` of its first turn alone, same voice and seed: from sending the request
  to the first body byte. Interleaved pairs; the ratio of the medians and the paired differences.
  Target: the dialogue's first audio within 1.2x of the single request's.
- ``batching``: on a random-weight Chatterbox checkpoint (CPU), 4 turns as one dialogue (whole file)
  against the same 4 turns as single requests one after another, same seeds; wall time of each,
  alternating which goes first. Target: the dialogue at least 1.5x faster.

    .venv/bin/python scripts/bench_dialogue.py first-audio [--samples 20] [--engine hibari]
    .venv/bin/python scripts/bench_dialogue.py batching [--samples 3] [--tokens 40] [--checkpoint-dir DIR]
    .venv/bin/python scripts/bench_dialogue.py all --output results.json
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from serverkit import Server, start_server  # noqa: E402

TURNS = ["Good morning, and welcome back to the show.", "Thanks, it is great to be here again.",
         "Let us start with the news of the week.", "There was quite a lot of it, to be honest.",
         "Then we had better get going.", "First, the weather has been strange.",
         "Snow in the spring, and sun in the winter.", "People are talking about nothing else.",
         "And the second story?", "That one is about the football, of course."]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "load_average": os.getloadavg()}


def first_byte(session: requests.Session, server: Server, path: str, body: dict) -> float:
    started = time.perf_counter()
    with session.post(server.url(path), json=body, stream=True, timeout=600) as response:
        assert response.status_code == 200, response.text
        next(response.iter_content(None))
        elapsed = time.perf_counter() - started
        for _ in response.iter_content(65536):
            pass
    return elapsed


def run_first_audio(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server(Path(tmp), engine=args.engine, front_workers="1")
        try:
            session = requests.Session()
            dialogue = {"inputs": [{"text": text} for text in TURNS], "response_format": "pcm"}
            for seed in (1, 2):                   # warm both paths
                first_byte(session, server, "/v1/audio/dialogue/stream", {**dialogue, "seed": seed})
                first_byte(session, server, "/v1/audio/speech/stream",
                           {"input": TURNS[0], "response_format": "pcm", "seed": seed})
            singles, dialogues = [], []
            for n in range(args.samples):
                seed = 100 + n
                pair = [("single", "/v1/audio/speech/stream", {"input": TURNS[0], "response_format": "pcm",
                                                               "seed": seed}),
                        ("dialogue", "/v1/audio/dialogue/stream", {**dialogue, "seed": seed})]
                for name, path, body in (pair if n % 2 == 0 else pair[::-1]):
                    (singles if name == "single" else dialogues).append(first_byte(session, server, path, body))
        finally:
            server.stop()
    single, multi = statistics.median(singles), statistics.median(dialogues)
    differences = [d - s for d, s in zip(dialogues, singles, strict=True)]
    return {"engine": args.engine, "samples": args.samples, "turns": len(TURNS),
            "single_first_audio_ms": {"median": round(single * 1000, 1), "max": round(max(singles) * 1000, 1)},
            "dialogue_first_audio_ms": {"median": round(multi * 1000, 1), "max": round(max(dialogues) * 1000, 1)},
            "ratio_of_medians": round(multi / single, 3),
            "paired_difference_ms_median": round(statistics.median(differences) * 1000, 1),
            "target": "dialogue within 1.2x of the single request", "met": multi / single <= 1.2,
            "machine": machine()}


def run_batching(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint_dir
        if not checkpoint:
            import chatterbox_checkpoint
            checkpoint = str(chatterbox_checkpoint.build_random_checkpoint(Path(tmp) / "ckpt", seed=0))
        server = start_server(Path(tmp), engine="chatterbox", checkpoint_dir=checkpoint, device=args.device,
                              max_new_tokens=str(args.tokens), max_batch="4", front_workers="1",
                              queue_timeout="900", chunk_timeout="900", max_queued_seconds="0",
                              max_whole_file_seconds="0", ready_timeout=900)
        try:
            turns = TURNS[:4]
            session = requests.Session()
            body = {"inputs": [{"text": text} for text in turns], "response_format": "pcm", "gap_ms": 0}

            def dialogue(seed: int) -> float:
                started = time.perf_counter()
                response = session.post(server.url("/v1/audio/dialogue"), json={**body, "seed": seed}, timeout=1800)
                assert response.status_code == 200, response.text
                return time.perf_counter() - started

            def one_by_one(seed: int) -> float:
                started = time.perf_counter()
                for number, text in enumerate(turns):     # turn n's seed in the dialogue: seed + n (one chunk)
                    response = session.post(server.url("/v1/audio/speech"), timeout=1800,
                                            json={"input": text, "response_format": "pcm", "seed": seed + number})
                    assert response.status_code == 200, response.text
                return time.perf_counter() - started

            dialogue(1)                                   # warm-up
            together, apart = [], []
            for n in range(args.samples):
                seed = 10 * (n + 1)
                if n % 2 == 0:
                    together.append(dialogue(seed))
                    apart.append(one_by_one(seed))
                else:
                    apart.append(one_by_one(seed))
                    together.append(dialogue(seed))
        finally:
            server.stop()
    speedup = statistics.median(apart) / statistics.median(together)
    return {"engine": "chatterbox (random checkpoint)", "device": args.device, "tokens_per_turn_cap": args.tokens,
            "samples": args.samples, "dialogue_seconds": [round(t, 2) for t in together],
            "one_after_another_seconds": [round(t, 2) for t in apart], "speedup_of_medians": round(speedup, 2),
            "target": "dialogue at least 1.5x faster", "met": speedup >= 1.5, "machine": machine()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("first-audio", "batching", "all"))
    parser.add_argument("--samples", type=int, default=None)
    parser.add_argument("--engine", default="hibari")
    parser.add_argument("--tokens", type=int, default=40)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint-dir", default="")
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    results: dict[str, dict] = {}
    if args.part in ("first-audio", "all"):
        args.samples = args.samples or 20
        results["first_audio"] = run_first_audio(args)
        print(json.dumps(results["first_audio"], indent=2), flush=True)
    if args.part in ("batching", "all"):
        args.samples = 3 if args.part == "all" or args.samples is None else args.samples
        results["batching"] = run_batching(args)
        print(json.dumps(results["batching"], indent=2), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
