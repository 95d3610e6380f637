"""Split text into chunks that a TTS engine synthesizes one at a time while streaming.

Every strategy guarantees that no non-whitespace character is dropped: chunks are in order,
do not overlap, only whitespace lies between them, and none is longer than ``max_chars``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import TypeAlias

STRATEGIES = ("sentence", "paragraph", "fixed", "word")

Span: TypeAlias = tuple[int, int]
Splitter: TypeAlias = Callable[[str, int, int], list[Span]]

_CLOSERS = "\"'”’»)]}"
# A sentence-ending run, with closing quotes/brackets, that whitespace or the end of text follows.
_TERMINATOR = re.compile(r"[.!?…]+[" + re.escape(_CLOSERS) + r"]*(?=\s|$)")
# CJK full-width terminators end a sentence without any whitespace after them.
CJK_TERMINATOR = re.compile(r"[。！？]+[」』”’）】]*")
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")
_CLAUSE_BREAK = re.compile(r"[,;:](?=\s)|[，、；：—]|(?<=\s)[–-](?=\s)")
WORD = re.compile(r"\S+")
_INITIALISM = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")
_LEADING_PUNCTUATION = re.compile(r"^[\W_]+")

_ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "e.g", "i.e", "approx", "cf", "al",
    "inc", "ltd", "co", "corp", "dept", "mt", "ave", "blvd",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
    "gen", "capt", "lt", "col", "sgt", "rev", "hon", "gov", "sen", "rep",
})  # fmt: skip
# Only abbreviations when a number follows ("No. 5"), so that "I said no. Then..." still splits.
_NUMBER_ABBREVIATIONS = frozenset({"no", "nos", "fig", "figs", "vol", "pp"})


@dataclass(frozen=True)
class Chunk:
    """One piece of text to synthesize and where it lies in the input."""

    text: str
    start: int
    end: int


def split_text(text: str, strategy: str = "sentence", max_chars: int = 200) -> list[Chunk]:
    """Split ``text`` into chunks of at most ``max_chars`` characters using ``strategy``."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown chunking strategy {strategy!r}; expected one of {STRATEGIES}")
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    whole = _trim(text, 0, len(text))
    if whole is None:
        return []
    preferred = _punctuation_ends(text, *whole) if strategy == "word" else frozenset()
    spans = _chunk_span(text, whole, max_chars, _LEVELS[strategy], preferred)
    return [Chunk(text[start:end], start, end) for start, end in spans]


def shorten_first_chunk(text: str, chunks: list[Chunk], max_chars: int) -> list[Chunk]:
    """Cut the first chunk again, at sentence, clause or word boundaries, down to ``max_chars``.

    A stream's first audio waits for the whole first chunk, while later chunks are synthesized
    as earlier ones play; so a short first chunk starts the audio sooner at no other cost.
    """
    if not chunks or len(chunks[0].text) <= max_chars:
        return chunks
    first = chunks[0]
    pieces = split_text(text[first.start:first.end], "sentence", max_chars)
    return [Chunk(p.text, first.start + p.start, first.start + p.end) for p in pieces] + chunks[1:]


def chunk_texts(text: str, strategy: str = "sentence", max_chars: int = 200) -> list[str]:
    """Return only the texts of :func:`split_text`."""
    return [chunk.text for chunk in split_text(text, strategy, max_chars)]


