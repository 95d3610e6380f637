"""Pauses, a subset of SSML and expressive tags in a text to synthesize.

:func:`parse_markup` turns a text into :class:`Speech` pieces (text and a speed) and
:class:`Pause` pieces (seconds of silence); :func:`plan_chunks` turns those into the chunks a
TTS engine synthesizes one at a time, each with its speed and the silence after it. No Flask, no
I/O, no engine: unit-tested in tests/unit/test_markup.py.

Which syntax
  A text is SSML when, after leading whitespace, it starts with ``<speak`` in any case, or with
  an XML declaration (``<?xml ...?>``, which SSML generators write before ``<speak>``) or a
  ``<!DOCTYPE`` (never prose, and refused below); otherwise it is plain text, where ``<`` and
  ``&`` are ordinary characters. The text content of both understands
  pauses and bracket tags.

Pauses
  ``[pause:500ms]``, ``[pause:1.5s]``, ``[pause: 2 s]``: a number (decimals allowed) in ms or s,
  ``pause`` and the unit in any case. A malformed or negative pause is an error at its ``[``, and
  so is one over :data:`MAX_PAUSE_SECONDS`. Adjacent pauses add up (text that is only
  whitespace or dropped tags between them counts as adjacent), and their sum may not exceed
  :data:`MAX_PAUSE_SECONDS` either: the limit bounds a silence, not how it is written. A pause of
  zero is no pause: it is no chunk boundary.

Bracket tags
  A bracket whose content is 1-32 lowercase ASCII letters and single spaces (``[laugh]``,
  ``[clear throat]``) is a tag. A known tag (:data:`EXPRESSIVE_TAGS`) that the engine renders
  (``engine_tags``) stays in the text as written; any other known tag is removed, with the
  whitespace around it (see "Removing a tag"), and named in ``dropped_tags``. An unknown
  tag-like bracket is an error that lists the known tags: ``[laugth]`` is a typo the listener
  should not hear spoken. Brackets that are not tag-like are text and spoken: ``[1]``,
  ``[Note: x]``, ``[Chorus]``, ``[see p. 4]``, and lowercase asides over 32 characters.

  The consequence: a lowercase editorial bracket such as ``[sic]`` or ``[the defendant]`` is an
  unknown tag, an error the client can fix by writing ``(sic)``; a silent mispronunciation of a
  mistyped tag could not be noticed at all.

A tag with no end
  A ``[`` followed by a lowercase letter (or by ``pause`` in any case) starts a tag. If no ``]``
  closes it before the next ``[`` or the end of the text (an SSML text node), it is an error at
  its ``[``: ``[laugh Hello`` is a forgotten ``]``, and speaking the rest of the text as it stands
  would hide that. This is narrower than "no ``]`` within 40 characters", which would also
  reject a lowercase aside that does close (``[as amended by the act of 1998, section 4]``);
  such an aside closes and is spoken.

Removing a tag
  A removed tag and the whitespace around it become one space, a newline if the whitespace held
  one, or a blank line if it held two; nothing at the start or end of a piece, before closing
  punctuation (``word [sigh].`` gives ``word.``) or after an opening bracket. Tags between two
  words with no whitespace (``a[sigh]b``) leave a space, so that the words stay apart.

SSML (the subset)
  ``<speak>`` (the root; attributes ``version``, ``xml:lang``, ``xmlns``, ``xmlns:*``),
  ``<break time="500ms|1.5s"/>`` or ``<break strength="none|x-weak|weak|medium|strong|
  x-strong"/>`` (0, 0.1, 0.25, 0.5, 0.75, 1.2 s; a bare ``<break/>`` is medium; ``time`` wins
  over ``strength``), ``<p>`` and ``<s>`` (``xml:lang`` allowed and ignored) and ``<prosody
  rate="...">`` with x-slow, slow, medium, fast, x-fast, default (0.6, 0.8, 1.0, 1.25, 1.5, 1.0),
  a percentage (``80%``) or a number (``1.2``), multiplied through nested prosody; the rate
  reached must lie in [0.25, 4.0]. Element, attribute and keyword names match in any case.
  Entities ``&amp; &lt; &gt; &quot; &apos;`` and numeric character references decode; any other
  ``&`` is an error, as in XML. Comments are skipped, CDATA is text.

  A paragraph is followed by 0.75 s and a sentence by 0.3 s of silence. These structural pauses
  only separate speech: they do not stack with each other (the longer one is kept), are not
  added at the start or the end of the document, an explicit break directly after one replaces
  it (``<break strength="none"/>`` removes it) and one directly before makes the silence at least
  as long as the structural pause. Whitespace in SSML text collapses to single spaces (the
  structure is in the elements); plain text keeps its whitespace, blank lines included, for the
  ``paragraph`` chunking strategy.

  The document is read by a small tokenizer here, which knows each token's offset in the
  original text. DTDs and entity declarations (``<!DOCTYPE``, ``<!ENTITY``: "billion laughs")
  and processing instructions are refused. Unknown elements or attributes, bad values,
  unclosed or mismatched elements, text or elements outside ``<speak>`` and nesting deeper than
  :data:`MAX_NESTING` are :class:`MarkupError` at the offending element, so that the API's 400
  can point at it.

Chunk plans
  :func:`plan_chunks` splits every Speech piece with :func:`chunking.split_text`; each pause is a
  chunk boundary. A kept tag is never split across chunks: the spaces inside it are masked
  before splitting, and where a hard cut (a token longer than ``max_chars``) still falls inside
  a tag, the two chunks are joined, even past ``max_chars``.

Speed: every regular expression here is linear, and each search for a closing ``]`` goes no
further than the next ``[`` (or is reused), so a text of 100,000 ``[`` or ``<`` is read in
milliseconds.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from chatterbox_server.text.chunking import split_text

EXPRESSIVE_TAGS: dict[str, str] = {
    # sounds
    "laugh": "a laugh",
    "chuckle": "a short, quiet laugh",
    "gasp": "a sharp intake of breath, as in surprise or shock",
    "cough": "a cough",
    "sigh": "a sigh",
    "groan": "a groan of pain, effort or annoyance",
    "sniff": "a sniff",
    "shush": "a shushing sound (shh)",
    "clear throat": "a clearing of the throat",
    # delivery
    "whispering": "the words that follow are whispered",
    "angry": "an angry delivery",
    "fear": "a frightened delivery",
    "surprised": "a surprised delivery",
    "crying": "a tearful, crying delivery",
    "happy": "a happy, cheerful delivery",
    "sarcastic": "a sarcastic delivery",
    "dramatic": "a dramatic, theatrical delivery",
    "narration": "a calm narrator's delivery",
    "advertisement": "an upbeat advertisement delivery",
}
MAX_PAUSE_SECONDS = 30.0
MIN_RATE = 0.25
MAX_RATE = 4.0
MAX_NESTING = 16

_MAX_TAG_CHARS = 32
_MAX_PAUSE_CHARS = 40
_KNOWN_TAGS_HINT = "known tags: " + ", ".join(f"[{tag}]" for tag in EXPRESSIVE_TAGS)
_PAUSE_FORMAT = "write a pause as [pause:500ms] or [pause:1.5s]"

# An XML declaration or a DOCTYPE also makes a document: never prose, and a DTD must be refused.
_SSML_START = re.compile(r"\s*(<speak(?=[\s/>])|<\?xml\b|<!doctype\b)", re.IGNORECASE)
_XML_DECLARATION = re.compile(r"<\?xml\b[^<>]{0,200}\?>")
_TAG_START = re.compile(r"\[(?:[a-z]|(?i:pause))")
_TAG_NAME = re.compile(r"[a-z]+(?: [a-z]+)*")
_KEPT_TAG = re.compile(r"\[([a-z]+(?: [a-z]+)*)\]")
_PAUSE_HEAD = re.compile(r"pause[ \t]*(?::|\Z)", re.IGNORECASE)
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s)\s*", re.IGNORECASE)
_NEGATIVE_DURATION = re.compile(r"\s*-\s*(?:\d|\.\d)")

_START_TAG = re.compile(r"<([A-Za-z_][\w.:-]*)")
_END_TAG = re.compile(r"</([A-Za-z_][\w.:-]*)\s*>")
_ATTRIBUTE = re.compile(r"\s+([A-Za-z_][\w.:-]*)\s*=\s*(?:\"([^\"<]*)\"|'([^'<]*)')")
_TAG_CLOSE = re.compile(r"\s*(/?)>")
_ENTITY = re.compile(r"&(?:(amp|lt|gt|quot|apos)|#([0-9]{1,7})|#[xX]([0-9A-Fa-f]{1,6}));")
_NAMED_ENTITY = re.compile(r"&[A-Za-z_][\w.-]{0,30};")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">", "quot": '"', "apos": "'"}

_BREAK_STRENGTHS = {"none": 0.0, "x-weak": 0.1, "weak": 0.25, "medium": 0.5, "strong": 0.75, "x-strong": 1.2}
_RATES = {"x-slow": 0.6, "slow": 0.8, "medium": 1.0, "fast": 1.25, "x-fast": 1.5, "default": 1.0}
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*")
_PERCENT = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*%\s*")
_PARAGRAPH_PAUSE = 0.75
_SENTENCE_PAUSE = 0.3
_ATTRIBUTES = {
    "speak": frozenset({"version", "xml:lang", "xmlns"}),
    "p": frozenset({"xml:lang"}),
    "s": frozenset({"xml:lang"}),
    "break": frozenset({"time", "strength"}),
    "prosody": frozenset({"rate"}),
}
_ELEMENTS_HINT = "supported: <speak>, <p>, <s>, <break>, <prosody>"

_CLOSING_PUNCTUATION = frozenset(".,;:!?…)]}”’»")
_OPENING_PUNCTUATION = frozenset("([{“‘«")
# Masks the spaces inside a kept tag while splitting: any character that is neither whitespace nor
# punctuation would do, as chunk texts are cut from the unmasked text by offset.
_TAG_SPACE_MASK = "\ue000"


@dataclass(frozen=True)
class Speech:
    """Text to synthesize; ``rate`` multiplies the speaking speed."""

    text: str
    rate: float = 1.0


@dataclass(frozen=True)
class Pause:
    """Seconds of silence."""

    seconds: float


Piece: TypeAlias = "Speech | Pause"


@dataclass(frozen=True)
class Markup:
    """A parsed text: its pieces in order and the known tags removed (unique, first seen first)."""

    pieces: tuple[Piece, ...]
    dropped_tags: tuple[str, ...]


@dataclass(frozen=True)
class Plan:
    """Chunks to synthesize, each with its speed and the silence after it."""

    chunks: tuple[str, ...]
    speeds: tuple[float, ...]
    lead_pause: float
    pauses_after: tuple[float, ...]
    dropped_tags: tuple[str, ...]


class MarkupError(ValueError):
    """A text that cannot be read; ``position`` is a 0-based offset into the original text."""

    def __init__(self, message: str, position: int, hint: str = "") -> None:
        self.message = message
        self.position = position
        self.hint = hint
        super().__init__(f"{message} at character {position}" + (f"; {hint}" if hint else ""))


def has_markup(text: str) -> bool:
    """Tell, cheaply, whether :func:`parse_markup` may do more than return ``text`` as it is.

    True for SSML and for any ``[`` that starts a pause or a tag (a known, unknown or unclosed
    one): a text for which this is False parses to one Speech of the stripped text.
    """
    return _SSML_START.match(text) is not None or _TAG_START.search(hide_double_brackets(text)) is not None


# Double brackets are text, never markup: "[[sleep:1]]" and "[[fail]]" are the tone engine's test
# markers (workers/engines/tone.py), and a wiki-style "[[link]]" is no tag either. They are hidden behind
# private-use characters of the same length while the text is read (error positions stay right), then
# shown again in the Speech pieces.
_DOUBLE_BRACKETS = re.compile(r"\[\[([^\[\]\n]{1,64})\]\]")
_OPEN_MASK, _CLOSE_MASK = "\uf8f0", "\uf8f1"


def hide_double_brackets(text: str) -> str:
    return _DOUBLE_BRACKETS.sub(lambda m: f"{_OPEN_MASK * 2}{m.group(1)}{_CLOSE_MASK * 2}", text)


def show_double_brackets(text: str) -> str:
    return text.replace(_OPEN_MASK, "[").replace(_CLOSE_MASK, "]")


def parse_markup(text: str, engine_tags: frozenset[str] = frozenset()) -> Markup:
    """Read pauses, tags and (for SSML) elements; ``engine_tags`` are the tags the engine renders.

    Tags are named as in :data:`EXPRESSIVE_TAGS` (``"laugh"``, ``"clear throat"``); brackets
    around a name in ``engine_tags`` are ignored.
    """
    kept = frozenset(tag.strip("[]") for tag in engine_tags)
    text = hide_double_brackets(text)
    ssml = _SSML_START.match(text)
    builder = _Builder(collapse_whitespace=ssml is not None)
    if ssml is None:
        _read_text(text, _same_position, 1.0, builder, kept)
    else:
        _SsmlReader(text, ssml.start(1), builder, kept).read()
    markup = builder.finish()
    if _OPEN_MASK not in text:
        return markup
    pieces = tuple(Speech(show_double_brackets(piece.text), piece.rate) if isinstance(piece, Speech) else piece
                   for piece in markup.pieces)
    return Markup(pieces, markup.dropped_tags)


def plan_chunks(markup: Markup, strategy: str, max_chars: int) -> Plan:
    """Split the Speech pieces into chunks; every pause is a chunk boundary."""
    split_text("", strategy, max_chars)   # checks the arguments even when there is nothing to split
    chunks: list[str] = []
    speeds: list[float] = []
    pauses_after: list[float] = []
    lead_pause = 0.0
    for piece in markup.pieces:
        if isinstance(piece, Pause):
            if chunks:
                pauses_after[-1] += piece.seconds
            else:
                lead_pause += piece.seconds
            continue
        for chunk in _split_keeping_tags(piece.text, strategy, max_chars):
            chunks.append(chunk)
            speeds.append(piece.rate)
            pauses_after.append(0.0)
    return Plan(tuple(chunks), tuple(speeds), lead_pause, tuple(pauses_after), markup.dropped_tags)


# --- plain text and SSML text content ---------------------------------------------------------


def _same_position(index: int) -> int:
    return index


def _read_text(
    run: str, position: Callable[[int], int], rate: float, out: _Builder, kept: frozenset[str]
) -> None:
    """Feed one run of text (a plain text, or an SSML text node) to ``out``, reading its brackets.

    ``position`` maps an offset in ``run`` to one in the original text.
    """
    cursor = 0
    close = -1  # the first "]" at or after the current "[": found once, reused until passed
    for start in _TAG_START.finditer(run):
        opening = start.start()
        if opening < cursor:
            continue
        if close < opening:
            close = run.find("]", opening)
            close = len(run) if close == -1 else close
        following = run.find("[", opening + 1)
        if close == len(run) or 0 <= following < close:
            raise MarkupError(f"tag with no end: \"{_excerpt(run, opening)}\" has no closing ]", position(opening))
        content = run[opening + 1 : close]
        pause = _PAUSE_HEAD.match(content)
        if pause:
            seconds = _pause_seconds(run[opening : close + 1], content[pause.end() :], position(opening))
            out.text(run[cursor:opening], rate)
            out.pause(seconds, position(opening))
            cursor = close + 1
        elif len(content) <= _MAX_TAG_CHARS and _TAG_NAME.fullmatch(content):
            if content not in EXPRESSIVE_TAGS:
                raise MarkupError(f"unknown tag [{content}]", position(opening), _KNOWN_TAGS_HINT)
            if content not in kept:
                out.text(run[cursor:opening], rate)
                out.drop(content)
                cursor = close + 1
    out.text(run[cursor:], rate)


def _excerpt(run: str, start: int, length: int = 20) -> str:
    piece = run[start : start + length].split("\n")[0]
    return piece + ("…" if start + len(piece) < len(run) else "")


def _duration(value: str) -> float | None:
    """Seconds in "500ms", "1.5s", " 2 s "; None if the value is not a duration."""
    match = _DURATION.fullmatch(value)
    if match is None:
        return None
    number = float(match.group(1))
    return number / 1000 if match.group(2).lower() == "ms" else number


def _pause_seconds(written: str, value: str, position: int) -> float:
    if len(value) > _MAX_PAUSE_CHARS:
        raise MarkupError(f"{written[:20]}… is not a pause", position, _PAUSE_FORMAT)
    if _NEGATIVE_DURATION.match(value):
        raise MarkupError(f"{written} is negative", position, _PAUSE_FORMAT)
    seconds = _duration(value)
    if seconds is None:
        problem = "has no duration" if not value.strip() else "is not a pause"
        raise MarkupError(f"{written} {problem}", position, _PAUSE_FORMAT)
    if seconds > MAX_PAUSE_SECONDS:
        raise MarkupError(f"{written} is longer than {MAX_PAUSE_SECONDS:g} s", position)
    return seconds


# --- building the pieces ----------------------------------------------------------------------


class _Builder:
    """Collects text, removed tags and pauses into pieces, merging what belongs together."""

    def __init__(self, collapse_whitespace: bool) -> None:
        self.pieces: list[Piece] = []
        self.dropped: dict[str, None] = {}
        self._collapse_whitespace = collapse_whitespace
        self._parts: list[str] = []
        self._length = 0
        self._gaps: list[int] = []  # offsets in the joined parts where a tag or zero pause was removed
        self._rate = 1.0
        self._separation = 0.0  # a structural pause waiting for the next speech

    def text(self, text: str, rate: float) -> None:
        if not text:
            return
        if self._separation and not text.isspace():
            self._flush()
            self._separate()
        if rate != self._rate:
            self._flush()
            self._rate = rate
        self._parts.append(text)
        self._length += len(text)

    def drop(self, tag: str) -> None:
        self.dropped.setdefault(tag, None)
        self._gaps.append(self._length)

    def pause(self, seconds: float, position: int) -> None:
        """An explicit pause: it replaces a structural pause just before it and adds to pauses."""
        self._separation = 0.0
        if seconds == 0:
            self._gaps.append(self._length)
            return
        self._flush()
        last = self.pieces[-1] if self.pieces else None
        if isinstance(last, Pause):
            seconds += last.seconds
            self.pieces.pop()
        if seconds > MAX_PAUSE_SECONDS:
            raise MarkupError(
                f"pauses that follow each other add up to {seconds:g} s, over {MAX_PAUSE_SECONDS:g} s", position
            )
        self.pieces.append(Pause(round(seconds, 6)))

    def separate(self, seconds: float) -> None:
        """A structural pause (after a paragraph or sentence), made only if speech follows."""
        self._separation = max(self._separation, seconds)

    def finish(self) -> Markup:
        self._flush()
        return Markup(tuple(self.pieces), tuple(self.dropped))

    def _separate(self) -> None:
        seconds, self._separation = self._separation, 0.0
        if not self.pieces:
            return
        last = self.pieces[-1]
        if isinstance(last, Pause):
            self.pieces[-1] = Pause(max(last.seconds, seconds))
        else:
            self.pieces.append(Pause(seconds))

    def _flush(self) -> None:
        text = _close_gaps("".join(self._parts), self._gaps)
        text = " ".join(text.split()) if self._collapse_whitespace else text.strip()
        self._parts, self._length, self._gaps = [], 0, []
        if not text:
            return
        last = self.pieces[-1] if self.pieces else None
        if isinstance(last, Speech) and last.rate == self._rate:
            self.pieces[-1] = Speech(f"{last.text} {text}", self._rate)
        else:
            self.pieces.append(Speech(text, self._rate))


def _close_gaps(text: str, gaps: list[int]) -> str:
    """Replace each removed tag, with the whitespace around it, by what keeps the words apart."""
    if not gaps:
        return text
    out: list[str] = []
    done = 0
    index = 0
    while index < len(gaps):
        left = gaps[index]
        while left > done and text[left - 1].isspace():
            left -= 1
        right = gaps[index]
        while True:  # one junction takes every gap that only whitespace separates from this one
            while right < len(text) and text[right].isspace():
                right += 1
            index += 1
            if index == len(gaps) or gaps[index] > right:
                break
        out.append(text[done:left])
        out.append(_joiner(text, left, right))
        done = right
    out.append(text[done:])
    return "".join(out)


def _joiner(text: str, left: int, right: int) -> str:
    if left == 0 or right == len(text):
        return ""
    if text[right] in _CLOSING_PUNCTUATION or text[left - 1] in _OPENING_PUNCTUATION:
        return ""
    newlines = text.count("\n", left, right)
    return "\n\n" if newlines >= 2 else "\n" if newlines else " "


# --- SSML -------------------------------------------------------------------------------------


@dataclass
class _Element:
    name: str
    position: int
    rate: float


@dataclass
class _Segment:
    """Decoded text and where it came from: literal text maps one to one, an entity to its "&"."""

    start: int  # offset in the decoded run
    source: int  # offset in the original text
    text: str
    literal: bool


class _SsmlReader:
    """Reads an SSML document into a :class:`_Builder`, token by token, with their offsets."""

    def __init__(self, text: str, start: int, out: _Builder, kept: frozenset[str]) -> None:
        self.text = text
        self.start = start
        self.pos = start
        self.out = out
        self.kept = kept
        self.open: list[_Element] = []
        self.root_seen = False
        self.root_closed = False
        self.run: list[_Segment] = []
        self.run_length = 0

    def read(self) -> None:
        text = self.text
        while self.pos < len(text):
            markup = text.find("<", self.pos)
            markup = len(text) if markup == -1 else markup
            self._character_data(self.pos, markup)
            self.pos = markup
            if markup < len(text):
                self._markup(markup)
        self._flush_run()
        if self.open:
            element = self.open[-1]
            raise MarkupError(f"<{element.name}> is never closed", element.position)
        if not self.root_seen:
            raise MarkupError("no <speak> element", len(text))

    # text

    def _character_data(self, start: int, end: int) -> None:
        while start < end:
            ampersand = self.text.find("&", start, end)
            if ampersand == -1:
                self._add(start, self.text[start:end], literal=True)
                return
            self._add(start, self.text[start:ampersand], literal=True)
            decoded, start = _entity(self.text, ampersand, end)
            self._add(ampersand, decoded, literal=False)

    def _add(self, source: int, text: str, literal: bool) -> None:
        if text:
            self.run.append(_Segment(self.run_length, source, text, literal))
            self.run_length += len(text)

    def _flush_run(self) -> None:
        if not self.run:
            return
        segments, self.run, self.run_length = self.run, [], 0
        run = "".join(segment.text for segment in segments)
        starts = [segment.start for segment in segments]

        def position(index: int) -> int:
            segment = segments[bisect.bisect_right(starts, index) - 1]
            return segment.source + (index - segment.start if segment.literal else 0)

        if run.isspace():
            self.out.text(run, self.open[-1].rate if self.open else 1.0)
            return
        first_visible = len(run) - len(run.lstrip())
        if not self.open:
            raise MarkupError("text outside <speak>", position(first_visible))
        if self.open[-1].name == "break":
            raise MarkupError("<break> must be empty", position(first_visible))
        _read_text(run, position, self.open[-1].rate, self.out, self.kept)

    # markup

    def _markup(self, start: int) -> None:
        text = self.text
        if text.startswith("<!--", start):
            end = text.find("-->", start + 4)
            if end == -1:
                raise MarkupError("comment is never closed", start)
            self.pos = end + 3
        elif text.startswith("<![CDATA[", start):
            end = text.find("]]>", start + 9)
            if end == -1:
                raise MarkupError("CDATA section is never closed", start)
            self._add(start + 9, text[start + 9 : end], literal=True)
            self.pos = end + 3
        elif text.startswith("<!", start):
            raise MarkupError("DTDs and entity declarations are not allowed", start)
        elif (declaration := _XML_DECLARATION.match(text, start)) and start == self.start:
            self.pos = declaration.end()
        elif text.startswith("<?", start):
            raise MarkupError("processing instructions are not allowed", start)
        elif text.startswith("</", start):
            self._end_tag(start)
        else:
            self._start_tag(start)

    def _start_tag(self, start: int) -> None:
        head = _START_TAG.match(self.text, start)
        if head is None:
            raise MarkupError("malformed tag (write a literal < as &lt;)", start)
        name = head.group(1).lower()
        attributes: dict[str, str] = {}
        cursor = head.end()
        while (attribute := _ATTRIBUTE.match(self.text, cursor)) is not None:
            key = attribute.group(1).lower()
            if key in attributes:
                raise MarkupError(f"<{name}> has the attribute {key} twice", start)
            raw = attribute.group(2) if attribute.group(2) is not None else attribute.group(3)
            attributes[key] = _decode_attribute(raw, start)
            cursor = attribute.end()
        end = _TAG_CLOSE.match(self.text, cursor)
        if end is None:
            raise MarkupError(f"malformed <{name}> tag", start)
        self.pos = end.end()
        self._flush_run()
        self._open(name, attributes, start)
        if end.group(1):
            self._close(self.open.pop())

    def _end_tag(self, start: int) -> None:
        tag = _END_TAG.match(self.text, start)
        if tag is None:
            raise MarkupError("malformed end tag", start)
        name = tag.group(1).lower()
        self.pos = tag.end()
        self._flush_run()
        if not self.open:
            raise MarkupError(f"</{name}> outside <speak>", start)
        element = self.open[-1]
        if element.name != name:
            raise MarkupError(
                f"</{name}> does not close <{element.name}> (opened at character {element.position})", start
            )
        self._close(self.open.pop())

    def _open(self, name: str, attributes: dict[str, str], position: int) -> None:
        if not self.open and (self.root_closed or name != "speak"):
            raise MarkupError(f"<{name}> outside <speak>", position)
        if name not in _ATTRIBUTES:
            raise MarkupError(f"unknown element <{name}>", position, _ELEMENTS_HINT)
        self.root_seen = True
        if self.open and name == "speak":
            raise MarkupError("<speak> inside <speak>", position)
        if self.open and self.open[-1].name == "break":
            raise MarkupError("<break> must be empty", position)
        if len(self.open) >= MAX_NESTING:
            raise MarkupError(f"elements nested deeper than {MAX_NESTING}", position)
        _check_attributes(name, attributes, position)
        rate = self.open[-1].rate if self.open else 1.0
        if name == "prosody" and "rate" in attributes:
            rate = _nested_rate(rate, attributes["rate"], position)
        elif name == "break":
            self.out.pause(_break_seconds(attributes, position), position)
        self.open.append(_Element(name, position, rate))

    def _close(self, element: _Element) -> None:
        if element.name == "p":
            self.out.separate(_PARAGRAPH_PAUSE)
        elif element.name == "s":
            self.out.separate(_SENTENCE_PAUSE)
        elif element.name == "speak":
            self.root_closed = True


def _entity(text: str, start: int, end: int) -> tuple[str, int]:
    """The character that the reference at ``start`` stands for and the offset after it."""
    match = _ENTITY.match(text, start, end)
    if match is None:
        named = _NAMED_ENTITY.match(text, start, end)
        if named is not None:
            raise MarkupError(f"unknown entity {named.group()}", start, "known: &amp; &lt; &gt; &quot; &apos;")
        raise MarkupError("a literal & must be written &amp;", start)
    name, decimal, hexadecimal = match.groups()
    if name is not None:
        return _ENTITIES[name], match.end()
    code = int(decimal) if decimal is not None else int(hexadecimal, 16)
    if code in (0x9, 0xA, 0xD) or 0x20 <= code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF:
        return chr(code), match.end()
    raise MarkupError(f"{match.group()} is not a character XML allows", start)


def _decode_attribute(raw: str, element_position: int) -> str:
    parts: list[str] = []
    cursor = 0
    while (ampersand := raw.find("&", cursor)) != -1:
        parts.append(raw[cursor:ampersand])
        try:
            decoded, cursor = _entity(raw, ampersand, len(raw))
        except MarkupError as error:
            raise MarkupError(f"in an attribute: {error.message}", element_position, error.hint) from None
        parts.append(decoded)
    parts.append(raw[cursor:])
    return "".join(parts)


def _check_attributes(name: str, attributes: dict[str, str], position: int) -> None:
    allowed = _ATTRIBUTES[name]
    for key in attributes:
        if key not in allowed and not (name == "speak" and key.startswith("xmlns:")):
            takes = ", ".join(sorted(allowed))
            raise MarkupError(f"unknown attribute {key} on <{name}>", position, f"<{name}> takes: {takes}")


def _break_seconds(attributes: dict[str, str], position: int) -> float:
    if "time" in attributes:
        seconds = _duration(attributes["time"])
        if seconds is None:
            raise MarkupError(f'bad break time "{attributes["time"]}"', position, 'write time="500ms" or time="1.5s"')
        if seconds > MAX_PAUSE_SECONDS:
            raise MarkupError(f'break time "{attributes["time"]}" is longer than {MAX_PAUSE_SECONDS:g} s', position)
        return seconds
    strength = attributes.get("strength", "medium").strip().lower()
    if strength not in _BREAK_STRENGTHS:
        hint = "strength is one of " + ", ".join(_BREAK_STRENGTHS)
        raise MarkupError(f'bad break strength "{attributes["strength"]}"', position, hint)
    return _BREAK_STRENGTHS[strength]


def _nested_rate(outer: float, value: str, position: int) -> float:
    keyword = value.strip().lower()
    if keyword in _RATES:
        factor = _RATES[keyword]
    elif (percent := _PERCENT.fullmatch(value)) is not None:
        factor = float(percent.group(1)) / 100
    elif (number := _NUMBER.fullmatch(value)) is not None:
        factor = float(number.group(1))
    else:
        hint = "rate is " + ", ".join(_RATES) + ", a percentage (80%) or a multiplier (1.2)"
        raise MarkupError(f'bad prosody rate "{value}"', position, hint)
    rate = round(outer * factor, 6)
    if not MIN_RATE <= rate <= MAX_RATE:
        raise MarkupError(f"prosody rate {rate:g} is outside [{MIN_RATE:g}, {MAX_RATE:g}]", position)
    return rate


# --- chunk plans ------------------------------------------------------------------------------


def _split_keeping_tags(text: str, strategy: str, max_chars: int) -> list[str]:
    """split_text's chunks of ``text``, with no kept tag cut between two of them."""
    tags = [match.span() for match in _KEPT_TAG.finditer(text) if match.group(1) in EXPRESSIVE_TAGS]
    masked = _mask_tag_spaces(text, tags)
    inside = {offset for start, end in tags for offset in range(start + 1, end)}
    spans: list[tuple[int, int]] = []
    for chunk in split_text(masked, strategy, max_chars):
        if spans and spans[-1][1] in inside:
            spans[-1] = (spans[-1][0], chunk.end)
        else:
            spans.append((chunk.start, chunk.end))
    return [text[start:end] for start, end in spans]


def _mask_tag_spaces(text: str, tags: list[tuple[int, int]]) -> str:
    """``text`` with the spaces inside the given spans masked, so that no split falls there."""
    parts: list[str] = []
    done = 0
    for start, end in tags:
        parts += [text[done:start], text[start:end].replace(" ", _TAG_SPACE_MASK)]
        done = end
    parts.append(text[done:])
    return "".join(parts)
