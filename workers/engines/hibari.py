"""The embedded engine: hibari-tts, a small English ONNX voice shipped inside its wheel (CPU)."""
from __future__ import annotations

import unicodedata

import numpy as np

from workers.engines.base import Engine, EngineError, EngineInfo, SynthesisSettings, Synthesized, VoiceRef

NATIVE_SPEED = (0.5, 2.0)     # hibari's duration model; the model worker time-stretches beyond it
VOICE = "heart"               # the voice inside the package; the others would need a download


class HibariEngine(Engine):
    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.tts = None

    def load(self) -> EngineInfo:
        from hibari import SAMPLE_RATE, Hibari
        self.tts = Hibari(voice=VOICE, threads=self.threads)
        return EngineInfo(engine="hibari", model="hibari", device="cpu", sample_rate=SAMPLE_RATE,
                          model_names=("hibari", f"hibari-{VOICE}"), default_voice=VOICE, voices=(VOICE,),
                          native_speed=NATIVE_SPEED)

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        if voice.audio_path is not None:
            raise EngineError("voice cloning needs the chatterbox engine; hibari has one built-in voice")
        from hibari import dsp
        rng = np.random.default_rng(seed)
        parts, input_tokens = [], 0
        for phonemes in self._phonemize(text):
            ids = self.tts.ids(phonemes)
            input_tokens += len(ids)
            parts.append(self.tts.from_ids(ids, settings.speed, rng))
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        # hibari predicts one acoustic frame per hop: those frames are its output units
        return Synthesized(audio.astype(np.float32), input_tokens, int(audio.size // dsp.HOP))

    def _phonemize(self, text: str) -> list[str]:
        # NFKC first: hibari's number reader fails on forms like "¹Å" that compatibility folding turns
        # into plain digits and letters
        normalized = unicodedata.normalize("NFKC", text)
        try:
            return self.tts.phonemize(normalized)
        except Exception as exc:  # noqa: BLE001 - hibari's G2P raises assorted errors on odd text
            raise EngineError(f"hibari cannot read this text ({type(exc).__name__}: {exc}); "
                              "remove unusual symbols or spell them out") from exc
