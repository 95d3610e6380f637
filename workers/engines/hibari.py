"""The embedded engine: hibari-tts, a small English ONNX voice shipped inside its wheel (CPU).

Its session also outputs the duration predictor's frames per phoneme (workers/engines/hibari_align.py),
so a chunk asked for with ``SynthesisSettings.timestamps`` comes with real word timings."""
from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np

from workers.engines.base import Engine, EngineError, EngineInfo, SynthesisSettings, Synthesized, VoiceRef
from workers.engines.hibari_align import phoneme_groups, session_with_durations, words_for

NATIVE_SPEED = (0.5, 2.0)     # hibari's duration model; the model worker time-stretches beyond it
VOICE = "heart"               # the voice inside the package; the others would need a download


class HibariEngine(Engine):
    def __init__(self, threads: int = 1) -> None:
        self.threads = threads
        self.tts = None
        self.aligned = False          # the session outputs phoneme durations too

    def describe(self) -> EngineInfo:
        from hibari import SAMPLE_RATE
        return EngineInfo(engine="hibari", model="hibari", device="cpu", sample_rate=SAMPLE_RATE,
                          model_names=("hibari", f"hibari-{VOICE}"), default_voice=VOICE, voices=(VOICE,),
                          native_speed=NATIVE_SPEED)

    def load(self) -> EngineInfo:
        from hibari import Hibari
        self.tts = Hibari(voice=VOICE, threads=self.threads)
        session = session_with_durations(self.tts.model_path, self.threads)
        if session is not None:
            self.tts.sess, self.aligned = session, True     # same audio, one more output
        return self.describe()

    def unload(self) -> None:
        self.tts, self.aligned = None, False

    def weight_bytes(self) -> int:
        return self.expected_bytes() if self.tts is not None else 0

    def expected_bytes(self) -> int:
        """The ONNX model file: what its session holds, near enough."""
        import hibari
        return sum(path.stat().st_size for path in Path(hibari.__file__).parent.joinpath("assets").glob("*.onnx"))

    def synthesize(self, text: str, settings: SynthesisSettings, voice: VoiceRef, seed: int) -> Synthesized:
        if voice.audio_path is not None:
            raise EngineError("voice cloning needs the chatterbox engine; hibari has one built-in voice")
        from hibari import dsp
        rng = np.random.default_rng(seed)
        parts, input_tokens, groups, offset = [], 0, [], 0.0
        for phonemes in self._phonemize(text):
            ids = self.tts.ids(phonemes)
            input_tokens += len(ids)
            audio, frames = self._render(ids, settings.speed, rng)
            parts.append(audio)
            if settings.timestamps and frames is not None:
                # a duration frame is a whole number of hops (two in hibari 0.2): read it off the audio
                frame_seconds = audio.size / max(1, int(frames.sum())) / dsp.SR
                groups += phoneme_groups(phonemes, frames, self.tts.vocab, offset, frame_seconds)
            offset += audio.size / dsp.SR
        audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        words = None
        if settings.timestamps and self.aligned:
            words = words_for(text, groups, self._phonemize_word)
        # hibari predicts one acoustic frame per hop: those frames are its output units
        return Synthesized(audio.astype(np.float32), input_tokens, int(audio.size // dsp.HOP), words=words)

    def _render(self, ids: list[int], speed: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
        """hibari's from_ids, keeping the durations output when the session has it."""
        from hibari import dsp
        if len(ids) < 3:
            return np.zeros(0, np.float32), None
        out = self.tts.sess.run(None, {"ids": np.asarray([ids], np.int64), "speed": np.asarray([speed], np.float32)})
        audio = dsp.synth(*(o[0] for o in out[:6]), rng)
        return audio, (out[6].reshape(-1) if len(out) > 6 else None)

    def _phonemize_word(self, word: str) -> str:
        return " ".join(self.tts.phonemize(unicodedata.normalize("NFKC", word)))

    def _phonemize(self, text: str) -> list[str]:
        # NFKC first: hibari's number reader fails on forms like "¹Å" that compatibility folding turns
        # into plain digits and letters
        normalized = unicodedata.normalize("NFKC", text)
        try:
            return self.tts.phonemize(normalized)
        except Exception as exc:  # noqa: BLE001 - hibari's G2P raises assorted errors on odd text
            raise EngineError(f"hibari cannot read this text ({type(exc).__name__}: {exc}); "
                              "remove unusual symbols or spell them out") from exc
