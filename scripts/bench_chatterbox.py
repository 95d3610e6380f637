"""Chatterbox engine timings on a checkpoint: load time, speech tokens per second, first-chunk latency,
time to first audio with token-window streaming, and continuous batching of concurrent streams.

Without --checkpoint-dir it builds a random-weight checkpoint of the real architecture first (no
hub access). Random weights never emit the stop token, so every generation runs to its token cap:
tokens per second are then exact, while the audio is noise. Run it on a GPU box with --device cuda.

    .venv/bin/python scripts/bench_chatterbox.py --device cpu --tokens 8 --output bench-chatterbox.json
    .venv/bin/python scripts/bench_chatterbox.py --device cpu --tokens 100 --repeats 0 --streams 1,2,4

--streams measures (a) one stream: time to its first audio against the time for the whole chunk
(the same chunk vocoded whole, as before streaming), and (b) N streams started together and
advanced by the engine's batched step as the model worker does: total speech tokens/s, audio
seconds per wall second and the time until the last stream has its first audio, each against N=1.

--s3gen-batch measures S3Gen's flow (tokens -> mel, the expensive part of vocoding) for N windows
of different voices and lengths in one batched call against N separate calls, and one HiFiGAN
call per window for scale:

    .venv/bin/python scripts/bench_chatterbox.py --device cpu --repeats 0 --skip-warmup --s3gen-batch 1,2,4
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
    parser.add_argument("--streams", default="", help="concurrent stream counts, e.g. 1,2,4,8 (empty: skip)")
    parser.add_argument("--stream-tokens", type=int, default=25, help="first vocoder window (CHATTERBOX_STREAM_TOKENS)")
    parser.add_argument("--s3gen-batch", default="", help="window counts of one flow call, e.g. 1,2,4 (empty: skip)")
    parser.add_argument("--window-tokens", type=int, default=50, help="new tokens per window for --s3gen-batch")
    parser.add_argument("--skip-warmup", action="store_true")
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
                              max_new_tokens=args.tokens, stream_tokens=args.stream_tokens)
    load_seconds, info = timed(engine.load)
    warmup_seconds = None if args.skip_warmup else timed(engine.warmup, info)[0]
    runs = []
    for seed in range(args.repeats):
        seconds, result = timed(engine.synthesize, FIRST_CHUNK, SynthesisSettings(), VoiceRef("default"), seed)
        runs.append({"seconds": seconds, "tokens": result.output_tokens, "audio_seconds": result.audio.size / 24000})
    median = statistics.median(run["seconds"] for run in runs) if runs else None
    tokens = statistics.median(run["tokens"] for run in runs) if runs else None
    report = {
        "device": info.device, "model": info.model, "torch": torch.__version__, "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name() if info.device.startswith("cuda") else None,
        "checkpoint_build_seconds": build_seconds, "load_seconds": load_seconds, "warmup_seconds": warmup_seconds,
        "first_chunk_characters": len(FIRST_CHUNK), "token_cap": args.tokens,
        "first_chunk_seconds_median": median, "speech_tokens_per_second": tokens / median if runs else None,
        "memory": engine.memory_stats(), "runs": runs,
        "load_average_before": _load(),
    }
    if args.streams:
        report["streaming"] = streaming(engine, [int(n) for n in args.streams.split(",")])
        report["load_average_after"] = _load()
    if args.s3gen_batch:
        report["s3gen_batch"] = s3gen_batching(engine, [int(n) for n in args.s3gen_batch.split(",")],
                                               args.window_tokens)
        report["load_average_after"] = _load()
    print(json.dumps(report, indent=2))
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))


def run_streams(engine, count: int, incremental: bool = True) -> dict:
    """`count` streams opened together and stepped as the model worker does until all are done."""
    from workers.engines.base import SynthesisSettings, VoiceRef

    started = time.perf_counter()
    streams = [engine.open_stream(FIRST_CHUNK, SynthesisSettings(), VoiceRef("default"), seed, incremental=incremental)
               for seed in range(count)]
    first: dict[int, float] = {}
    samples = tokens = 0
    while not all(stream.done for stream in streams):
        running = [stream for stream in streams if not stream.done]
        for stream, piece in zip(running, engine.step(running), strict=True):
            if isinstance(piece, BaseException):
                raise piece
            tokens += piece.output_tokens
            samples += piece.audio.size
            if piece.audio.size and streams.index(stream) not in first:
                first[streams.index(stream)] = time.perf_counter() - started
    wall = time.perf_counter() - started
    for stream in streams:
        stream.close()
    return {"streams": count, "wall_seconds": wall, "speech_tokens": tokens, "audio_seconds": samples / 24000,
            "first_audio_seconds": [first[i] for i in sorted(first)], "last_first_audio_seconds": max(first.values()),
            "speech_tokens_per_second": tokens / wall, "audio_seconds_per_second": samples / 24000 / wall}


def streaming(engine, counts: list[int]) -> dict:
    whole = run_streams(engine, 1, incremental=False)
    print("whole chunk:", json.dumps(whole), file=sys.stderr, flush=True)
    runs = {}
    for count in counts:
        runs[count] = run_streams(engine, count)
        print(f"{count} streams:", json.dumps(runs[count]), file=sys.stderr, flush=True)
    one = runs.get(1)
    out = {"whole_chunk": whole, "runs": list(runs.values())}
    if one:
        out["first_audio_vs_whole_chunk"] = one["first_audio_seconds"][0] / whole["wall_seconds"]
        out["first_audio_vs_own_last_audio"] = one["first_audio_seconds"][0] / one["wall_seconds"]
        for run in runs.values():
            run["tokens_per_second_vs_one"] = run["speech_tokens_per_second"] / one["speech_tokens_per_second"]
            run["audio_per_second_vs_one"] = run["audio_seconds_per_second"] / one["audio_seconds_per_second"]
            run["last_first_audio_vs_one"] = run["last_first_audio_seconds"] / one["first_audio_seconds"][0]
    return out


def s3gen_batching(engine, counts: list[int], window_tokens: int) -> dict:
    """Seconds of one batched flow call for N windows against N separate calls. Row i speaks in
    voice i (the built-in voice, then synthetic references of 2, 4, 6 ... s) and its window has
    window_tokens + 5 * i new tokens behind 25 context tokens, plus the 3 lookahead tokens."""
    import torch
    from chatterbox_checkpoint import synthetic_voice, write_wav

    from workers.engines.base import VoiceRef
    from workers.engines.s3gen_batch import FlowRow, flow_mels
    from workers.engines.s3gen_stream import CONTEXT_TOKENS, LOOKAHEAD, MELS_PER_TOKEN

    flow, hift = engine._tts.s3gen.flow, engine._tts.s3gen.mel2wav
    folder = Path(tempfile.mkdtemp(prefix="bench-voices-"))
    rows, prompts = [], []
    generator = torch.Generator().manual_seed(0)
    for i in range(max(counts)):
        if i == 0:
            gen = engine._builtin.gen
        else:
            path = write_wav(folder / f"voice{i}.wav", synthetic_voice(2.0 * i, f0=120.0 + 20 * i, seed=i))
            gen = engine._conditionals(VoiceRef(f"voice{i}", str(path)))[0].gen
        tokens = torch.randint(0, 6561, (CONTEXT_TOKENS + window_tokens + 5 * i + LOOKAHEAD,), generator=generator)
        frames = MELS_PER_TOKEN * (gen["prompt_token"].shape[-1] + tokens.numel())
        rows.append(FlowRow(tokens.to(engine.device), gen, torch.randn(1, 80, frames, generator=generator)))
        prompts.append(int(gen["prompt_token"].shape[-1]))
    out = []
    with torch.inference_mode():
        timed(flow_mels, flow, rows[:1], 10)                      # first-call allocations out of the way
        for count in counts:
            batched, mels = timed(flow_mels, flow, rows[:count], 10)
            separate = sum(timed(flow_mels, flow, [row], 10)[0] for row in rows[:count])
            hifigan = sum(timed(hift.inference, speech_feat=m, cache_source=torch.zeros(1, 1, 0))[0] for m in mels)
            run = {"windows": count, "prompt_tokens": prompts[:count],
                   "window_tokens": [row.tokens.numel() for row in rows[:count]],
                   "batched_flow_seconds": batched, "separate_flow_seconds": separate,
                   "separate_over_batched": separate / batched, "hifigan_seconds_per_window": hifigan / count}
            print("s3gen batch:", json.dumps(run), file=sys.stderr, flush=True)
            out.append(run)
    return {"runs": out}


def _load() -> list[float]:
    import os
    return list(os.getloadavg())


if __name__ == "__main__":
    main()
