"""Text preparation of the Extended API (the text fields of its TTSRequest), as pure functions.

Each function mirrors what the peer does with the same field name, so a request gives the same
spoken text on both servers; the order of the steps is the peer's too (see `prepare`).

sound_words_field replacements can grow the text (`a=>b b b`, then `b=>c c c`: each level
multiplies it), so `PrepLimits` bounds the work before and while it is done: the number of rules
(each is a pass over the text), and the length of the text, counted replacement by replacement
inside each pass, so no pass can build a text longer than the limit. Over a limit: `TextTooLarge`.
"""
from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from chatterbox_server.text.chunking import sentences, split_text
from chatterbox_server.text.markup import (
    MarkupError,
    Pause,
    has_markup,
    hide_double_brackets,
    parse_markup,
    show_double_brackets,
)
from chatterbox_server.text.speakers import SpeakerError, Turn, resolve_turns, split_speakers

BATCH_MAX_CHARS = 400           # enable_batching: sentences packed up to this many characters
SHORT_SENTENCE_CHARS = 20       # smart_batch_short_sentences: shorter ones are joined to a neighbour
CHUNK_MAX_CHARS = 500           # no chunk is longer (the peer truncates; we cut at clauses or words)


@dataclass(frozen=True)
class PrepLimits:
    max_chars: int = 0          # longest text while and after it is prepared; 0: no limit
    max_rules: int = 0          # most sound_words_field entries; 0: no limit


NO_LIMITS = PrepLimits()


class TextTooLarge(ValueError):
    """Text preparation would go over a limit: `what` is "chars" or "rules"."""

    def __init__(self, what: str, limit: int, found: int) -> None:
        super().__init__(f"{what}: {found} over the limit of {limit}")
        self.what, self.limit, self.found = what, limit, found


@dataclass(frozen=True)
class TextOptions:
    to_lowercase: bool = True
    normalize_spacing: bool = True
    fix_dot_letters: bool = True
    remove_reference_numbers: bool = True
    sound_words_field: str = ""


def normalize_spacing(text: str) -> str:
    """Runs of whitespace become one space; leading and trailing whitespace goes."""
    return re.sub(r"\s{2,}", " ", text.strip())


def fix_dot_letters(text: str) -> str:
    """Initialisms with dots are spelled letter by letter: "U.S.A." -> "U S A"."""
    return re.sub(r"\b(?:[A-Za-z]\.){2,}", lambda m: " ".join(m.group(0).rstrip(".").split(".")), text)


def remove_reference_numbers(text: str) -> str:
    """Footnote marks go: "[12]" and "(12)" (the peer's API engine) and numbers glued to the end of a
    sentence, punctuation kept (its UI): "end.12 Next" -> "end. Next"."""
    text = re.sub(r"\s?[\[(]\d+[\])]", "", text)
    return re.sub(r"([.!?\"'\u201d\u2019)\]])(\d+)(?=\s|$)", r"\1", text)


def parse_sound_words(field: str) -> list[tuple[str, str]]:
    """The peer's sound_words_field: entries separated by commas or new lines; `word=>replacement`
    replaces, a bare `word` removes. Returns (pattern, replacement) pairs ("" removes)."""
    pairs = []
    for entry in (part.strip() for part in field.replace(",", "\n").split("\n")):
        if not entry:
            continue
        pattern, _, replacement = entry.partition("=>") if "=>" in entry else (entry, "", "")
        if pattern.strip():
            pairs.append((pattern.strip(), replacement.strip()))
    return pairs


def apply_sound_words(text: str, pairs: list[tuple[str, str]], limits: PrepLimits = NO_LIMITS) -> str:
    """Replace or remove each pattern, case-insensitively, then tidy the commas and spaces left over."""
    if limits.max_rules and len(pairs) > limits.max_rules:
        raise TextTooLarge("rules", limits.max_rules, len(pairs))
    for pattern, replacement in pairs:
        word = re.escape(pattern)
        if replacement:
            text = _bounded_sub(rf"(?i)({word})(['\u2019]s?)",
                                lambda m, r=replacement: r + "'s" if m.group(2) else r, text, limits.max_chars)
            text = _bounded_sub(rf"(?i)\b{word}\b", lambda _m, r=replacement: r, text, limits.max_chars)
        else:
            text = re.sub(rf"(?i)(,? ?)?\b{word}\b(,? ?)?", " ", text)
            text = re.sub(rf"(?i)(,? ?)?{word}(,? ?)?", " ", text)   # sounds like "*sigh*" have no word edges
    text = re.sub(r",\s*,+", ",", text)
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    text = re.sub(r"(^|[.!?]\s*),+", r"\1", text)
    text = re.sub(r",+\s*([.!?])", r"\1", text)
    return re.sub(r"\s{2,}", " ", text).strip()


