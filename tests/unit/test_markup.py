"""Pauses, the SSML subset and expressive tags (chatterbox_server.text.markup).

By example: every rule of the module docstring, with errors pointing at the offending character.
Properties (hypothesis, the profiles of test_properties): plain text without brackets or "<"
parses to itself and plans as split_text chunks it; for texts made of words, known tags and
pauses, a plan keeps every second of pause written and every kept tag whole in one chunk.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chatterbox_server.text.chunking import STRATEGIES, chunk_texts
from chatterbox_server.text.markup import (
    EXPRESSIVE_TAGS,
    MAX_NESTING,
    MAX_PAUSE_SECONDS,
    Markup,
    MarkupError,
    Pause,
    Plan,
    Speech,
    has_markup,
    parse_markup,
    plan_chunks,
)

QUIET = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=50, **QUIET)
settings.register_profile("nightly", max_examples=3000, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ALL_TAGS = frozenset(EXPRESSIVE_TAGS)


def pieces(text: str, engine_tags: frozenset[str] = frozenset()) -> tuple[Speech | Pause, ...]:
    return parse_markup(text, engine_tags).pieces


def error(text: str, engine_tags: frozenset[str] = frozenset()) -> MarkupError:
    with pytest.raises(MarkupError) as caught:
        parse_markup(text, engine_tags)
    return caught.value


def assert_error_at(text: str, expected: str, message: str = "") -> MarkupError:
    """The error points at the character where ``expected`` starts (its first occurrence)."""
    found = error(text)
    assert found.position == text.index(expected), (found, text[found.position :])
    assert f"at character {found.position}" in str(found)
    assert message in str(found), found
    return found


# --- the API ----------------------------------------------------------------------------------


def test_the_19_turbo_tags_each_with_a_one_line_description() -> None:
    sounds = ["laugh", "chuckle", "gasp", "cough", "sigh", "groan", "sniff", "shush", "clear throat"]
    delivery = ["whispering", "angry", "fear", "surprised", "crying", "happy", "sarcastic", "dramatic",
                "narration", "advertisement"]
    assert list(EXPRESSIVE_TAGS) == sounds + delivery
    for description in EXPRESSIVE_TAGS.values():
        assert description.strip() and "\n" not in description


def test_limits() -> None:
    assert MAX_PAUSE_SECONDS == 30.0
    assert MAX_NESTING == 16


def test_pieces_are_frozen_and_speech_defaults_to_rate_one() -> None:
    assert Speech("hi") == Speech("hi", 1.0)
    for value in (Speech("hi"), Pause(1.0), Markup((), ()), Plan((), (), 0.0, (), ())):
        with pytest.raises(dataclasses.FrozenInstanceError):
            value.text = "x"  # type: ignore[union-attr]


def test_a_markup_error_is_a_value_error_with_message_and_position() -> None:
    found = error("Hello [pause:abc]")
    assert isinstance(found, ValueError)
    assert found.position == 6
    assert found.message == "[pause:abc] is not a pause"
    assert str(found).startswith("[pause:abc] is not a pause at character 6")


@pytest.mark.parametrize("text", [
    "[pause:1s]", "a [laugh] b", "[laugth]", "[sic]", "[Pause:2s]", "[laugh no end", "<speak>hi</speak>",
    "  <SPEAK>hi</SPEAK>", '<?xml version="1.0"?><speak/>', "<!DOCTYPE speak><speak/>",
])
def test_has_markup(text: str) -> None:
    assert has_markup(text)


@pytest.mark.parametrize("text", [
    "", "Hello there.", "Footnote [1] and [Note: x] and [Chorus].", "a < b & c > d", "<speaker> says",
    "[ laugh ]", "[Laugh]", "x <p>not ssml</p>",
])
def test_has_markup_is_false_for_plain_text(text: str) -> None:
    assert not has_markup(text)
    assert pieces(text) == ((Speech(text.strip()),) if text.strip() else ())


# --- plain text -------------------------------------------------------------------------------


def test_plain_text_is_one_speech_stripped_with_its_whitespace_inside_kept() -> None:
    assert pieces("  First line.\n\nSecond   paragraph.\n") == (Speech("First line.\n\nSecond   paragraph."),)


def test_whitespace_only_text_has_no_pieces() -> None:
    assert parse_markup(" \n\t ") == Markup((), ())


@pytest.mark.parametrize("text", [
    "See [1] and [23].", "[Note: this is spoken]", "[Chorus] la la", "[ laugh ]", "[Laugh]", "[laugh!]",
    "[clear  throat]", "[x1]", "[see p. 4]", "[as amended by the act of 1998, section four]",
    "[" + "a" * 33 + "]", "a[", "[]", "[[", "x ] y", "[ laugh", "[1 [2]", "Tom & Jerry <3", "[voice:af]",
])
def test_brackets_that_are_not_tags_are_spoken(text: str) -> None:
    assert pieces(text) == (Speech(text),)


# --- pauses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("written", "seconds"), [
    ("[pause:500ms]", 0.5), ("[pause:1.5s]", 1.5), ("[pause: 2 s]", 2.0), ("[pause:2s]", 2.0),
    ("[pause:.25s]", 0.25), ("[pause:1.s]", 1.0), ("[pause:250MS]", 0.25), ("[PAUSE:1S]", 1.0),
    ("[Pause : 3s ]", 3.0), ("[pause:30s]", 30.0), ("[pause:30000ms]", 30.0), ("[pause:0.001s]", 0.001),
])
def test_pause_forms(written: str, seconds: float) -> None:
    assert pieces(f"Before {written} after") == (Speech("Before"), Pause(seconds), Speech("after"))


def test_pauses_at_the_edges_stay() -> None:
    assert pieces("[pause:1s] Hello [pause:2s]") == (Pause(1.0), Speech("Hello"), Pause(2.0))


def test_adjacent_pauses_add_up() -> None:
    assert pieces("a [pause:1s] [pause:500ms]\n[pause:0.25s] b") == (Speech("a"), Pause(1.75), Speech("b"))
    assert pieces("[pause:1s][pause:2s]") == (Pause(3.0),)


def test_pauses_with_only_dropped_tags_between_add_up() -> None:
    markup = parse_markup("a [pause:1s] [laugh] [pause:1s] b")
    assert markup == Markup((Speech("a"), Pause(2.0), Speech("b")), ("laugh",))


def test_pause_sums_are_rounded_not_float_noise() -> None:
    assert pieces("[pause:0.1s][pause:0.2s]") == (Pause(0.3),)


def test_a_zero_pause_is_no_pause_and_no_boundary() -> None:
    assert pieces("Hello [pause:0s] world") == (Speech("Hello world"),)
    assert pieces("Hello [pause:0ms][pause:1s] world") == (Speech("Hello"), Pause(1.0), Speech("world"))


@pytest.mark.parametrize(("text", "message"), [
    ("Wait [pause:31s] now", "longer than 30 s"),
    ("Wait [pause:30001ms] now", "longer than 30 s"),
    ("Wait [pause:abc] now", "is not a pause"),
    ("Wait [pause:] now", "has no duration"),
    ("Wait [pause] now", "has no duration"),
    ("Wait [pause:-1s] now", "is negative"),
    ("Wait [pause: -0.5 s] now", "is negative"),
    ("Wait [pause:1m] now", "is not a pause"),
    ("Wait [pause:1 sec] now", "is not a pause"),
    ("Wait [pause:1.5] now", "is not a pause"),
    ("Wait [pause:1,5s] now", "is not a pause"),
    ("Wait [pause:1e3ms] now", "is not a pause"),
    ("Wait [pause:" + "9" * 60 + "s] now", "is not a pause"),
    ("Wait [pause:" + "9" * 400 + "] now", "is not a pause"),
])
def test_bad_pauses_are_errors_at_their_bracket(text: str, message: str) -> None:
    found = assert_error_at(text, "[pause", message)
    assert "[pause:500ms]" in str(found) or "longer than" in message


def test_adjacent_pauses_over_the_maximum_are_an_error_at_the_one_that_crosses_it() -> None:
    text = "a [pause:20s] [pause:9s] [pause:2s] b"
    found = assert_error_at(text, "[pause:2s]", "add up to 31 s")
    assert "over 30 s" in found.message


def test_pauses_apart_may_each_reach_the_maximum() -> None:
    assert pieces("a [pause:30s] b [pause:30s] c")[1::2] == (Pause(30.0), Pause(30.0))


# --- tags -------------------------------------------------------------------------------------


def test_tags_the_engine_renders_stay_verbatim() -> None:
    text = "Oh [laugh] that is [clear throat] funny [sigh]."
    assert parse_markup(text, ALL_TAGS) == Markup((Speech(text),), ())


def test_engine_tags_may_be_given_with_brackets() -> None:
    assert pieces("a [laugh] b", frozenset({"[laugh]"})) == (Speech("a [laugh] b"),)


@pytest.mark.parametrize(("text", "spoken"), [
    ("Hello [laugh] world", "Hello world"),
    ("Hello  [laugh]  world", "Hello world"),
    ("Hello [laugh]world", "Hello world"),
    ("Hello[laugh] world", "Hello world"),
    ("Hello[laugh]world", "Hello world"),
    ("Hello [laugh] [sigh] [gasp] world", "Hello world"),
    ("Hello [laugh][sigh] world", "Hello world"),
    ("[laugh] Hello world [sigh]", "Hello world"),
    ("Hello [sigh].", "Hello."),
    ("Hello [sigh], world", "Hello, world"),
    ("Well [sigh]!", "Well!"),
    ("(whispered [whispering] words)", "(whispered words)"),
    ("([whispering] words)", "(words)"),
    ("Hello\n\n[laugh] world", "Hello\n\nworld"),
    ("Hello [laugh]\n\nworld", "Hello\n\nworld"),
    ("Hello\n[laugh] world", "Hello\nworld"),
    ("One\ttwo [clear throat]\tthree", "One\ttwo three"),
])
def test_dropped_tags_and_their_whitespace_become_one_separator(text: str, spoken: str) -> None:
    markup = parse_markup(text)
    assert markup.pieces == (Speech(spoken),)
    assert "  " not in markup.pieces[0].text  # type: ignore[union-attr]


def test_dropped_tags_are_unique_in_order_of_first_appearance() -> None:
    markup = parse_markup("[sigh] a [laugh] b [sigh] c [clear throat] d [laugh]", frozenset({"gasp"}))
    assert markup.dropped_tags == ("sigh", "laugh", "clear throat")
    assert markup.pieces == (Speech("a b c d"),)


def test_some_tags_kept_others_dropped() -> None:
    markup = parse_markup("[laugh] a [sigh] b [laugh]", frozenset({"laugh"}))
    assert markup == Markup((Speech("[laugh] a b [laugh]"),), ("sigh",))


def test_text_of_only_dropped_tags_has_no_pieces() -> None:
    assert parse_markup(" [laugh] [sigh] ") == Markup((), ("laugh", "sigh"))


@pytest.mark.parametrize("tag", list(EXPRESSIVE_TAGS))
def test_every_known_tag_is_kept_or_dropped(tag: str) -> None:
    assert pieces(f"a [{tag}] b", frozenset({tag})) == (Speech(f"a [{tag}] b"),)
    assert parse_markup(f"a [{tag}] b") == Markup((Speech("a b"),), (tag,))


def test_an_unknown_tag_is_an_error_that_names_it_and_lists_the_known_tags() -> None:
    text = "Funny stuff [laugth] here"
    found = assert_error_at(text, "[laugth]")
    assert found.position == 12
    assert str(found).startswith("unknown tag [laugth] at character 12; known tags: [laugh], [chuckle], ")
    for tag in EXPRESSIVE_TAGS:
        assert f"[{tag}]" in str(found)


@pytest.mark.parametrize("tag", ["[giggle]", "[sic]", "[laugh loudly]", "[a]", "[pauses]", "[pause for effect]",
                                 "[" + " ".join(["ab"] * 10) + "z]"])
def test_tag_like_brackets_that_are_not_known_are_errors(tag: str) -> None:
    assert_error_at(f"Hi {tag} there", tag, f"unknown tag {tag}")


def test_a_tag_like_bracket_over_32_characters_is_text() -> None:
    thirty_two = "[" + "a" * 32 + "]"
    assert_error_at(f"x {thirty_two}", thirty_two, "unknown tag")
    assert pieces("x [" + "a" * 33 + "]") == (Speech("x [" + "a" * 33 + "]"),)


@pytest.mark.parametrize(("text", "start"), [
    ("Hello [laugh there", "[laugh"),
    ("Hello [laugh", "[laugh"),
    ("Hello [laugh there [sigh] again]", "[laugh"),
    ("Hello [pause:1s there", "[pause"),
    ("Hello [pause", "[pause"),
    ("Hello [Pause:1s", "[Pause"),
    ("Hello [a", "[a"),
    ("Fine [laugh] then [clear throat", "[clear"),
    ("[note: see below", "[note"),
])
def test_a_tag_with_no_end_is_an_error_at_its_bracket(text: str, start: str) -> None:
    assert_error_at(text, start, "tag with no end")


def test_a_lowercase_aside_that_does_close_is_spoken_however_long() -> None:
    text = "The rule [as amended by the act of 1998, section 4, and later] applies."
    assert pieces(text) == (Speech(text),)


def test_tags_and_pauses_together() -> None:
    markup = parse_markup("[narration] Once upon a time. [pause:1s] [gasp] A dragon! [laugh]", frozenset({"laugh"}))
    assert markup == Markup(
        (Speech("Once upon a time."), Pause(1.0), Speech("A dragon! [laugh]")), ("narration", "gasp"))


# --- SSML -------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "<speak>Hi</speak>", "  \n<speak>Hi</speak>", "<SPEAK>Hi</SPEAK>", "<Speak >Hi</Speak>",
    '<speak version="1.0" xmlns="http://www.w3.org/2001/10/synthesis" xml:lang="en-US">Hi</speak>',
    '<speak xmlns:mstts="https://www.w3.org/2001/mstts">Hi</speak>',
    '<?xml version="1.0" encoding="UTF-8"?>\n<speak>Hi</speak>', "<speak>Hi</speak>\n  ",
    "<speak>Hi</speak><!-- end -->", "<speak>H<!-- a comment -->i</speak>", "<speak><![CDATA[Hi]]></speak>",
])
def test_ssml_documents(text: str) -> None:
    assert pieces(text) == (Speech("Hi"),)


def test_empty_ssml_documents() -> None:
    assert pieces("<speak/>") == ()
    assert pieces("<speak>  </speak>") == ()


@pytest.mark.parametrize("text", ["<speaker>Hi</speaker>", "x <speak>Hi</speak>", "<speakHi"])
def test_only_a_text_that_starts_with_the_speak_element_is_ssml(text: str) -> None:
    assert pieces(text) == (Speech(text),)


def test_ssml_whitespace_collapses() -> None:
    text = "<speak>\n  <p>\n    One   two\n    three.\n  </p>\n</speak>"
    assert pieces(text) == (Speech("One two three."),)


@pytest.mark.parametrize(("element", "seconds"), [
    ('<break time="500ms"/>', 0.5), ('<break time="1.5s"/>', 1.5), ("<break time='2s'/>", 2.0),
    ('<break time=" 250 ms "/>', 0.25), ('<BREAK TIME="1S"/>', 1.0), ('<break time="30s"/>', 30.0),
    ('<break strength="x-weak"/>', 0.1), ('<break strength="weak"/>', 0.25), ('<break strength="medium"/>', 0.5),
    ('<break strength="strong"/>', 0.75), ('<break strength="x-strong"/>', 1.2), ('<break strength="STRONG"/>', 0.75),
    ("<break/>", 0.5), ("<break />", 0.5), ("<break></break>", 0.5), ('<break time="1s" strength="weak"/>', 1.0),
])
def test_breaks(element: str, seconds: float) -> None:
    assert pieces(f"<speak>One {element} two</speak>") == (Speech("One"), Pause(seconds), Speech("two"))


def test_a_none_break_is_no_pause() -> None:
    assert pieces('<speak>One <break strength="none"/> two</speak>') == (Speech("One two"),)


def test_breaks_and_bracket_pauses_add_up() -> None:
    text = '<speak>a <break time="1s"/>[pause:500ms]<break/> b</speak>'
    assert pieces(text) == (Speech("a"), Pause(2.0), Speech("b"))


def test_paragraphs_and_sentences_are_separated_by_pauses() -> None:
    text = "<speak><p><s>One.</s><s>Two.</s></p><p>Three.</p>Four.</speak>"
    assert pieces(text) == (Speech("One."), Pause(0.3), Speech("Two."), Pause(0.75), Speech("Three."), Pause(0.75),
                            Speech("Four."))


def test_structural_pauses_are_not_added_at_the_start_or_end() -> None:
    assert pieces("<speak><p></p><p>One.</p><p>Two.</p></speak>") == (Speech("One."), Pause(0.75), Speech("Two."))


def test_a_break_after_a_paragraph_replaces_its_pause() -> None:
    assert pieces('<speak><p>One.</p><break time="2s"/><p>Two.</p></speak>') == (
        Speech("One."), Pause(2.0), Speech("Two."))
    assert pieces('<speak><p>One.</p> <break time="100ms"/> <p>Two.</p></speak>') == (
        Speech("One."), Pause(0.1), Speech("Two."))
    assert pieces('<speak><p>One.</p><break strength="none"/><p>Two.</p></speak>') == (Speech("One. Two."),)
    assert pieces("<speak><p>One.</p>[pause:1s]<p>Two.</p></speak>") == (Speech("One."), Pause(1.0), Speech("Two."))


def test_a_break_before_the_end_of_a_paragraph_makes_the_silence_at_least_the_paragraph_pause() -> None:
    assert pieces('<speak><p>One.<break time="2s"/></p><p>Two.</p></speak>') == (
        Speech("One."), Pause(2.0), Speech("Two."))
    assert pieces('<speak><p>One.<break time="0.1s"/></p><p>Two.</p></speak>') == (
        Speech("One."), Pause(0.75), Speech("Two."))


def test_pauses_of_nested_structure_do_not_stack() -> None:
    assert pieces("<speak><p><s>One.</s></p><p><s>Two.</s></p></speak>") == (Speech("One."), Pause(0.75),
                                                                             Speech("Two."))


def test_sentences_and_paragraphs_may_be_self_closing() -> None:
    assert pieces("<speak>One.<p/>Two.<s/>Three.</speak>") == (Speech("One."), Pause(0.75), Speech("Two."),
                                                               Pause(0.3), Speech("Three."))


@pytest.mark.parametrize(("rate", "speed"), [
    ("x-slow", 0.6), ("slow", 0.8), ("medium", 1.0), ("fast", 1.25), ("x-fast", 1.5), ("default", 1.0),
    ("FAST", 1.25), ("80%", 0.8), ("150%", 1.5), (" 120 % ", 1.2), ("1.2", 1.2), ("2", 2.0), ("0.25", 0.25),
    ("4", 4.0), ("400%", 4.0), ("25%", 0.25), (".5", 0.5),
])
def test_prosody_rates(rate: str, speed: float) -> None:
    assert pieces(f'<speak><prosody rate="{rate}">Hi</prosody></speak>') == (Speech("Hi", speed),)


def test_nested_prosody_multiplies() -> None:
    text = ('<speak>a <prosody rate="slow">b <prosody rate="50%">c</prosody> d</prosody> e '
            '<prosody rate="2"><prosody rate="2">f</prosody></prosody></speak>')
    assert pieces(text) == (Speech("a"), Speech("b", 0.8), Speech("c", 0.4), Speech("d", 0.8), Speech("e"),
                            Speech("f", 4.0))


def test_prosody_without_a_rate_keeps_the_rate() -> None:
    assert pieces('<speak><prosody rate="fast">a <prosody>b</prosody></prosody></speak>') == (Speech("a b", 1.25),)


def test_speech_of_the_same_rate_merges_with_a_space() -> None:
    assert pieces('<speak>a<prosody rate="fast"> </prosody>b</speak>') == (Speech("a b"),)
    assert pieces('<speak>a <prosody rate="100%">b</prosody> c</speak>') == (Speech("a b c"),)
    assert pieces('<speak>a<prosody rate="fast">[laugh]</prosody>b</speak>') == (Speech("a b"),)


def test_rates_out_of_range_are_errors_at_their_element() -> None:
    assert_error_at('<speak><prosody rate="5">x</prosody></speak>', "<prosody", "outside [0.25, 4]")
    assert_error_at('<speak><prosody rate="0">x</prosody></speak>', "<prosody", "outside")
    assert_error_at('<speak><prosody rate="20%">x</prosody></speak>', "<prosody", "outside")
    text = ('<speak><prosody rate="x-slow"><prosody rate="slow"><prosody rate="50%">x'
            "</prosody></prosody></prosody></speak>")
    assert_error_at(text, '<prosody rate="50%"', "0.24")


@pytest.mark.parametrize(("text", "spoken"), [
    ("<speak>Tom &amp; Jerry</speak>", "Tom & Jerry"),
    ("<speak>&lt;tag&gt; &quot;q&quot; &apos;a&apos;</speak>", "<tag> \"q\" 'a'"),
    ("<speak>caf&#233; &#x2014; &#X41;</speak>", "café — A"),
    ("<speak>a > b</speak>", "a > b"),
    ("<speak>5 &lt; 6 [pause:1s] 7 &gt; 6</speak>", None),
])
def test_entities_decode(text: str, spoken: str | None) -> None:
    if spoken is None:
        assert pieces(text) == (Speech("5 < 6"), Pause(1.0), Speech("7 > 6"))
    else:
        assert pieces(text) == (Speech(spoken),)


def test_entities_in_attributes_decode() -> None:
    assert pieces("<speak><prosody rate='&#49;.5'>x</prosody></speak>") == (Speech("x", 1.5),)


def test_positions_inside_ssml_text_count_entities_as_written() -> None:
    text = "<speak>&amp;&amp; [laugth]</speak>"
    assert_error_at(text, "[laugth]", "unknown tag")
    text = "<speak>Tom &amp; <p>Jerry [pause:1x]</p></speak>"
    assert_error_at(text, "[pause", "is not a pause")
    text = "<speak>x<!-- c -->y [a</speak>"
    assert_error_at(text, "[a", "tag with no end")


def test_tags_in_ssml_text() -> None:
    markup = parse_markup("<speak><p>Hi [laugh] there [sigh]</p></speak>", frozenset({"laugh"}))
    assert markup == Markup((Speech("Hi [laugh] there"),), ("sigh",))


def test_a_tag_does_not_continue_across_elements() -> None:
    assert_error_at("<speak><s>Hi [laugh</s>]</speak>", "[laugh", "tag with no end")


@pytest.mark.parametrize(("text", "at", "message"), [
    ("<speak><foo>x</foo></speak>", "<foo>", "unknown element <foo>"),
    ("<speak><audio src='x.wav'/></speak>", "<audio", "unknown element <audio>"),
    ("<speak><say-as interpret-as='date'>1/2</say-as></speak>", "<say-as", "unknown element"),
    ("<speak><p style='x'>x</p></speak>", "<p ", "unknown attribute style on <p>"),
    ("<speak><prosody pitch='high'>x</prosody></speak>", "<prosody", "unknown attribute pitch"),
    ("<speak foo='1'>x</speak>", "<speak", "unknown attribute foo"),
    ("<speak><break duration='1s'/></speak>", "<break", "unknown attribute duration"),
    ("<speak><break time=''/></speak>", "<break", 'bad break time ""'),
    ("<speak><break time='1'/></speak>", "<break", "bad break time"),
    ("<speak><break time='fast'/></speak>", "<break", "bad break time"),
    ("<speak><break time='-1s'/></speak>", "<break", "bad break time"),
    ("<speak><break time='31s'/></speak>", "<break", "longer than 30 s"),
    ("<speak><break strength='huge'/></speak>", "<break", "bad break strength"),
    ("<speak><prosody rate='quick'>x</prosody></speak>", "<prosody", "bad prosody rate"),
    ("<speak><prosody rate='-10%'>x</prosody></speak>", "<prosody", "bad prosody rate"),
    ("<speak><prosody rate='+10%'>x</prosody></speak>", "<prosody", "bad prosody rate"),
    ("<speak><p>x</p>", "<speak", "<speak> is never closed"),
    ("<speak><p>x</speak>", "</speak>", "</speak> does not close <p> (opened at character 7)"),
    ("<speak><p><s>x</p></s></speak>", "</p>", "</p> does not close <s>"),
    ("<speak>x</speak> trailing", "trailing", "text outside <speak>"),
    ("<speak>x</speak><p>y</p>", "<p>", "<p> outside <speak>"),
    ("<speak>x</speak></speak>", 16, "</speak> outside <speak>"),
    ("<speak><speak>x</speak></speak>", "<speak>x", "<speak> inside <speak>"),
    ("<speak><break time='1s'>x</break></speak>", "x</break>", "<break> must be empty"),
    ("<speak><break><p/></break></speak>", "<p/>", "<break> must be empty"),
    ("<speak><p a='1' a='2'>x</p></speak>", "<p ", "attribute a twice"),
    ("<speak><p x=1>x</p></speak>", "<p ", "malformed <p> tag"),
    ("<speak><p 'x'>x</p></speak>", "<p ", "malformed <p> tag"),
    ("<speak><prosody rate='1.2>x</prosody></speak>", "<prosody", "malformed <prosody> tag"),
    ("<speak>a < b</speak>", "< b", "write a literal < as &lt;"),
    ("<speak>a </ b</speak>", "</ b", "malformed end tag"),
    ("<speak>Tom & Jerry</speak>", "& Jerry", "a literal & must be written &amp;"),
    ("<speak>a &nbsp; b</speak>", "&nbsp;", "unknown entity &nbsp;"),
    ("<speak>a &#0; b</speak>", "&#0;", "not a character XML allows"),
    ("<speak>a &#xD800; b</speak>", "&#xD800;", "not a character XML allows"),
    ("<speak>a &lol9; b</speak>", "&lol9;", "unknown entity"),
    ("<speak><p rate='&x;'>x</p></speak>", "<p ", "unknown entity"),
    ("<speak>a <!-- b</speak>", "<!--", "comment is never closed"),
    ("<speak>a <![CDATA[ b</speak>", "<![CDATA[", "CDATA section is never closed"),
    ("<speak><?php echo 1 ?></speak>", "<?php", "processing instructions are not allowed"),
    ("<?xml version='1.0'?><?xml version='1.0'?><speak/>", "<?xml version='1.0'?><speak", "processing"),
    ("<?xml version='1.0'?>", 21, "no <speak> element"),
    ("<?xml version='1.0'?>Hello", "Hello", "text outside <speak>"),
    ("<?xml version='1.0'?><p>x</p>", "<p>", "<p> outside <speak>"),
])
def test_malformed_ssml_points_at_the_offending_element(text: str, at: str | int, message: str) -> None:
    if isinstance(at, int):
        found = error(text)
        assert found.position == at and message in found.message, found
    else:
        assert_error_at(text, at, message)


@pytest.mark.parametrize("text", [
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><speak>&lol2;</speak>',
    '<?xml version="1.0"?>\n<!DOCTYPE speak [<!ENTITY a "aaaa">]>\n<speak>&a;</speak>',
    '<speak><!DOCTYPE x></speak>',
    '<speak><!ENTITY a "b"></speak>',
    '<speak><!ELEMENT x ANY></speak>',
])
def test_dtds_and_entity_declarations_are_refused(text: str) -> None:
    found = assert_error_at(text, "<!", "DTDs and entity declarations are not allowed")
    assert found.position == text.index("<!")


def test_sixteen_levels_of_nesting_are_allowed_and_seventeen_are_not() -> None:
    sixteen = "<speak>" + "<s>" * 15 + "deep" + "</s>" * 15 + "</speak>"
    assert pieces(sixteen) == (Speech("deep"),)
    seventeen = "<speak>" + "<s>" * 16 + "deep" + "</s>" * 16 + "</speak>"
    found = error(seventeen)
    assert found.position == len("<speak>") + 15 * len("<s>")
    assert "nested deeper than 16" in found.message
    assert_error_at("<speak>" + "<p>" * 15 + "<break/>", "<break", "nested deeper than 16")


# --- chunk plans ------------------------------------------------------------------------------


def test_a_plan_of_plain_text_is_split_texts() -> None:
    text = "First sentence here. Second one follows! And a third?"
    plan = plan_chunks(parse_markup(text), "sentence", 25)
    assert plan.chunks == tuple(chunk_texts(text, "sentence", 25))
    assert plan.speeds == (1.0,) * len(plan.chunks)
    assert plan.pauses_after == (0.0,) * len(plan.chunks)
    assert plan.lead_pause == 0.0 and plan.dropped_tags == ()


def test_every_pause_is_a_chunk_boundary() -> None:
    plan = plan_chunks(parse_markup("One two [pause:1s] three four [pause:2s]"), "sentence", 200)
    assert plan == Plan(("One two", "three four"), (1.0, 1.0), 0.0, (1.0, 2.0), ())


def test_lead_pause_and_speeds() -> None:
    text = '<speak><break time="1s"/>a <prosody rate="fast">b</prosody><break time="2s"/> c</speak>'
    assert plan_chunks(parse_markup(text), "sentence", 200) == Plan(("a", "b", "c"), (1.0, 1.25, 1.0), 1.0,
                                                                    (0.0, 2.0, 0.0), ())


def test_a_plan_may_have_no_chunks() -> None:
    plan = plan_chunks(parse_markup("[pause:1s] [laugh] [pause:2s]"), "sentence", 200)
    assert plan == Plan((), (), 3.0, (), ("laugh",))
    assert plan_chunks(parse_markup(""), "word", 10) == Plan((), (), 0.0, (), ())


def test_plans_carry_the_dropped_tags() -> None:
    assert plan_chunks(parse_markup("a [sigh] b"), "sentence", 200).dropped_tags == ("sigh",)


def test_plan_checks_its_arguments_even_with_nothing_to_split() -> None:
    with pytest.raises(ValueError, match="strategy"):
        plan_chunks(parse_markup("[pause:1s]"), "sentences", 200)
    with pytest.raises(ValueError, match="max_chars"):
        plan_chunks(parse_markup(""), "sentence", 0)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("max_chars", [1, 3, 5, 8, 13, 20, 200])
def test_a_kept_tag_is_never_split_across_chunks(strategy: str, max_chars: int) -> None:
    text = "Hi [clear throat] there, friend. Well[clear throat]then [laugh]. [clear throat]"
    plan = plan_chunks(parse_markup(text, ALL_TAGS), strategy, max_chars)
    assert sum(chunk.count("[clear throat]") for chunk in plan.chunks) == 3
    assert sum(chunk.count("[laugh]") for chunk in plan.chunks) == 1
    for chunk in plan.chunks:
        assert "[" not in re.sub(r"\[(?:clear throat|laugh)\]", "", chunk), plan.chunks
        assert "]" not in re.sub(r"\[(?:clear throat|laugh)\]", "", chunk), plan.chunks
        assert chunk == chunk.strip()
    assert "".join("".join(plan.chunks).split()) == "".join(text.split())


def test_a_tag_keeps_its_space_and_packs_as_one_word() -> None:
    plan = plan_chunks(parse_markup("aaa [clear throat] bbb", ALL_TAGS), "word", 18)
    assert plan.chunks == ("aaa [clear throat]", "bbb")


def test_a_plan_of_a_tag_longer_than_max_chars_is_one_chunk_over_it() -> None:
    plan = plan_chunks(parse_markup("[clear throat]", ALL_TAGS), "fixed", 4)
    assert plan.chunks == ("[clear throat]",)


# --- speed ------------------------------------------------------------------------------------


@pytest.mark.serial
@pytest.mark.parametrize("text", [
    "[" * 100_000, "<" * 100_000, "[a" * 50_000, "[a " * 33_000, "[" + "a" * 100_000, "[pause:" + " " * 100_000 + "]",
    "[laugh] " * 12_500, "[pause:0s]" * 10_000, "[" + "a " * 50_000 + "]", "a [laugh]" + "\n" * 100_000 + "b",
    "<speak>" + "<" * 100_000, "<speak>" + "[" * 100_000 + "</speak>", "<speak>" + "&" * 100_000,
    "<speak>" + "&amp;" * 20_000 + "</speak>", "<speak><p x='" + "a" * 100_000, "<speak>" + "<p>" * 50_000,
    "<speak>" + "<!--" * 25_000, "<speak>" + "<break/>" * 12_500 + "</speak>",
])
def test_adversarial_inputs_parse_or_fail_fast(text: str) -> None:
    began = time.perf_counter()
    try:
        plan_chunks(parse_markup(text, frozenset({"laugh"})), "sentence", 200)
    except MarkupError:
        pass
    assert time.perf_counter() - began < 1.0


# --- properties -------------------------------------------------------------------------------

# words, sentence and clause punctuation, CJK, quotes, "]" and "&" and ">" (ordinary in plain text),
# every kind of whitespace
PLAIN_SYMBOLS = "abcXYZ019 .,;:!?…-–—'\"()]{}&>\n\t\u00a0\u3000。！？，、「」"
PLAIN_TEXTS = (st.lists(st.sampled_from([*PLAIN_SYMBOLS, "\r\n", "...", "Mr. ", "e.g. ", "word "]), max_size=300)
               .map("".join)
               | st.text(st.characters(exclude_characters="[<"), max_size=300))


@given(text=PLAIN_TEXTS, strategy=st.sampled_from(STRATEGIES), max_chars=st.integers(1, 300))
def test_plain_text_without_brackets_is_one_speech_and_plans_as_split_text(text, strategy, max_chars):
    markup = parse_markup(text, ALL_TAGS)
    assert markup.pieces == ((Speech(text.strip()),) if text.strip() else ())
    assert markup.dropped_tags == ()
    assert not has_markup(text)
    plan = plan_chunks(markup, strategy, max_chars)
    assert plan.chunks == tuple(chunk_texts(text.strip(), strategy, max_chars))
    assert plan.lead_pause == 0.0 and set(plan.pauses_after) <= {0.0} and set(plan.speeds) <= {1.0}


WORDS = st.sampled_from(["Hello", "world.", "Yes!", "no,", "Mr.", "café", "(aside)", "end?", "3.14", "x" * 15])
TAGS = st.sampled_from(sorted(EXPRESSIVE_TAGS))
# milliseconds, written in ms or in s; 40 of them in a row stay within MAX_PAUSE_SECONDS
PAUSES = st.tuples(st.integers(0, 750), st.booleans())
SEPARATORS = st.sampled_from([" ", " ", " ", "", "\n", "\n\n", "  "])
ELEMENTS = st.one_of(WORDS.map(lambda word: ("word", word)), TAGS.map(lambda tag: ("tag", tag)),
                     PAUSES.map(lambda pause: ("pause", pause)))


def written_pause(milliseconds: int, in_seconds: bool) -> str:
    return f"[pause:{milliseconds / 1000:g}s]" if in_seconds else f"[pause:{milliseconds}ms]"


@given(elements=st.lists(st.tuples(ELEMENTS, SEPARATORS), max_size=40), kept=st.frozensets(TAGS),
       strategy=st.sampled_from(STRATEGIES), max_chars=st.integers(1, 120))
def test_plans_keep_every_pause_second_and_every_kept_tag_whole(elements, kept, strategy, max_chars):
    text = ""
    pause_seconds = 0.0
    kept_written: dict[str, int] = {}
    dropped: list[str] = []
    visible = ""
    for (kind, value), separator in elements:
        if kind == "word":
            text += value
            visible += value
        elif kind == "tag":
            text += f"[{value}]"
            if value in kept:
                kept_written[value] = kept_written.get(value, 0) + 1
                visible += f"[{value}]"
            elif value not in dropped:
                dropped.append(value)
        else:
            text += written_pause(*value)
            pause_seconds += value[0] / 1000
        text += separator

    markup = parse_markup(text, kept)
    plan = plan_chunks(markup, strategy, max_chars)

    assert plan.dropped_tags == markup.dropped_tags == tuple(dropped)
    assert len(plan.chunks) == len(plan.speeds) == len(plan.pauses_after)
    assert plan.lead_pause + sum(plan.pauses_after) == pytest.approx(pause_seconds, abs=1e-6)
    assert all(chunk and chunk == chunk.strip() for chunk in plan.chunks)
    whole_tag = re.compile(r"\[(" + "|".join(re.escape(tag) for tag in EXPRESSIVE_TAGS) + r")\]")
    found: dict[str, int] = {}
    for chunk in plan.chunks:
        for match in whole_tag.finditer(chunk):
            found[match.group(1)] = found.get(match.group(1), 0) + 1
        assert "[" not in whole_tag.sub("", chunk) and "]" not in whole_tag.sub("", chunk), chunk
    assert found == kept_written
    assert "".join("".join(plan.chunks).split()) == "".join(visible.split())


@pytest.mark.parametrize("text", ["hello [[sleep:0.5]] world", "x [[fail]] y", "[[crash]] boom", "see [[wiki link]]"])
def test_double_brackets_are_text_never_a_tag(text):
    assert not has_markup(text)
    assert parse_markup(text).pieces == (Speech(text),)
    assert plan_chunks(parse_markup(f"{text} [pause:1s] more"), "sentence", 200).chunks == (text, "more")
