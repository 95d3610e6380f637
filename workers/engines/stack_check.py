"""`python -m workers.engines.stack_check`: imports the whole Chatterbox engine stack, as a model
worker would, and exits non-zero naming what does not load. `make install-chatterbox` ends with it,
so a torch/torchaudio pair that does not load together fails the install instead of a request."""
from __future__ import annotations

import importlib
import sys

# What the engine imports: torch and torchaudio (a compiled pair), each upstream model class and the
# modules our batched decode reaches into.
STACK = ("torch", "torchaudio", "librosa", "transformers", "diffusers", "s3tokenizer", "perth",
         "chatterbox.tts", "chatterbox.tts_turbo", "chatterbox.mtl_tts", "chatterbox.vc",
         "workers.engines.chatterbox", "workers.engines.t3_batch", "workers.engines.s3gen_stream",
         "workers.engines.s3gen_batch")


def failures(modules: tuple[str, ...] = STACK) -> list[str]:
    broken = []
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - every kind of load failure is the finding
            broken.append(f"{name}: {type(exc).__name__}: {exc}")
    return broken


def main() -> int:
    broken = failures()
    if broken:
        print("the Chatterbox engine stack does not load:", *broken, sep="\n  ", file=sys.stderr)
        return 1
    import torch
    import torchaudio
    print(f"Chatterbox engine stack loads: torch {torch.__version__}, torchaudio {torchaudio.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
