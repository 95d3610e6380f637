"""Chatterbox engine timings on a checkpoint: load time, speech tokens per second, first-chunk latency.

Without --checkpoint-dir it builds a random-weight checkpoint of the real architecture first (no
hub access). Random weights never emit the stop token, so every generation runs to its token cap:
tokens per second are then exact, while the audio is noise. Run it on a GPU box with --device cuda.

    .venv/bin/python scripts/bench_chatterbox.py --device cpu --tokens 8 --output bench-chatterbox.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

FIRST_CHUNK = "Streaming starts with a short first chunk, so the listener hears audio almost at once."


def timed(function, *args, **kwargs) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint-dir", help="existing checkpoint (default: build a random one)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--model", default="standard", choices=("standard", "turbo", "multilingual"))
    parser.add_argument("--tokens", type=int, default=100, help="speech-token cap per generation")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()

    import torch

    from workers.engines.base import SynthesisSettings, VoiceRef
    from workers.engines.chatterbox import ChatterboxEngine

    checkpoint = args.checkpoint_dir
    build_seconds = None
    if checkpoint is None:
        from chatterbox_checkpoint import build_random_checkpoint, build_random_turbo_checkpoint
        builder = build_random_turbo_checkpoint if args.model == "turbo" else build_random_checkpoint
        options = {"multilingual": True} if args.model == "multilingual" else {}
        build_seconds, checkpoint = timed(builder, Path(tempfile.mkdtemp(prefix="bench-checkpoint-")), **options)

    engine = ChatterboxEngine(args.model, device=args.device, checkpoint_dir=str(checkpoint),
                              max_new_tokens=args.tokens)
    load_seconds, info = timed(engine.load)
    warmup_seconds, _ = timed(engine.warmup, info)
    runs = []
    for seed in range(args.repeats):
        seconds, result = timed(engine.synthesize, FIRST_CHUNK, SynthesisSettings(), VoiceRef("default"), seed)
        runs.append({"seconds": seconds, "tokens": result.output_tokens, "audio_seconds": result.audio.size / 24000})
    median = statistics.median(run["seconds"] for run in runs)
    tokens = statistics.median(run["tokens"] for run in runs)
    report = {
        "device": info.device, "model": info.model, "torch": torch.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if info.device.startswith("cuda") else None,
        "checkpoint_build_seconds": build_seconds, "load_seconds": load_seconds, "warmup_seconds": warmup_seconds,
        "first_chunk_characters": len(FIRST_CHUNK), "token_cap": args.tokens,
        "first_chunk_seconds_median": median, "speech_tokens_per_second": tokens / median,
        "memory": engine.memory_stats(), "runs": runs,
    }
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
