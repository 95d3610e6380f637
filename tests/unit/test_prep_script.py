"""The Extended family's scripts (text/prep.plan_script): turns, markup and the request's own text
preparation, each silence in exact samples halved between the chunks around it."""
from __future__ import annotations

import pytest

from chatterbox_server.text.prep import ScriptError, TextOptions, needs_script, plan_chunks, plan_script

RATE = 24000
DEFAULTS = TextOptions()


def plan(text: str, speakers: dict[str, str] | None = None, gap: float = 0.3, tags: frozenset[str] = frozenset(),
         options: TextOptions = DEFAULTS):
    return plan_script(text, lambda piece: plan_chunks(piece, options, False, True), tags=tags, speakers=speakers,
                       gap=gap, sample_rate=RATE, max_turns=200)


def test_plain_text_needs_no_script():
    assert not needs_script("Hello there. [1] A footnote and [[sleep:1]].")
    assert all(needs_script(text) for text in ("Hi [pause:1s] there", "<speak>x</speak>", "[S1] Hi.", "a [laugh]",
                                               "[voice:bad name!] x"))


def test_each_silence_is_halved_between_its_chunks_to_the_sample():
    script = plan("[pause:0.25s] One two. [pause:701ms] Three. [pause:0.1s]")
    assert [(c.text, c.before, c.after) for c in script.chunks] == [
        ("one two.", 6000, 8412), ("three.", 8412, 2400)]
    assert sum(c.before + c.after for c in script.chunks) == 6000 + round(0.701 * RATE) + 2400


def test_turns_get_their_voices_and_the_gap_and_text_before_a_marker_the_requests():
    script = plan("Intro here.\n[S1] One. [S2] Two. [voice:carol] Three.", speakers={"S1": "alice", "S2": "bob"},
                  gap=0.2)
    assert [(c.text, c.voice, c.turn) for c in script.chunks] == [
        ("intro here.", None, 0), ("one.", "alice", 1), ("two.", "bob", 2), ("three.", "carol", 3)]
    assert [c.before + c.after for c in script.chunks] == [2400, 4800, 4800, 2400]
    assert list(script.voices) == ["alice", "bob", "carol"] and script.turns == 4
    assert script.voices["bob"] == 'turn 2 (speaker "S2", at character 22)'


def test_the_text_preparation_applies_to_each_piece_of_speech():
    options = TextOptions(sound_words_field="boom=>bang", to_lowercase=False)
    script = plan("<speak>Boom <prosody rate='x-fast'>U.S.A. boom</prosody></speak>", options=options)
    assert [(c.text, c.rate) for c in script.chunks] == [("bang", 1.0), ("U S A bang", 1.5)]


def test_kept_tags_stay_and_others_are_dropped():
    script = plan("[laugh] Funny [sigh] one.", tags=frozenset({"laugh"}))
    assert [c.text for c in script.chunks] == ["[laugh] funny one."] and script.dropped_tags == ("sigh",)


@pytest.mark.parametrize(("text", "param", "says"), [
    ("[S1] Hi. [S2] <speak><p>x</speak>", "text", 'text: turn 1 (speaker "S2", at character 9): '),
    ("[S1] Hi. [S9] x", "speakers", 'speakers: turn 1: speaker "S9" is not in the speakers table'),
    ("Wait [pause:abc] there.", "text", "at character 5"),
    ("[S1] x " * 201, "text", "201 turns; at most 200"),
])
def test_errors_name_the_field_the_turn_and_the_character(text, param, says):
    with pytest.raises(ScriptError) as caught:
        plan(text, speakers={"S1": "alice", "S2": "bob"})
    assert caught.value.param == param and says in caught.value.message, caught.value.message