def _bounded_sub(pattern: str, replace: Callable[[re.Match], str], text: str, max_chars: int) -> str:
    """re.sub that stops (TextTooLarge) as soon as the text it builds would pass `max_chars`."""
    if not max_chars:
        return re.sub(pattern, replace, text)
    length = len(text)

    def counted(match: re.Match) -> str:
        nonlocal length
        out = replace(match)
        grown = len(out) - (match.end() - match.start())
        length += grown
        if grown > 0 and length > max_chars:
            raise TextTooLarge("chars", max_chars, length)
        return out

    return re.sub(pattern, counted, text)


def prepare(text: str, options: TextOptions, limits: PrepLimits = NO_LIMITS) -> str:
    """The text the engine speaks, after every enabled step, in the peer's order."""
    if options.sound_words_field.strip():
        text = apply_sound_words(text, parse_sound_words(options.sound_words_field), limits)
    if options.to_lowercase:
        text = text.lower()
    if options.normalize_spacing:
        text = normalize_spacing(text)
    if options.fix_dot_letters:
        text = fix_dot_letters(text)
    if options.remove_reference_numbers:
        text = remove_reference_numbers(text)
    return text


def group_sentences(items: list[str], max_chars: int = BATCH_MAX_CHARS) -> list[str]:
    """enable_batching: consecutive sentences packed into chunks of at most `max_chars`."""
    chunks: list[str] = []
    current = ""
    for sentence in items:
        if current and len(current) + 1 + len(sentence) > max_chars:
            chunks.append(current)
            current = sentence
        else:
            current = f"{current} {sentence}" if current else sentence
    if current:
        chunks.append(current)
    return chunks


def join_short_sentences(items: list[str], min_chars: int = SHORT_SENTENCE_CHARS,
                         max_chars: int = BATCH_MAX_CHARS) -> list[str]:
    """smart_batch_short_sentences: a sentence under `min_chars` joins the next one, or else the
    previous one, as long as the result stays within `max_chars`."""
    groups: list[str] = []
    i = 0
    while i < len(items):
        current = items[i]
        if len(current) < min_chars:
            if i + 1 < len(items) and len(current) + 1 + len(items[i + 1]) <= max_chars:
                groups.append(f"{current} {items[i + 1]}")
                i += 2
                continue
            if groups and len(groups[-1]) + 1 + len(current) <= max_chars:
                groups[-1] = f"{groups[-1]} {current}"
                i += 1
                continue
        groups.append(current)
        i += 1
    return groups


def plan_chunks(text: str, options: TextOptions, enable_batching: bool, smart_batch_short_sentences: bool,
                limits: PrepLimits = NO_LIMITS) -> list[str]:
    """The chunks (one candidate set each). The text is cut into sentences before it is lowercased:
    capitals are what tell a sentence end from an abbreviation."""
    cased = prepare(text, dataclasses.replace(options, to_lowercase=False), limits)
    items = [s.lower() if options.to_lowercase else s for s in sentences(cased) if _speakable(s)]
    if enable_batching:
        grouped = group_sentences(items)
    elif smart_batch_short_sentences:
        grouped = join_short_sentences(items)
    else:
        grouped = items
    return [piece.text for chunk in grouped for piece in split_text(chunk, "sentence", CHUNK_MAX_CHARS)]


