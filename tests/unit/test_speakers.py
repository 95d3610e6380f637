"""Inline speaker markers (chatterbox_server.text.speakers).

By example: every marker style, how turns are cut and stripped, where errors point, how labels
resolve through the speakers table. Property (hypothesis, the profiles of test_properties):
turns written with any mix of markers split back into the same labels and texts.
"""
from __future__ import annotations

import dataclasses
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatterbox_server.text.markup import parse_markup
from chatterbox_server.text.speakers import SpeakerError, Turn, normalize_label, resolve_turns, split_speakers

QUIET = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=50, **QUIET)
settings.register_profile("nightly", max_examples=3000, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def split(text: str) -> list[tuple[str | None, str | None, str]]:
    turns = split_speakers(text)
    assert turns is not None
    return [(turn.label, turn.voice, turn.text) for turn in turns]


def speaker_error(text: str) -> SpeakerError:
    with pytest.raises(SpeakerError) as caught:
        split_speakers(text)
    return caught.value


# --- markers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["", "Just one voice.", "[laugh] and [pause:1s]", "as Speaker 1: said",
                                  "[S] [S1x] [SPEAKER] [voice] [voices:x] Speakers 1: no", "S1: hi"])
def test_no_markers_gives_none(text: str) -> None:
    assert split_speakers(text) is None


def test_dia_markers() -> None:
    assert split("[S1] Hello there. [S2] Hi! [S1] Bye.") == [
        ("s1", None, "Hello there."), ("s2", None, "Hi!"), ("s1", None, "Bye.")]


def test_dia_markers_in_lowercase_too() -> None:
    assert split("[s1] Hello [s2] Hi") == [("s1", None, "Hello"), ("s2", None, "Hi")]


@pytest.mark.parametrize("marker", ["[SPEAKER1]", "[speaker1]", "[Speaker1]", "[SPEAKER 1]", "[speaker_1]",
                                    "[speaker-1]"])
def test_higgs_markers(marker: str) -> None:
    assert split(f"[SPEAKER0] Zero. {marker} One.") == [("speaker0", None, "Zero."), ("speaker1", None, "One.")]


@pytest.mark.parametrize("line", ["Speaker 1: Hello", "speaker 1: Hello", "SPEAKER 1: Hello", "Speaker1: Hello",
                                  "  Speaker 1 : Hello", "\tSpeaker  1:Hello"])
def test_vibevoice_markers_at_the_start_of_a_line(line: str) -> None:
    assert split(f"Speaker 0: Hi.\n{line}\nSpeaker 2: Bye.") == [
        ("speaker0", None, "Hi."), ("speaker1", None, "Hello"), ("speaker2", None, "Bye.")]


def test_a_vibevoice_marker_inside_a_line_is_text() -> None:
    assert split("Speaker 1: I told Speaker 2: no.\nSpeaker 2: Fine.") == [
        ("speaker1", None, "I told Speaker 2: no."), ("speaker2", None, "Fine.")]


@pytest.mark.parametrize(("marker", "voice"), [
    ("[voice:af_bella]", "af_bella"), ("[voice:am-adam.v2]", "am-adam.v2"), ("[voice: af_sky ]", "af_sky"),
    ("[VOICE:Bob]", "Bob"), ("[voice :x]", "x"), ("[voice:" + "a" * 64 + "]", "a" * 64), ("[voice:7]", "7"),
])
def test_kokoro_voice_markers(marker: str, voice: str) -> None:
    assert split(f"{marker} Hello") == [(None, voice, "Hello")]


@pytest.mark.parametrize("marker", ["[voice:]", "[voice: ]", "[voice:bad name!]", "[voice:a/b]", "[voice:é]",
                                    "[voice:" + "a" * 65 + "]", "[voice:x", "[voice:x [S1] y]", "[voice:x\n]"])
def test_bad_voice_markers_are_errors_at_their_bracket(marker: str) -> None:
    text = f"Intro. {marker} Hello"
    found = speaker_error(text)
    assert found.position == len("Intro. ")
    assert f"at character {found.position}" in str(found)
    assert isinstance(found, ValueError)


