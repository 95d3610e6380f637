"""Segmenting a turn's text as it arrives (chatterbox_server.text.segmenter, issue 18 item 3).

Properties (hypothesis, the profiles of test_properties): however a text is split into deltas and
wherever flushes fall, no character is lost or repeated, offsets point at the segments' text, no
segment is over the maximum or ends inside a word it did not have to cut, a flush leaves nothing
buffered, and without a timer the segments depend on the text alone. Then the policy by example.
"""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chatterbox_server.text.segmenter import (
    ELEVENLABS_SCHEDULE,
    Segment,
    Segmenter,
    SegmentPolicy,
    TurnClosed,
)

QUIET = {"deadline": None, "database": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=50, **QUIET)
settings.register_profile("nightly", max_examples=3000, **QUIET)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# words, sentence and clause punctuation, CJK, quotes, abbreviations, decimals, every kind of whitespace
SYMBOLS = "abcXYZ019 .,;:!?…-–—'\"()[]\n\t\u00a0\u3000。！？，、「」"
ALPHABET = st.sampled_from([*SYMBOLS, "\r\n", "...", "Mr. ", "Dr. ", "e.g. ", "3.14", "$3.50", " no. 5",
                            "Hello, ", "word ", "a\u0301", "xxxxxxxxxxxx"])
TEXTS = st.lists(ALPHABET, max_size=150).map("".join) | st.text(max_size=200)
# Cuts that a policy makes inside a run of visible characters: after clause punctuation, CJK sentence ends.
PUNCTUATION_CUTS = "，、；：—。！？」』”’）】"


def visible(text: str) -> str:
    return "".join(text.split())


@st.composite
def policies(draw, timers: bool = False) -> SegmentPolicy:
    delays = st.one_of(st.none(), st.floats(0, 2)) if timers else st.none()
    return SegmentPolicy(
        mode=draw(st.sampled_from(["adaptive", "schedule", "sentence"])),
        max_chars=draw(st.integers(1, 120)),
        first_min_words=draw(st.integers(1, 4)),
        first_max_words=draw(st.integers(1, 8)),
        first_max_delay=draw(delays),
        max_delay=draw(delays),
        schedule=tuple(draw(st.lists(st.integers(1, 150), min_size=1, max_size=5))),
    )


