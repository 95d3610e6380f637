"""Tests for chatterbox_server.text.chunking."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest

from chatterbox_server.text.chunking import STRATEGIES, Chunk, chunk_texts, split_text

MAX_CHARS_VALUES = (1, 7, 50, 200, 500)


def assert_valid_chunks(text: str, chunks: list[Chunk], max_chars: int) -> None:
    """Check the coverage contract: ordered, non-overlapping, nothing but whitespace dropped."""
    position = 0
    for chunk in chunks:
        assert chunk.text, chunk
        assert position <= chunk.start < chunk.end <= len(text), chunk
        assert text[position : chunk.start].strip() == "", (text, chunk)
        assert text[chunk.start : chunk.end] == chunk.text, (text, chunk)
        assert chunk.text == chunk.text.strip(), chunk
        assert len(chunk.text) <= max_chars, (max_chars, chunk)
        position = chunk.end
    assert text[position:].strip() == "", text
    assert "".join(text.split()) == "".join("".join(chunk.text.split()) for chunk in chunks)


def assert_one_sentence(sentence: str) -> None:
    """Fail if the sentence strategy finds a sentence end inside ``sentence``.

    With max_chars == len(sentence) the neighbours cannot join it, while a false split would let
    "Go." absorb the first fragment.
    """
    text = f"Go. {sentence} Ok."
    assert chunk_texts(text, "sentence", len(sentence)) == ["Go.", sentence, "Ok."]


# --- API and validation ---------------------------------------------------------------------


def test_strategies() -> None:
    assert STRATEGIES == ("sentence", "paragraph", "fixed", "word")


def test_default_strategy_is_sentence_with_200_chars() -> None:
    text = "First sentence here. " * 30
    assert split_text(text) == split_text(text, "sentence", 200)


@pytest.mark.parametrize("strategy", ["", "sentences", "Sentence", "char", "token"])
def test_unknown_strategy_raises(strategy: str) -> None:
    with pytest.raises(ValueError, match="strategy"):
        split_text("Hello.", strategy)


@pytest.mark.parametrize("max_chars", [0, -1, -200])
def test_max_chars_below_one_raises(max_chars: int) -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_text("Hello.", "sentence", max_chars)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("text", ["", " ", "\n\n", " \t\r\n \u00a0 "])
def test_whitespace_only_gives_no_chunks(strategy: str, text: str) -> None:
    assert split_text(text, strategy, 50) == []


def test_chunk_is_frozen_and_carries_offsets() -> None:
    text = "  Hello there.  \n"
    [chunk] = split_text(text)
    assert chunk == Chunk("Hello there.", 2, 14)
    with pytest.raises(dataclasses.FrozenInstanceError):
        chunk.text = "x"  # type: ignore[misc]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_chunk_texts_matches_split_text(strategy: str) -> None:
    text = "One two three. Four, five six!\n\nSeven eight nine ten."
    assert chunk_texts(text, strategy, 12) == [c.text for c in split_text(text, strategy, 12)]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_short_text_is_a_single_chunk(strategy: str) -> None:
    text = "  Hello there. How are you?\n\nFine.  "
    assert chunk_texts(text, strategy, 200) == ["Hello there. How are you?\n\nFine."]


# --- sentence strategy ----------------------------------------------------------------------


def test_sentence_splits_at_terminators() -> None:
    text = "Hello there. How are you? I am fine! Well… maybe."
    assert chunk_texts(text, "sentence", 13) == ["Hello there.", "How are you?", "I am fine!", "Well… maybe."]


def test_sentence_packs_short_sentences_greedily() -> None:
    text = "One. Two. Three. Four. Five."
    assert chunk_texts(text, "sentence", 10) == ["One. Two.", "Three.", "Four.", "Five."]
    assert chunk_texts(text, "sentence", 16) == ["One. Two. Three.", "Four. Five."]


def test_sentence_first_chunk_may_be_the_first_sentence() -> None:
    text = "Hi. This second sentence is rather long."
    assert chunk_texts(text, "sentence", 37) == ["Hi.", "This second sentence is rather long."]


def test_sentence_ellipsis_and_repeated_marks() -> None:
    text = "Wait... What?! Really?? Yes."
    assert chunk_texts(text, "sentence", 8) == ["Wait...", "What?!", "Really??", "Yes."]


@pytest.mark.parametrize(
    "sentence",
    [
        "Mr. Smith met Mrs. Jones and Ms. Lee today.",
        "Dr. Who and Prof. Oak went to St. Louis.",
        "John Smith Sr. and John Smith Jr. were there.",
        "It was apples vs. oranges all along.",
        "We bought pens, paper, etc. Then we paid.",
        "Acme Inc. and Foo Ltd. and Bar Co. and Baz Corp. merged.",
        "From Jan. to Feb. and from Sept. to Dec. it rained.",
        "See No. 5 and Fig. 3 for the details.",
        "It weighs approx. Four kilos in total.",
        "Fruit, e.g. Apples, and grains, i.e. Wheat, are fine.",
        "She moved to the U.S. Army base in spring.",
        "J. K. Rowling wrote it long ago.",
        "It costs $9.99 or about 3.14 units each.",
        "Version v1.2.3 shipped at 7.30 this morning.",
        "Visit example.com or mail bob@example.org today.",
        "It was done. and then something else happened.",
        "He said “Stop.” and then he left the room.",
        '"Are you sure?" she asked with a frown.',
        '"Yes!" he shouted across the hall.',
        "The value (approx. 5) was too small.",
    ],
)
def test_sentence_does_not_split_inside(sentence: str) -> None:
    assert_one_sentence(sentence)


def test_number_abbreviation_needs_a_number() -> None:
    assert chunk_texts("I said no. Then I left.", "sentence", 12) == ["I said no.", "Then I left."]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('"Are you sure?" He nodded.', ['"Are you sure?"', "He nodded."]),
        ("'Go!' She ran off.", ["'Go!'", "She ran off."]),
        ("He said “Stop.” Then he left.", ["He said “Stop.”", "Then he left."]),
        ("(It was late.) We slept.", ["(It was late.)", "We slept."]),
        ("Was it 7.30? Maybe 8.", ["Was it 7.30?", "Maybe 8."]),
        ("Prices rose in 2019. The end.", ["Prices rose in 2019.", "The end."]),
    ],
)
def test_sentence_ends_after_closing_quotes_and_numbers(text: str, expected: list[str]) -> None:
    assert chunk_texts(text, "sentence", max(map(len, expected))) == expected


@pytest.mark.parametrize("newlines", ["\n\n", "\n \n", "\r\n\r\n", "\n\t\n\n"])
def test_blank_line_always_ends_a_sentence(newlines: str) -> None:
    text = f"A heading without a stop{newlines}Visit Dr.{newlines}Body text follows"
    assert chunk_texts(text, "sentence", 24) == ["A heading without a stop", "Visit Dr.", "Body text follows"]


def test_single_newline_does_not_end_a_sentence() -> None:
    text = "This line wraps\nin the middle. Next one."
    assert chunk_texts(text, "sentence", 30) == ["This line wraps\nin the middle.", "Next one."]


def test_over_long_sentence_splits_at_clauses_then_words() -> None:
    text = (
        "This is a rather long opening clause, then a second one; "
        "after that a third: and a very long final clause that keeps on going without any pause. Done."
    )
    assert chunk_texts(text, "sentence", 40) == [
        "This is a rather long opening clause,",
        "then a second one; after that a third:",
        "and a very long final clause that keeps",
        "on going without any pause.",
        "Done.",
    ]


@pytest.mark.parametrize("dash", ["—", " – ", " - "])
def test_over_long_sentence_splits_at_dashes(dash: str) -> None:
    text = f"The first half of the thought{dash}the second half of it"
    chunks = chunk_texts(text, "sentence", 32)
    assert chunks[0] == f"The first half of the thought{dash}".strip()
    assert chunks[1] == "the second half of it"


def test_commas_inside_numbers_are_not_clause_breaks() -> None:
    text = "We counted 1,000,000 stars and 2,500 planets tonight"
    assert chunk_texts(text, "sentence", 20) == ["We counted 1,000,000", "stars and 2,500", "planets tonight"]


def test_fragments_of_a_long_sentence_do_not_merge_with_neighbours() -> None:
    text = "Hi. One two three four five six seven eight. Bye."
    assert chunk_texts(text, "sentence", 20) == [
        "Hi.",
        "One two three four",
        "five six seven",
        "eight.",
        "Bye.",
    ]


# --- paragraph strategy ---------------------------------------------------------------------


@pytest.mark.parametrize("separator", ["\n\n", "\n \n", "\r\n\r\n", "\n\n\n\n"])
def test_paragraph_splits_at_blank_lines(separator: str) -> None:
    text = separator.join(["First paragraph. Two sentences.", "Second one.", "Third paragraph here."])
    assert chunk_texts(text, "paragraph", 32) == [
        "First paragraph. Two sentences.",
        "Second one.",
        "Third paragraph here.",
    ]


def test_paragraph_packs_short_paragraphs() -> None:
    text = "One.\n\nTwo.\n\nThree.\n\nFour is longer."
    assert chunk_texts(text, "paragraph", 20) == ["One.\n\nTwo.\n\nThree.", "Four is longer."]


def test_paragraph_keeps_sentences_of_a_paragraph_together() -> None:
    text = "Alpha one. Alpha two.\nAlpha three.\n\nBeta."
    assert chunk_texts(text, "paragraph", 40) == ["Alpha one. Alpha two.\nAlpha three.", "Beta."]
    assert chunk_texts(text, "sentence", 40) == ["Alpha one. Alpha two.\nAlpha three.", "Beta."]


def test_paragraph_longer_than_max_is_split_by_sentences() -> None:
    text = "Short intro.\n\nMr. Smith arrived. He sat down. Then he spoke at length.\n\nEnd."
    assert chunk_texts(text, "paragraph", 32) == [
        "Short intro.",
        "Mr. Smith arrived. He sat down.",
        "Then he spoke at length.",
        "End.",
    ]


# --- fixed and word strategies --------------------------------------------------------------


def test_fixed_cuts_at_last_whitespace() -> None:
    text = "the quick brown fox jumps over the lazy dog"
    assert chunk_texts(text, "fixed", 10) == ["the quick", "brown fox", "jumps over", "the lazy", "dog"]


def test_fixed_ignores_sentence_boundaries() -> None:
    text = "Hello there. How are you today?"
    assert chunk_texts(text, "fixed", 20) == ["Hello there. How are", "you today?"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_single_huge_word_is_hard_cut(strategy: str) -> None:
    text = "Say " + "a" * 25 + " now."
    assert chunk_texts(text, strategy, 10) == ["Say", "a" * 10, "a" * 10, "a" * 5, "now."]


def test_word_prefers_punctuation() -> None:
    text = "Hello there, my friend. How are you doing today, my dear?"
    assert chunk_texts(text, "fixed", 30) == ["Hello there, my friend. How", "are you doing today, my dear?"]
    assert chunk_texts(text, "word", 30) == [
        "Hello there, my friend.",
        "How are you doing today,",
        "my dear?",
    ]


def test_word_falls_back_to_word_boundaries_without_punctuation() -> None:
    text = "one two three four five six seven eight nine ten"
    assert chunk_texts(text, "word", 15) == chunk_texts(text, "fixed", 15)


def test_word_ignores_punctuation_that_would_leave_a_tiny_chunk() -> None:
    text = "Hi, this is a rather long run of words"
    assert chunk_texts(text, "word", 20) == ["Hi, this is a rather", "long run of words"]


def test_word_does_not_treat_abbreviations_as_breaks() -> None:
    text = "We met Dr. Jones and J. K. Rowling there"
    assert chunk_texts(text, "word", 20) == ["We met Dr. Jones and", "J. K. Rowling there"]


# --- unicode --------------------------------------------------------------------------------


def test_accented_text() -> None:
    text = "Él está aquí. ¿Cómo estás? Ça va très bien, merci beaucoup."
    assert chunk_texts(text, "sentence", 30) == [
        "Él está aquí. ¿Cómo estás?",
        "Ça va très bien,",
        "merci beaucoup.",
    ]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_cjk_without_spaces_is_chunked(strategy: str) -> None:
    text = "日本語の文章にはスペースがありません" * 6
    chunks = split_text(text, strategy, 20)
    assert len(chunks) == 6
    assert_valid_chunks(text, chunks, 20)


def test_cjk_sentence_ends_without_whitespace() -> None:
    text = "今日は晴れです。明日は雨ですか？はい、雨です！"
    assert chunk_texts(text, "sentence", 10) == ["今日は晴れです。", "明日は雨ですか？", "はい、雨です！"]


def test_hard_cut_keeps_combining_marks_with_their_letter() -> None:
    text = "e\u0301" * 6  # decomposed "é" six times, 12 code points
    assert chunk_texts(text, "fixed", 5) == ["e\u0301" * 2, "e\u0301" * 2, "e\u0301" * 2]


# --- randomized coverage invariant ----------------------------------------------------------

_VOCABULARY = [
    "the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "and", "a", "I",
    "Mr.", "Mrs.", "Dr.", "Prof.", "St.", "vs.", "etc.", "e.g.", "i.e.", "Inc.", "No.", "Fig.", "approx.",
    "U.S.", "J.", "K.", "3.14", "$9.99", "v1.2.3", "7.30", "1,000", "example.com",
    "Hello.", "Really?", "Wow!", "Wait...", "so…", '"Yes!"', "(ok.)", "“Stop.”", "it,", "then;", "note:",
    "—", "-", "–", "word—word", "café", "naïve", "Ürün", "日本語の文章", "東京。", "はい、",
    "supercalifragilisticexpialidocious", "x" * 60, "é" * 7, "e\u0301e\u0301",
]  # fmt: skip
_JOINING_PUNCTUATION = frozenset("—。！？，、；：")
_SEPARATORS = [" ", " ", " ", " ", "  ", "\n", "\n\n", "\n \n", "\r\n\r\n", "\t", ""]


def _random_text(rng: random.Random) -> str:
    words = rng.choices(_VOCABULARY, k=rng.randint(0, 80))
    text = rng.choice(["", " ", "\n"])
    for word in words:
        text += word + rng.choice(_SEPARATORS)
    return text


@pytest.mark.parametrize("seed", range(40))
def test_random_texts_keep_every_character(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(10):
        text = _random_text(rng)
        for strategy in STRATEGIES:
            for max_chars in MAX_CHARS_VALUES:
                assert_valid_chunks(text, split_text(text, strategy, max_chars), max_chars)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_random_texts_never_cut_inside_a_fitting_word(strategy: str) -> None:
    rng = random.Random(1234)
    for _ in range(100):
        text = _random_text(rng)
        cuts = {cut for chunk in split_text(text, strategy, 50) for cut in (chunk.start, chunk.end)}
        for word in re.finditer(r"\S+", text):
            # Dashes and CJK punctuation are clause boundaries even without spaces around them.
            if len(word.group()) <= 50 and not _JOINING_PUNCTUATION.intersection(word.group()):
                assert not any(word.start() < cut < word.end() for cut in cuts), (text, word)


def test_shorten_first_chunk_keeps_coverage_and_only_touches_the_first():
    from chatterbox_server.text.chunking import shorten_first_chunk
    text = ("This opening sentence is rather long, it has clauses, and it keeps going for a while. "
            "Second sentence. " + "Later text follows here. " * 6)
    chunks = split_text(text, "sentence", 100)
    assert len(chunks) >= 2 and len(chunks[0].text) > 40
    short = shorten_first_chunk(text, chunks, 40)
    first_pieces = short[: len(short) - len(chunks) + 1]
    assert len(first_pieces) >= 2 and all(len(c.text) <= 40 for c in first_pieces)
    assert short[len(first_pieces):] == chunks[1:]
    assert first_pieces[0].start == chunks[0].start and first_pieces[-1].end == chunks[0].end
    assert all(text[c.start:c.end] == c.text for c in short)
    assert shorten_first_chunk(text, chunks, 500) == chunks
    assert shorten_first_chunk("", [], 10) == []
