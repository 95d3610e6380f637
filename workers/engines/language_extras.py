"""Optional packages that upstream's multilingual tokenizer uses for some languages. Without one,
upstream logs a warning and speaks the text unprocessed; we say so per request instead (a header,
the JSON answer and /health). No torch here: the front reads the result from EngineInfo."""
from __future__ import annotations

import importlib.util
from collections.abc import Callable

# language -> (module upstream imports, what it does, the PyPI package that provides it)
EXTRAS = {
    "zh": ("spacy_pkuseg", "Chinese word segmentation", "spacy-pkuseg"),
    "ja": ("pykakasi", "Japanese kanji-to-kana conversion", "pykakasi"),
    "he": ("dicta_onnx", "Hebrew diacritics", "dicta-onnx"),
    "ru": ("russian_text_stresser", "Russian stress marks", "russian-text-stresser"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_extras(languages: tuple[str, ...], installed: Callable[[str], bool] = _installed) -> dict[str, str]:
    """language -> what its requests go without, for each served language whose extra is missing."""
    return {language: f"{what} is off ({package} is not installed): the text is spoken unprocessed"
            for language, (module, what, package) in EXTRAS.items()
            if language in languages and not installed(module)}
