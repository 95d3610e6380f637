"""POST /api/v1/tts's schema (chatterbox_server/api/extended/tts_schema.py): the peer's fields, ranges, defaults."""
from __future__ import annotations

import pytest
from marshmallow import ValidationError

from chatterbox_server.api.extended.tts_schema import ExtendedQuerySchema, ExtendedTtsSchema, clean_folder
from chatterbox_server.synthesis.requests import SpeechRequestSchema


def load(**body):
    return ExtendedTtsSchema(max_input_chars=100).load({"text": "Hello.", **body})


def test_defaults_are_the_peers():
    req = load()
    assert (req.exaggeration, req.temperature, req.cfg_weight) == (0.5, 0.75, 1.0)
    assert req.seed is None and req.speed_factor == 1.0
    assert req.candidates.per_chunk == 3 and req.candidates.max_attempts == 3 and not req.candidates.bypass_whisper
    assert req.candidates.whisper_model == "medium"
    assert req.text_options.to_lowercase and req.text_options.fix_dot_letters and req.smart_batch_short_sentences
    assert req.export_formats == ("wav", "mp3") and req.disable_watermark and req.folder == ""
    assert (req.after.ae_threshold, req.after.ae_margin, req.after.trim_threshold_ms) == (0.06, 0.2, 200)
    assert (req.after.normalize_level, req.after.normalize_tp, req.after.normalize_lra) == (-24.0, -2.0, 7.0)


@pytest.mark.parametrize("field, ok, bad", [
    ("cfg_weight", [0.0, 2.0], [-0.1, 2.1]), ("exaggeration", [0.0, 2.0], [-0.1, 2.01]),
    ("temperature", [0.1, 2.0], [0.05, 2.5]), ("speed_factor", [0.5, 2.0], [0.4, 2.5]),
    ("num_candidates_per_chunk", [1, 10], [0, 11, 2.5]), ("max_attempts_per_candidate", [1, 10], [0, 11]),
    ("trim_threshold_ms", [50, 1000], [49, 1001]), ("ae_threshold", [0.0, 1.0], [1.5]),
    ("ae_margin", [0.0, 1.0], [-1]), ("whisper_model_name", ["tiny", "large"], ["huge", ""]),
    ("speed_factor_library", ["auto", "librosa", "torchaudio", "audiostretchy", None], ["sox"]),
    ("normalize_method", ["ebu", "peak"], ["rms"]), ("normalize_level", [-70, -5], [0, -80]),
    ("normalize_tp", [-9, 0], [1]), ("normalize_lra", [1, 50], [0.5, 60]),
    ("export_formats", [["flac"], ["WAV", "mp3"]], [[], ["ogg"], "wav"]), ("seed", [0, 2**32 - 1], [-1, 2**32]),
])
def test_ranges(field, ok, bad):
    for value in ok:
        load(**{field: value})
    for value in bad:
        with pytest.raises(ValidationError) as info:
            load(**{field: value})
        assert field in info.value.messages


def test_the_openai_family_keeps_its_own_ranges():
    with pytest.raises(ValidationError):
        SpeechRequestSchema(max_input_chars=100).load({"input": "hi", "cfg_weight": 1.5})
    with pytest.raises(ValidationError):
        SpeechRequestSchema(max_input_chars=100).load({"input": "hi", "exaggeration": 0.1})


def test_unknown_fields_stay_a_400():
    with pytest.raises(ValidationError) as info:
        load(voice="alloy")
    assert "voice" in info.value.messages


def test_folder_is_an_alias_of_project():
    assert load(project="books/ch1").folder == "books/ch1"
    assert load(folder="books/ch1").folder == "books/ch1"
    assert load(project="a", folder="a").folder == "a"
    assert load(project="", folder=None).folder == ""
    with pytest.raises(ValidationError) as info:
        load(project="a", folder="b")
    assert "folder" in info.value.messages


@pytest.mark.parametrize("value", ["../x", "a/../../b", "/etc", "a\\b", ".hidden", "a/./b", "a//b", "a/b/c/d/e",
                                   "x" * 65, "a\x00b", "con:", "trailing."])
def test_folders_that_could_leave_the_outputs_directory_are_refused(value):
    with pytest.raises(ValidationError):
        clean_folder(value)
    with pytest.raises(ValidationError):
        load(project=value)


@pytest.mark.parametrize("value, expected", [("book", "book"), ("My Book/Chapter 1", "My Book/Chapter 1"),
                                             ("a/b/", "a/b"), ("  ", ""), ("v1.2", "v1.2")])
def test_good_folders(value, expected):
    assert clean_folder(value) == expected


def test_query_parameters():
    schema = ExtendedQuerySchema()
    assert schema.load({}) == {"response_mode": "stream", "return_format": None}
    assert schema.load({"response_mode": "url", "return_format": "mp3"})["return_format"] == "mp3"
    with pytest.raises(ValidationError):
        schema.load({"return_format": "ogg"})
    assert schema.load({"unrelated": "1"}) == {"response_mode": "stream", "return_format": None}
    assert schema.load({"response_mode": "download"})["response_mode"] == "stream"
    assert schema.load({"response_mode": "file"})["response_mode"] == "stream"
    with pytest.raises(ValidationError):
        schema.load({"response_mode": "json"})
