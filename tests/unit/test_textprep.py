"""Text preparation of /api/v1/tts (chatterbox_server/text/prep.py)."""
from __future__ import annotations

import pytest

from chatterbox_server.text.prep import (
    TextOptions,
    apply_sound_words,
    fix_dot_letters,
    group_sentences,
    join_short_sentences,
    normalize_spacing,
    parse_sound_words,
    plan_chunks,
    prepare,
    remove_reference_numbers,
)

OFF = TextOptions(to_lowercase=False, normalize_spacing=False, fix_dot_letters=False, remove_reference_numbers=False)


def test_normalize_spacing():
    assert normalize_spacing("  Hello \n\t world   again ") == "Hello world again"


@pytest.mark.parametrize("text, expected", [("The U.S.A. is big", "The U S A is big"),
                                            ("ask J.R.R. Tolkien", "ask J R R Tolkien"),
                                            ("A. Smith", "A. Smith"), ("e.g. this", "e g this")])
def test_fix_dot_letters(text, expected):
    assert fix_dot_letters(text) == expected


@pytest.mark.parametrize("text, expected", [("It ended.12 Then", "It ended. Then"), ('he said."3', 'he said."'),
                                            ("in 2024. Then", "in 2024. Then"), ("page 12 of", "page 12 of"),
                                            ("a claim [12] here (3).", "a claim here."), ("see [a]", "see [a]")])
def test_remove_reference_numbers(text, expected):
    assert remove_reference_numbers(text) == expected


def test_sound_words_syntax():
    assert parse_sound_words("um, uh\nBaggins=>Bagginses ,  ") == [("um", ""), ("uh", ""), ("Baggins", "Bagginses")]
    assert parse_sound_words("") == []


@pytest.mark.parametrize("text, field, expected", [
    ("Um, I think, uh, we should go.", "um, uh", "I think we should go."),
    ("Frodo Baggins' ring and Baggins.", "Baggins=>Underhill", "Frodo Underhill's ring and Underhill."),
    ("*sigh* Fine.", "*sigh*", "Fine."),
    ("BAGGINS left", "baggins=>Underhill", "Underhill left"),
])
def test_apply_sound_words(text, field, expected):
    assert apply_sound_words(text, parse_sound_words(field)) == expected


def test_prepare_applies_each_enabled_step():
    text = "Hello   U.S.A. world.12  Um, bye."
    assert prepare(text, OFF) == text
    assert prepare(text, TextOptions()) == "hello u s a world. um, bye."
    assert prepare(text, TextOptions(sound_words_field="um")) == "hello u s a world. bye."
    assert prepare(text, TextOptions(to_lowercase=False)) == "Hello U S A world. Um, bye."


def test_group_sentences_packs_up_to_the_limit():
    assert group_sentences(["a" * 10, "b" * 10, "c" * 10], max_chars=21) == ["a" * 10 + " " + "b" * 10, "c" * 10]


def test_join_short_sentences():
    assert join_short_sentences(["Hi.", "This one is long enough.", "Ok."]) == ["Hi. This one is long enough. Ok."]
    assert join_short_sentences(["This one is long enough.", "Ok."]) == ["This one is long enough. Ok."]
    assert join_short_sentences(["Hi.", "This one is long enough."]) == ["Hi. This one is long enough."]


def test_plan_chunks_follows_the_batching_fields():
    text = "Hello there. This is a longer sentence for you. Bye."
    assert plan_chunks(text, OFF, False, False) == ["Hello there.", "This is a longer sentence for you.", "Bye."]
    assert plan_chunks(text, OFF, False, True) == [text]      # both short ones join their neighbour
    assert plan_chunks(text, OFF, True, False) == [text]


def test_sentences_split_before_lowercasing():
    assert plan_chunks("Hello there. General Kenobi is here now.", TextOptions(), False, False) == [
        "hello there.", "general kenobi is here now."]


def test_no_chunk_is_longer_than_500_characters():
    text = ("word " * 300).strip() + "."
    chunks = plan_chunks(text, OFF, True, False)
    assert max(len(c) for c in chunks) <= 500 and " ".join(chunks) == text


def test_text_that_prepares_to_nothing_has_no_chunks():
    assert plan_chunks("Um. Uh.", TextOptions(sound_words_field="um, uh"), False, True) == []