def test_a_voice_marker_error_says_what_a_name_may_hold() -> None:
    found = speaker_error("[voice:bad name!] hi")
    assert found.message == "[voice:bad name!] is not a voice"
    assert "1-64 letters, digits, _ - or ." in str(found)
    assert speaker_error("[voice:x").message == "[voice: has no closing ]"


def test_markers_of_every_kind_mix() -> None:
    text = "Intro.\n[S1] One. [SPEAKER2] Two.\nSpeaker 3: Three. [voice:af_bella] Four."
    assert split(text) == [(None, None, "Intro."), ("s1", None, "One."), ("speaker2", None, "Two."),
                           ("speaker3", None, "Three."), (None, "af_bella", "Four.")]


def test_turn_texts_are_stripped_and_empty_turns_dropped() -> None:
    assert split("  \n [S1]  \n [S2]   Hi  \n\n [S1] [S2]\t") == [("s2", None, "Hi")]
    assert split("[S1]") == []


def test_text_before_the_first_marker_is_a_turn_without_label() -> None:
    assert split("Narrator here. [S1] Hi") == [(None, None, "Narrator here."), ("s1", None, "Hi")]


def test_turns_keep_inner_whitespace_and_other_brackets() -> None:
    assert split("[S1] Line one.\n\nLine two [laugh] [1].") == [("s1", None, "Line one.\n\nLine two [laugh] [1].")]


def test_positions_point_at_markers_and_texts() -> None:
    text = "  Intro.\n[S1]  Hello.\n  Speaker 2: Hi. [voice:bob] Yo [SPEAKER0] Zero"
    turns = split_speakers(text)
    assert turns is not None
    starts = ["Intro.", "[S1]", "Speaker 2", "[voice:bob]", "[SPEAKER0]"]
    assert [turn.position for turn in turns] == [text.index(start) for start in starts]
    for turn in turns:
        assert text[turn.text_position : turn.text_position + len(turn.text)] == turn.text
    assert [turn.written_label for turn in turns] == ["", "S1", "Speaker 2", "", "SPEAKER0"]


def test_turns_are_frozen() -> None:
    turn = Turn("s1", None, "hi", 0)
    assert turn.written_label == "" and turn.text_position == 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        turn.text = "x"  # type: ignore[misc]


def test_turn_texts_then_parse_as_markup_without_speaker_markers() -> None:
    turns = split_speakers("[s1] Hi [laugh] there. [s2] [sigh] Oh. [pause:1s] Fine.")
    assert turns is not None
    markups = [parse_markup(turn.text) for turn in turns]
    assert [markup.dropped_tags for markup in markups] == [("laugh",), ("sigh",)]


# --- labels -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("label", "normalized"), [
    ("Speaker 1", "speaker1"), ("S1", "s1"), ("SPEAKER_0", "speaker0"), ("speaker-2", "speaker2"),
    ("  Speaker \t 3 ", "speaker3"), ("s1", "s1"), ("Narrator", "narrator"),
])
def test_normalize_label(label: str, normalized: str) -> None:
    assert normalize_label(label) == normalized


def test_resolve_turns_through_the_table_with_normalized_keys() -> None:
    turns = split_speakers("Intro. [S1] One. [SPEAKER1] Two.\nSpeaker 1: Three. [voice:kokoro_x] Four. [s1] Five.")
    assert turns is not None
    table = {"S1": "alice", "Speaker 1": "bob"}
    assert resolve_turns(turns, table, "narrator") == [
        ("narrator", "Intro."), ("alice", "One."), ("bob", "Two."), ("bob", "Three."), ("kokoro_x", "Four."),
        ("alice", "Five.")]


def test_voice_turns_need_no_table_and_no_default() -> None:
    turns = split_speakers("[voice:a] One [voice:b] Two")
    assert turns is not None
    assert resolve_turns(turns, {}, None) == [("a", "One"), ("b", "Two")]


def test_keys_that_normalize_alike_the_last_wins() -> None:
    turns = split_speakers("[S1] Hi")
    assert turns is not None
    assert resolve_turns(turns, {"S1": "first", "s1": "second"}, None) == [("second", "Hi")]