def _trim(text: str, start: int, end: int) -> Span | None:
    """Shrink a span to exclude surrounding whitespace; None if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _spans_between(text: str, start: int, end: int, cuts: list[int]) -> list[Span]:
    """Cut a span at the given offsets and return the non-empty trimmed pieces."""
    bounds = [start, *sorted({cut for cut in cuts if start < cut < end}), end]
    pieces = (_trim(text, a, b) for a, b in pairwise(bounds))
    return [piece for piece in pieces if piece is not None]


def _chunk_span(
    text: str, span: Span, max_chars: int, levels: tuple[Splitter, ...], preferred: frozenset[int]
) -> list[Span]:
    """Chunk a span with its coarsest splitter, going finer only for pieces that do not fit."""
    if span[1] - span[0] <= max_chars:
        return [span]
    if not levels:
        return _hard_cut(text, span, max_chars)
    chunks: list[Span] = []
    fitting: list[Span] = []
    for piece in levels[0](text, *span):
        if piece[1] - piece[0] <= max_chars:
            fitting.append(piece)
            continue
        # An over-long piece is chunked on its own: its fragments never merge with its neighbours.
        chunks += _pack(fitting, max_chars, preferred)
        fitting = []
        chunks += _chunk_span(text, piece, max_chars, levels[1:], preferred)
    return chunks + _pack(fitting, max_chars, preferred)


def _hard_cut(text: str, span: Span, max_chars: int) -> list[Span]:
    """Cut a span with no usable boundary into pieces of at most ``max_chars``."""
    pieces: list[Span] = []
    start, end = span
    while start < end:
        cut = min(start + max_chars, end)
        # Keep a combining accent with its base letter when the piece can afford it.
        while start + 1 < cut < end and unicodedata.combining(text[cut]):
            cut -= 1
        piece = _trim(text, start, cut)
        if piece is not None:
            pieces.append(piece)
        start = cut
    return pieces


def _paragraphs(text: str, start: int, end: int) -> list[Span]:
    """Split at blank lines."""
    cuts = [match.start() for match in _PARAGRAPH_BREAK.finditer(text, start, end)]
    return _spans_between(text, start, end, cuts)


def _sentences(text: str, start: int, end: int) -> list[Span]:
    """Split at sentence ends and blank lines."""
    return _spans_between(text, start, end, sentence_cuts(text, start, end))


def _clauses(text: str, start: int, end: int) -> list[Span]:
    """Split after commas, semicolons, colons and dashes."""
    return _spans_between(text, start, end, clause_cuts(text, start, end))


def sentence_cuts(text: str, start: int, end: int) -> list[int]:
    """Offsets where a sentence ends within a span."""
    cuts = [match.start() for match in _PARAGRAPH_BREAK.finditer(text, start, end)]
    cuts += [match.end() for match in CJK_TERMINATOR.finditer(text, start, end)]
    cuts += [
        match.end()
        for match in _TERMINATOR.finditer(text, start, end)
        if _ends_sentence(text, match, start, end)
    ]
    return cuts


def clause_cuts(text: str, start: int, end: int) -> list[int]:
    """Offsets where a clause ends within a span."""
    return [match.end() for match in _CLAUSE_BREAK.finditer(text, start, end)]


def _punctuation_ends(text: str, start: int, end: int) -> frozenset[int]:
    """Offsets, with trailing whitespace skipped back over, where a sentence or clause ends."""
    ends: set[int] = set()
    for cut in sentence_cuts(text, start, end) + clause_cuts(text, start, end):
        while cut > start and text[cut - 1].isspace():
            cut -= 1
        ends.add(cut)
    return frozenset(ends)


def _words(text: str, start: int, end: int) -> list[Span]:
    """Split at whitespace."""
    return [match.span() for match in WORD.finditer(text, start, end)]


_LEVELS: dict[str, tuple[Splitter, ...]] = {
    "paragraph": (_paragraphs, _sentences, _clauses, _words),
    "sentence": (_sentences, _clauses, _words),
    "fixed": (_words,),
    "word": (_words,),
}


def _ends_sentence(text: str, match: re.Match[str], start: int, end: int) -> bool:
    """Tell whether a terminator match really ends a sentence."""
    following = _next_visible(text, match.end(), end)
    if following is not None and following.islower():
        return False
    if match.group().rstrip(_CLOSERS) != ".":
        return True
    return not _is_abbreviation(_token_before(text, start, match.start()), following)


def _next_visible(text: str, pos: int, end: int) -> str | None:
    """Return the first non-whitespace character at or after ``pos``."""
    while pos < end and text[pos].isspace():
        pos += 1
    return text[pos] if pos < end else None


def _token_before(text: str, start: int, pos: int) -> str:
    """Return the whitespace-delimited token that ends at ``pos``."""
    begin = pos
    while begin > start and not text[begin - 1].isspace():
        begin -= 1
    return _LEADING_PUNCTUATION.sub("", text[begin:pos])


def _is_abbreviation(token: str, following: str | None) -> bool:
    """Tell whether ``token`` followed by a period is an abbreviation or an initial."""
    lowered = token.lower()
    if lowered in _ABBREVIATIONS:
        return True
    if lowered in _NUMBER_ABBREVIATIONS:
        return following is not None and following.isdigit()
    if len(token) == 1 and token.isupper():
        return True
    return _INITIALISM.fullmatch(token) is not None


def _pack(atoms: list[Span], max_chars: int, preferred: frozenset[int]) -> list[Span]:
    """Greedily merge consecutive atoms into spans of at most ``max_chars``."""
    packed: list[Span] = []
    first = 0
    while first < len(atoms):
        stop = first + 1
        while stop < len(atoms) and atoms[stop][1] - atoms[first][0] <= max_chars:
            stop += 1
        if preferred and stop < len(atoms):
            stop = _preferred_stop(atoms, first, stop, max_chars, preferred)
        packed.append((atoms[first][0], atoms[stop - 1][1]))
        first = stop
    return packed


def _preferred_stop(
    atoms: list[Span], first: int, stop: int, max_chars: int, preferred: frozenset[int]
) -> int:
    """Move a chunk end back to the last preferred offset, unless the chunk would drop below half."""
    start = atoms[first][0]
    for candidate in range(stop, first, -1):
        end = atoms[candidate - 1][1]
        if 2 * (end - start) < max_chars:
            break
        if end in preferred:
            return candidate
    return stop


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` (split as the "sentence" strategy does), whitespace-trimmed."""
    whole = _trim(text, 0, len(text))
    if whole is None:
        return []
    return [text[start:end].strip() for start, end in _sentences(text, *whole) if text[start:end].strip()]
