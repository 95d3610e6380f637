"""Word timings against Whisper's on the same audio (issue 18, item 6).

Synthesizes varied sentences with hibari, as the model worker does for a job with
`timestamps=True` (the engine's duration-predictor timings, scaled by any time-stretch), and
transcribes each with the bundled Whisper (faster-whisper, tiny.en, `word_timestamps=True`).
Words that spell the same on both sides are paired; the report gives the median and 90th
percentile absolute start and end error in ms and the share within 50 and 100 ms, for:

* `hibari`: the engine's own timings (what the server sends for hibari);
* `sentence_edges_vs_energy`: the first word's start and the last word's end against the voiced
  span found in the audio energy (the one place with an objective answer), for hibari's timings and
  for Whisper's: how much of the disagreement is Whisper's own;
* `estimate`: the energy-and-length estimate the server falls back on for engines without an
  alignment (Chatterbox), run on the same hibari audio, so the fallback is measured on real speech.

Chatterbox itself is not measured: on this machine only its random-weight checkpoint runs, whose
audio is noise, not words, so Whisper has nothing to align to.

    .venv/bin/python scripts/bench_word_timings.py [--speeds 1.0,3.0] [--output bench-timings.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Hello there, how are you doing today?",
    "Please call me back before five o'clock, or send an email instead.",
    "On the third of March, twelve hundred people came to hear the concert.",
    "She sells sea shells by the sea shore; the shells she sells are surely sea shells.",
    "Weather permitting, we will walk along the river and then have lunch in the old market.",
    "Artificial intelligence is changing how we write, read, and listen.",
    "Is this the right way to the station, or should we turn left at the bridge?",
    "It costs 25 dollars, and the train leaves at 7.",
    "Yes. No. Maybe later, if you really insist!",
    "A journey of a thousand miles begins with a single step.",
    "Our new assistant answers questions, books meetings, and reads your messages aloud.",
)


def wav_bytes(audio: np.ndarray, rate: int) -> bytes:
    from chatterbox_server.audio.encoders import pcm_to_wav
    return pcm_to_wav((np.clip(audio, -1, 1) * 32767).round(), rate)


def summary(errors: list[float]) -> dict:
    if not errors:
        return {"n": 0}
    ms = sorted(abs(e) * 1000 for e in errors)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 1),
            "within_50ms": round(sum(e <= 50 for e in ms) / len(ms), 3),
            "within_100ms": round(sum(e <= 100 for e in ms) / len(ms), 3),
            "mean_signed_ms": round(1000 * statistics.fmean(errors), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speeds", default="1.0,3.0", help="speeds to run (above 2.0 the worker time-stretches)")
    parser.add_argument("--output", help="write the results as JSON here")
    args = parser.parse_args()

    from asr import match_words, transcribe_words

    from workers.audio import finish_piece, split_speed
    from workers.engines.base import SynthesisSettings, VoiceRef
    from workers.engines.hibari import NATIVE_SPEED, HibariEngine
    from workers.timings import FRAME_SECONDS, ChunkWords, find_pauses, frame_levels

    engine = HibariEngine()
    info = engine.load()
    rate = info.sample_rate
    results = {}
    for speed in (float(s) for s in args.speeds.split(",")):
        engine_speed, stretch = split_speed(speed, NATIVE_SPEED)
        errors: dict[str, dict[str, list[float]]] = {"hibari": {"start": [], "end": []},
                                                     "estimate": {"start": [], "end": []}}
        heard = total = 0
        edges: dict[str, list[float]] = {"hibari": [], "whisper": []}
        for seed, text in enumerate(SENTENCES):
            made = engine.synthesize(text, SynthesisSettings(speed=engine_speed, timestamps=True), VoiceRef(), seed)
            audio = finish_piece(made.audio, rate, stretch, first=True, last=True)
            ours = ChunkWords(text, rate)
            ours.add(made.audio, audio)
            guessed = ChunkWords(text, rate)
            guessed.add(made.audio, audio)
            timings = {"hibari": ours.finish(made.words), "estimate": guessed.finish(None)}
            whisper = transcribe_words(wav_bytes(audio, rate))
            total += len(timings["hibari"])
            span, _ = find_pauses(frame_levels(audio, rate))
            if span and whisper:
                onset, offset = span[0] * FRAME_SECONDS, span[1] * FRAME_SECONDS
                hib = timings["hibari"]
                edges["hibari"] += [hib[0][1] - onset, hib[-1][2] - offset]
                edges["whisper"] += [whisper[0][1] - onset, whisper[-1][2] - offset]
            for source, words in timings.items():
                pairs = match_words(words, whisper)
                if source == "hibari":
                    heard += len(pairs)
                for (_, start, end), (_, w_start, w_end) in pairs:
                    errors[source]["start"].append(start - w_start)
                    errors[source]["end"].append(end - w_end)
        results[f"speed {speed:g}"] = {"words": total, "matched": heard, **{
            source: {edge: summary(values) for edge, values in sides.items()} for source, sides in errors.items()},
            "sentence_edges_vs_energy": {source: summary(values) for source, values in edges.items()}}
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