def test_a_label_missing_from_the_table_is_an_error_at_its_marker() -> None:
    text = "[S1] Hi. [S2] Hello. [S3] Hey."
    turns = split_speakers(text)
    assert turns is not None
    with pytest.raises(SpeakerError) as caught:
        resolve_turns(turns, {"S1": "alice", "Speaker 2": "bob", "s2": "carol"}, "narrator")
    found = caught.value
    assert found.position == text.index("[S3]")
    assert found.message == 'speaker "S3" is not in the speakers table'
    assert str(found) == (f'speaker "S3" is not in the speakers table at character {text.index("[S3]")}; '
                          "the table has: S1, Speaker 2, s2")


def test_a_missing_vibevoice_label_is_named_as_written() -> None:
    turns = split_speakers("Speaker 1: Hi\nSpeaker  7: Hey")
    assert turns is not None
    with pytest.raises(SpeakerError, match='speaker "Speaker  7" is not in the speakers table at character 14'):
        resolve_turns(turns, {"Speaker 1": "a"}, None)


def test_an_empty_table_says_so() -> None:
    turns = split_speakers("[S1] Hi")
    assert turns is not None
    with pytest.raises(SpeakerError, match="the speakers table is empty"):
        resolve_turns(turns, {}, "narrator")


def test_text_before_the_first_marker_needs_a_default_voice() -> None:
    text = "   Intro. [S1] Hi"
    turns = split_speakers(text)
    assert turns is not None
    with pytest.raises(SpeakerError, match="needs a default voice") as caught:
        resolve_turns(turns, {"S1": "a"}, None)
    assert caught.value.position == text.index("Intro.")
    assert resolve_turns(turns, {"S1": "a"}, "d") == [("d", "Intro."), ("a", "Hi")]


def test_empty_text_before_the_first_marker_needs_no_default_voice() -> None:
    turns = split_speakers("  \n[S1] Hi")
    assert turns is not None
    assert resolve_turns(turns, {"S1": "a"}, None) == [("a", "Hi")]


# --- speed ------------------------------------------------------------------------------------


@pytest.mark.serial
def test_ten_thousand_turns_split_and_resolve_fast() -> None:
    lines = [f"[S{1 + n % 2}] Turn number {n} says a few words." if n % 3 else f"Speaker {n % 4}: Line {n}."
             for n in range(10_000)]
    text = "\n".join(lines)
    table = {"S1": "a", "S2": "b", **{f"Speaker {n}": "c" for n in range(4)}}
    began = time.perf_counter()
    turns = split_speakers(text)
    assert turns is not None
    resolved = resolve_turns(turns, table, None)
    assert time.perf_counter() - began < 1.0
    assert len(resolved) == 10_000


@pytest.mark.serial
@pytest.mark.parametrize("text", ["[" * 100_000, "[voice:" * 15_000, "[S1" * 30_000, " " * 100_000 + "x",
                                  "\n" * 100_000, ("\n  Speaker " * 10_000)])
def test_adversarial_texts_split_fast(text: str) -> None:
    began = time.perf_counter()
    try:
        split_speakers(text)
    except SpeakerError:
        pass
    assert time.perf_counter() - began < 1.0


# --- property ---------------------------------------------------------------------------------

WORDS = st.sampled_from(["Hello", "world.", "Yes!", "no,", "[laugh]", "[1]", "S1:", "café", "a:b", "speaker"])
TURN_TEXTS = st.lists(WORDS, min_size=1, max_size=6).map(" ".join)
MARKERS = st.one_of(
    st.integers(1, 9).map(lambda n: (f"[S{n}] ", f"s{n}", None)),
    st.integers(0, 9).map(lambda n: (f"[SPEAKER{n}] ", f"speaker{n}", None)),
    st.integers(0, 9).map(lambda n: (f"\nSpeaker {n}: ", f"speaker{n}", None)),
    st.sampled_from(["af_bella", "bob", "x.y-z"]).map(lambda name: (f"[voice:{name}] ", None, name)),
)


@given(turns=st.lists(st.tuples(MARKERS, TURN_TEXTS), min_size=1, max_size=30),
       separator=st.sampled_from([" ", "\n", "  \n\t"]))
def test_turns_written_with_any_markers_split_back(turns, separator):
    text = separator.join(marker + body for (marker, _, _), body in turns)
    expected = [(label, voice, body) for (_, label, voice), body in turns]
    assert split(text) == expected
