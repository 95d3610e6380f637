"""Inline speaker markers: one text, several voices.

:func:`split_speakers` cuts a text into :class:`Turn` s at its speaker markers;
:func:`resolve_turns` gives each turn its voice from the request's speakers table. No Flask, no
I/O: unit-tested in tests/unit/test_speakers.py.

Markers, any mix of them in one text, every one matched in any case:

- ``[S1]``, ``[S2]`` ... (Dia): label ``s1``, ``s2``;
- ``[SPEAKER0]``, ``[SPEAKER1]`` ... (Higgs; also ``[SPEAKER 1]``, ``[speaker_1]``): ``speaker0``;
- ``Speaker 1:`` at the start of a line (VibeVoice; spaces optional, before the number, the colon
  and the line too): ``speaker1``. Elsewhere in a line it is text: "as Speaker 1: said" is spoken;
- ``[voice:NAME]`` (Kokoro): the voice NAME itself (letters, digits, ``_ - .``, 1-64 characters,
  spaces around it ignored); ``[voice:]``, ``[voice:bad name!]`` or one with no ``]`` is a
  :class:`SpeakerError` at its ``[``.

A marker starts a turn that runs to the next marker; markers are removed, turn texts stripped,
empty turns dropped. Text before the first marker is a turn with no label (the default voice).
Labels are normalized (:func:`normalize_label`), so ``[SPEAKER1]`` and ``Speaker 1:`` are the
same speaker and a table key "Speaker 1", "speaker_1" or "SPEAKER1" names it; ``[S1]`` (``s1``)
is another label. Table keys that normalize alike: the last one wins.

These markers are consumed here, before :mod:`chatterbox_server.text.markup` reads the turns:
to it ``[S1]`` and ``[voice:x]`` are ordinary text (not tag-like: a digit, a colon), which would be
spoken. SSML documents are not for this module: a marker inside one would cut the document in
two; callers split plain text only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_MARKER = re.compile(
    r"\[(?P<dia>s[0-9]{1,4})\]"
    r"|\[(?P<higgs>speaker[ _-]?[0-9]{1,4})\]"
    r"|^[ \t]*(?P<vibe>speaker[ \t]*[0-9]{1,4})[ \t]*:"
    r"|\[voice[ \t]*:(?P<voice>[^\[\]\n]{0,100})(?P<voice_end>\])?",
    re.IGNORECASE | re.MULTILINE,
)
_VOICE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_LABEL_SEPARATORS = re.compile(r"[\s_-]+")


@dataclass(frozen=True)
class Turn:
    """One speaker's text.

    ``label`` is the normalized speaker label (None for ``[voice:NAME]`` turns and for text
    before any marker), ``voice`` the NAME of a ``[voice:NAME]`` turn (else None: the table
    resolves the label). ``position`` is the offset of the marker in the original text (of the
    text itself for text before any marker), ``written_label`` the label as written there, and
    ``text_position`` the offset of ``text`` in the original, to map offsets inside a turn back.
    """

    label: str | None
    voice: str | None
    text: str
    position: int
    written_label: str = ""
    text_position: int = 0


class SpeakerError(ValueError):
    """A marker or label that cannot be used; ``position`` is a 0-based offset into the text."""

    def __init__(self, message: str, position: int, hint: str = "") -> None:
        self.message = message
        self.position = position
        self.hint = hint
        super().__init__(f"{message} at character {position}" + (f"; {hint}" if hint else ""))


def normalize_label(label: str) -> str:
    """Lowercase, with spaces, underscores and hyphens removed: "Speaker 1" -> "speaker1"."""
    return _LABEL_SEPARATORS.sub("", label.lower())


def split_speakers(text: str) -> list[Turn] | None:
    """The turns of ``text`` in order; None when it has no speaker marker at all."""
    markers = list(_MARKER.finditer(text))
    if not markers:
        return None
    turns: list[Turn] = []
    leading = _turn(text, 0, markers[0].start(), None, None, None, "")
    if leading is not None:
        turns.append(leading)
    for index, marker in enumerate(markers):
        end = markers[index + 1].start() if index + 1 < len(markers) else len(text)
        label, voice, written = _identify(marker)
        position = marker.start("vibe") if marker.group("vibe") is not None else marker.start()
        turn = _turn(text, marker.end(), end, label, voice, position, written)
        if turn is not None:
            turns.append(turn)
    return turns


def resolve_turns(
    turns: list[Turn], speakers: Mapping[str, str], default_voice: str | None
) -> list[tuple[str, str]]:
    """``(voice, text)`` for every turn, labels looked up in ``speakers`` (keys normalized)."""
    table = {normalize_label(label): voice for label, voice in speakers.items()}
    resolved: list[tuple[str, str]] = []
    for turn in turns:
        if turn.voice is not None:
            resolved.append((turn.voice, turn.text))
        elif turn.label is None:
            if default_voice is None:
                raise SpeakerError("text before the first speaker marker needs a default voice", turn.position)
            resolved.append((default_voice, turn.text))
        elif turn.label in table:
            resolved.append((table[turn.label], turn.text))
        else:
            hint = f"the table has: {', '.join(speakers)}" if speakers else "the speakers table is empty"
            raise SpeakerError(
                f'speaker "{turn.written_label or turn.label}" is not in the speakers table', turn.position, hint
            )
    return resolved


def _identify(marker: re.Match[str]) -> tuple[str | None, str | None, str]:
    """The label, the voice and the label as written of one marker."""
    if marker.group("voice") is None:
        written = marker.group("dia") or marker.group("higgs") or marker.group("vibe")
        return normalize_label(written), None, written
    if marker.group("voice_end") is None:
        raise SpeakerError("[voice: has no closing ]", marker.start())
    name = marker.group("voice").strip()
    if _VOICE_NAME.fullmatch(name) is None:
        raise SpeakerError(
            f"[voice:{marker.group('voice')}] is not a voice", marker.start(),
            "a voice name has 1-64 letters, digits, _ - or .",
        )
    return None, name, ""


def _turn(
    text: str, start: int, end: int, label: str | None, voice: str | None, position: int | None, written: str
) -> Turn | None:
    """The turn of ``text[start:end]``, stripped; None if nothing is left."""
    body = text[start:end]
    stripped = body.strip()
    if not stripped:
        return None
    text_position = start + len(body) - len(body.lstrip())
    return Turn(label, voice, stripped, text_position if position is None else position, written, text_position)