def pieces(text: str, cuts: list[int]) -> list[str]:
    bounds = [0, *sorted({cut % (len(text) + 1) for cut in cuts}), len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def feed(text: str, policy: SegmentPolicy, cuts: list[int], flushes: frozenset[int] = frozenset()) -> list[Segment]:
    """Push ``text`` cut at ``cuts``, flush where ``flushes`` fall, close; no clock moves."""
    segmenter = Segmenter(policy)
    segments: list[Segment] = []
    flush_at = {cut % (len(text) + 1) for cut in flushes}
    for piece in pieces(text, [*cuts, *flush_at]):
        segments += segmenter.push(piece, 0.0)
        if segmenter.length in flush_at:
            segments += segmenter.flush(0.0)
            assert segmenter.buffered == "" and segmenter.next_deadline() is None
    segments += segmenter.close(0.0)
    assert segmenter.buffered == "" and segmenter.length == len(text)
    return segments


def run_of(text: str, position: int) -> int:
    """Length of the run of visible characters around ``position`` (between text[position-1] and text[position])."""
    start, end = position, position
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return end - start


def assert_valid(text: str, segments: list[Segment], policy: SegmentPolicy) -> None:
    position = 0
    for index, segment in enumerate(segments):
        assert segment.index == index
        assert segment.text and segment.text == segment.text.strip(), segment
        assert len(segment.text) <= policy.max_chars, segment
        assert position <= segment.start and text[segment.start:segment.end] == segment.text, segment
        assert text[position:segment.start].strip() == "", segment            # only whitespace between
        position = segment.end
        inside_a_word = segment.end < len(text) and not text[segment.end].isspace()
        if inside_a_word and segment.reason not in ("flush", "close"):
            assert text[segment.end - 1] in PUNCTUATION_CUTS or run_of(text, segment.end) > policy.max_chars, segment
    assert text[position:].strip() == ""
    assert "".join(visible(segment.text) for segment in segments) == visible(text)


@given(text=TEXTS, policy=policies(), cuts=st.lists(st.integers(0, 400), max_size=40),
       flushes=st.frozensets(st.integers(0, 400), max_size=3))
def test_no_character_is_lost_repeated_or_cut_out_of_a_word(text, policy, cuts, flushes):
    assert_valid(text, feed(text, policy, cuts, flushes), policy)


@given(text=TEXTS, policy=policies(), cuts=st.lists(st.integers(0, 400), max_size=40),
       flushes=st.frozensets(st.integers(0, 400), max_size=3))
@example(text="He paid $3.50, no. 5 e.g. this. So a. b 你好。」他", policy=SegmentPolicy.whole_sentences(),
         cuts=[], flushes=frozenset())           # each of these ends a sentence only at the end of a delta
@example(text="Well... wait—what? Dr. Smith, hi", policy=SegmentPolicy(), cuts=[], flushes=frozenset())
def test_without_a_timer_the_segments_do_not_depend_on_how_the_text_was_split(text, policy, cuts, flushes):
    whole = feed(text, policy, [], flushes)
    assert feed(text, policy, cuts, flushes) == whole
    assert feed(text, policy, list(range(len(text))), flushes) == whole          # one character at a time


@given(text=TEXTS, policy=policies())
def test_the_schedule_and_whole_sentence_modes_keep_their_promises(text, policy):
    segments = feed(text, policy, list(range(len(text))))
    for segment in segments:
        if policy.mode == "schedule" and segment.reason == "schedule":
            assert len(segment.text) >= policy.schedule[min(segment.index, len(policy.schedule) - 1)]
        if policy.mode == "sentence":
            assert segment.reason in ("sentence", "length", "close")
        if policy.mode == "adaptive" and segment.index > 0:
            assert segment.reason in ("sentence", "length", "close")


@given(text=TEXTS, policy=policies(timers=True), cuts=st.lists(st.integers(0, 400), max_size=40),
       steps=st.lists(st.tuples(st.floats(0, 1), st.booleans(), st.booleans()), max_size=40))
def test_a_timer_and_flushes_keep_every_character_and_every_limit(text, policy, cuts, steps):
    segmenter = Segmenter(policy)
    segments: list[Segment] = []
    now = 0.0
    for number, piece in enumerate(pieces(text, cuts)):
        step, polls, flushes = steps[number] if number < len(steps) else (0.0, False, False)
        now += step
        segments += segmenter.push(piece, now)
        deadline = segmenter.next_deadline()
        assert deadline is None or segmenter.buffered
        if polls:
            now = max(now, deadline) if deadline is not None else now + 1
            segments += segmenter.poll(now)
        if flushes:
            segments += segmenter.flush(now)
            assert segmenter.buffered == "" and segmenter.next_deadline() is None
    segments += segmenter.close(now)
    assert segmenter.buffered == "" and segmenter.closed
    assert_valid(text, segments, policy)


# --- the policy by example ----------------------------------------------------------------------


def stream(segmenter: Segmenter, deltas: list[str], now: float = 0.0) -> list[list[str]]:
    """Push deltas; the texts each push released."""
    return [[segment.text for segment in segmenter.push(delta, now)] for delta in deltas]


def texts(segments: list[Segment]) -> list[str]:
    return [segment.text for segment in segments]


def test_the_first_segment_goes_out_at_the_first_clause_end_once_the_next_word_starts():
    segmenter = Segmenter()
    released = stream(segmenter, ["Hel", "lo", ",", " ", "h", "ow are you?", " Fine."])
    assert released == [[], [], [], [], ["Hello,"], [], ["how are you?"]]
    [last] = segmenter.close(1.0)
    assert (last.text, last.index, last.start, last.end) == ("Fine.", 2, 20, 25)
    assert (last.reason, last.forced) == ("close", True)


def test_the_first_segment_goes_out_after_six_words_at_a_word_boundary():
    segmenter = Segmenter()
    released = stream(segmenter, [" I", " think", " the", " answer", " to", " your", " question", " is"])
    assert released[-2] == ["I think the answer to your"] and sum(released, []) == ["I think the answer to your"]
    assert segmenter.buffered == "question is"
    custom = Segmenter(SegmentPolicy(first_max_words=2, first_min_words=3))
    assert texts(custom.push("Oh, I think so, yes", 0.0)) == ["Oh, I"]     # "Oh," holds under 3 words


def test_the_first_segment_goes_out_after_the_delay_at_a_word_boundary():
    segmenter = Segmenter()
    assert segmenter.push("So", 0.0) == [] and segmenter.next_deadline() is None    # no word boundary yet
    assert segmenter.push(" the", 0.1) == [] and segmenter.next_deadline() == 0.25
    assert segmenter.poll(0.2) == []
    [first] = segmenter.poll(0.25)
    assert (first.text, first.reason, first.forced) == ("So", "delay", True)
    assert segmenter.buffered == "the" and segmenter.next_deadline() is None        # "the" may go on
    assert segmenter.push(" answer", 0.5) == []
    assert segmenter.next_deadline() == 1.25            # later segments: 1 s, counted from the last release
    assert texts(segmenter.push("s", 1.3)) == ["the"]   # a push past the deadline releases, as a poll would
    assert texts(segmenter.flush(1.4)) == ["answers"] and segmenter.buffered == ""


def test_a_delta_holding_several_sentences_releases_each_decided_one():
    segmenter = Segmenter()
    assert texts(segmenter.push("Sure! I can help. What is your name? My", 0.0)) == [
        "Sure!", "I can help.", "What is your name?"]


@pytest.mark.parametrize("policy", [SegmentPolicy(), SegmentPolicy.whole_sentences()], ids=["adaptive", "sentence"])
def test_abbreviations_decimals_and_ellipses_do_not_end_a_sentence(policy):
    text = "Okay. Dr. Smith paid $3.50. Pi is 3.14, e.g. roughly. He said... and then left. Wait… What? No. 5 is fine."
    whole = texts(feed(text, policy, []))
    assert whole == ["Okay.", "Dr. Smith paid $3.50.", "Pi is 3.14, e.g. roughly.",
                     "He said... and then left.", "Wait…", "What?", "No. 5 is fine."]
    assert texts(feed(text, policy, list(range(len(text))))) == whole


def test_a_sentence_end_waits_for_the_next_visible_character():
    segmenter = Segmenter(SegmentPolicy.whole_sentences())
    assert stream(segmenter, ["He paid $3.", " ", "\n"]) == [[], [], []]      # "$3." could go on: "$3.50"
    assert stream(segmenter, ["N"]) == [["He paid $3."]]


def test_the_chunk_length_schedule_releases_at_120_160_250_then_290_characters():
    words = " ".join(f"word{number % 10}" for number in range(400)) + " "
    segmenter = Segmenter(SegmentPolicy.chunk_schedule([120, 160, 250, 290]))
    segments: list[Segment] = []
    for character in words:
        released = segmenter.push(character, 0.0)
        for segment in released:       # released as soon as the threshold's word is whole, not before
            assert len(segment.text) >= ELEVENLABS_SCHEDULE[min(segment.index, 3)]
        segments += released
    segments += segmenter.close(0.0)
    lengths = [len(segment.text) for segment in segments]
    # each at the first word end at or past its threshold (words of 5, a space: lengths are 6k - 1)
    assert lengths[:-1] == [125, 161, 251, *[293] * 6] and lengths[-1] < 290
    assert all(segment.reason == "schedule" for segment in segments[:-1]) and segments[-1].reason == "close"
    assert "".join(texts(segments)).replace(" ", "") == words.replace(" ", "")
    assert SegmentPolicy.chunk_schedule().schedule == (120, 160, 250, 290)
    capped = feed(words, SegmentPolicy.chunk_schedule([500]), list(range(len(words))))   # over max_chars
    assert {segment.reason for segment in capped[:-1]} == {"length"} and max(map(len, texts(capped))) == 299


def test_an_over_long_segment_is_cut_at_a_clause_then_a_word_then_inside_an_over_long_word():
    policy = SegmentPolicy.whole_sentences(max_chars=40)
    clause = "This sentence is long, and it goes on and on for a while yet."
    assert texts(feed(clause, policy, [])) == ["This sentence is long,", "and it goes on and on for a while yet."]
    plain = "This sentence is long and it goes on and on for a while yet."
    assert texts(feed(plain, policy, [])) == ["This sentence is long and it goes on and", "on for a while yet."]
    word = "A " + "x" * 100 + " end."
    assert texts(feed(word, policy, [])) == ["A", "x" * 40, "x" * 40, "x" * 20 + " end."]
    accent = "e\u0301" * 30
    assert all(not segment.text[0].isspace() and segment.text[0] != "\u0301"
               for segment in feed(accent, policy, []))          # an accent stays with its letter


def test_a_flush_releases_a_word_in_progress_and_the_turn_goes_on():
    segmenter = Segmenter()
    assert segmenter.push("Hel", 0.0) == []
    [flushed] = segmenter.flush(0.0)
    assert (flushed.text, flushed.start, flushed.end, flushed.reason) == ("Hel", 0, 3, "flush")
    assert segmenter.flush(0.0) == [] and segmenter.buffered == ""
    later = segmenter.push("lo there. Next one. ", 0.0) + segmenter.close(0.0)
    full = "Hel" + "lo there. Next one. "
    assert [(s.text, s.index, full[s.start:s.end]) for s in later] == [
        ("lo there.", 1, "lo there."), ("Next one.", 2, "Next one.")]
    assert later[0].start == flushed.end                     # joined inside a word: no whitespace between
    with pytest.raises(TurnClosed):
        segmenter.push("more", 0.0)
    assert segmenter.close(0.0) == [] and segmenter.poll(9.0) == [] and segmenter.next_deadline() is None


def test_whitespace_only_text_makes_no_segment():
    segmenter = Segmenter()
    assert segmenter.push("  \n\n ", 0.0) == [] and segmenter.flush(5.0) == [] and segmenter.close(9.0) == []
    assert segmenter.length == 5


@pytest.mark.parametrize("bad", [
    {"mode": "words"}, {"max_chars": 0}, {"first_min_words": 0}, {"first_max_words": 0},
    {"first_max_delay": -1.0}, {"max_delay": -0.5}, {"schedule": ()}, {"schedule": (120, 0)}])
def test_a_bad_policy_is_refused(bad):
    with pytest.raises(ValueError):
        SegmentPolicy(**bad)


def test_the_segmenter_is_pure():
    source = Path(__file__).resolve().parents[2] / "chatterbox_server" / "text" / "segmenter.py"
    tree = ast.parse(source.read_text())
    imported = {node.module if isinstance(node, ast.ImportFrom) else alias.name
                for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                for alias in node.names}
    assert imported - set(sys.stdlib_module_names) == {"chatterbox_server.text.chunking"}
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, chatterbox_server.text.segmenter; "
         "print(sorted({'flask', 'gevent', 'torch', 'numpy'} & set(sys.modules)))"],
        capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