def _speakable(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


# -- scripts: inline speakers and markup -----------------------------------------------------------
@dataclass(frozen=True)
class SpokenChunk:
    """One chunk of a script: its prepared text, its voice (None: the request's), markup's rate and the
    silence before and after it (each silence between two chunks is halved between them, to the sample,
    so that the engine's own edge silence can be cut on both sides of it)."""
    text: str
    voice: str | None
    rate: float = 1.0
    before: int = 0                 # samples of silence
    after: int = 0
    turn: int = 0


@dataclass(frozen=True)
class Script:
    chunks: tuple[SpokenChunk, ...]
    voices: dict[str, str]          # each named voice -> where it is first used ("turn 2 (speaker "S2")")
    dropped_tags: tuple[str, ...]
    turns: int


class ScriptError(ValueError):
    """A script that cannot be spoken: `param` is the field to blame, `message` starts with it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param, self.message = param, message


def needs_script(text: str) -> bool:
    """Whether a text has inline speakers or markup (pauses, SSML, tags); cheap, nothing is parsed.
    A marker that cannot be read counts too: plan_script refuses it."""
    text = hide_double_brackets(text)
    try:
        return has_markup(text) or split_speakers(text) is not None
    except SpeakerError:
        return True


def plan_script(text: str, chunker: Callable[[str], list[str]], *, tags: frozenset[str],
                speakers: dict[str, str] | None, gap: float, sample_rate: int, max_turns: int) -> Script:
    """A text's turns (text/speakers.py), each turn's markup (text/markup.py) and each piece of speech
    cut into chunks by `chunker` (the request's own text preparation, plan_chunks), with the pauses,
    and `gap` seconds between turns, as exact samples at `sample_rate`. Raises ScriptError."""
    text = hide_double_brackets(text)
    try:
        turns = split_speakers(text)
    except SpeakerError as exc:
        raise ScriptError("text", f"text: {exc}") from exc
    dialogue = turns is not None
    if turns is None:
        turns = [Turn(None, None, text, 0)]
    if len(turns) > max_turns:
        raise ScriptError("text", f"text: {len(turns)} turns; at most {max_turns} in one request "
                                  "(CHATTERBOX_DIALOGUE_MAX_TURNS); use a long-text job for more")
    try:            # "" : the request's voice (reference_audio_filename), for text before the first marker
        names = [voice or None for voice, _ in resolve_turns(turns, speakers or {}, "")]
    except SpeakerError as exc:
        number = next((n for n, turn in enumerate(turns) if turn.position == exc.position), None)
        where = f"turn {number}: " if number is not None else ""
        raise ScriptError("speakers", f"speakers: {where}{exc}; give every label a voice in \"speakers\", e.g. "
                                      '{"speakers": {"S1": "alice", "S2": "bob"}}') from exc
    voices: dict[str, str] = {}
    spoken: list[dict] = []
    dropped: dict[str, None] = {}
    pending = 0.0                   # seconds of silence not yet placed
    lead = 0.0
    for number, (turn, name) in enumerate(zip(turns, names, strict=True)):
        where = describe_turn(number, turn) if dialogue else ""
        if name is not None and name not in voices:
            voices[name] = where
        if number and (spoken or pending or lead):
            pending += gap
        try:
            markup = parse_markup(turn.text, tags)
        except MarkupError as exc:
            hint = f"; {exc.hint}" if exc.hint else ""
            raise ScriptError("text", f"text: {where + ': ' if where else ''}{exc.message} at character "
                                      f"{turn.text_position + exc.position}{hint}") from exc
        dropped.update(dict.fromkeys(markup.dropped_tags))
        for piece in markup.pieces:
            if isinstance(piece, Pause):
                pending += piece.seconds
                continue
            for chunk in chunker(show_double_brackets(piece.text)):
                if spoken:
                    spoken[-1]["after"] += pending
                else:
                    lead += pending
                pending = 0.0
                spoken.append({"text": chunk, "voice": name, "rate": piece.rate, "after": 0.0, "turn": number})
    if not spoken:
        note = f" (dropped: {', '.join(f'[{tag}]' for tag in dropped)})" if dropped else ""
        raise ScriptError("text", "text: there is nothing to speak once its pauses, speaker markers and the tags "
                                  f"this engine does not understand are taken out{note}")
    spoken[-1]["after"] += pending
    chunks = []
    carried = round(lead * sample_rate)         # the first chunk's lead-in: all of it before that chunk
    for index, item in enumerate(spoken):
        silence = round(item["after"] * sample_rate)
        after = silence if index == len(spoken) - 1 else silence // 2
        chunks.append(SpokenChunk(item["text"], item["voice"], item["rate"], carried, after, item["turn"]))
        carried = silence - after
    return Script(tuple(chunks), voices, tuple(dropped), len(turns))


def describe_turn(number: int, turn: Turn) -> str:
    """How an error names a turn: its number (from 0), its speaker and where its marker is."""
    if turn.voice is not None:
        who = f"[voice:{turn.voice}]"
    elif turn.label is not None:
        who = f'speaker "{turn.written_label or turn.label}"'
    else:
        who = "the text before the first speaker marker"
    return f"turn {number} ({who}, at character {turn.position})"
