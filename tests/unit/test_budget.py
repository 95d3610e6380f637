"""Request budgets (chatterbox_server/synthesis/budget.py, text/prep.py's PrepLimits): every cost is
bounded before the work it stands for, and a request over a limit is a 413 naming the setting."""
from __future__ import annotations

import dataclasses
import time
import tracemalloc

import pytest
from marshmallow import ValidationError

from chatterbox_server.api.extended.concat_schema import ConcatSchema, output_base
from chatterbox_server.errors import ApiError
from chatterbox_server.settings import Settings, SettingsError
from chatterbox_server.synthesis.budget import Ledger, Limits, pauses_seconds, prepared_chunks, worst_case_takes
from chatterbox_server.text.prep import PrepLimits, TextOptions, TextTooLarge, plan_chunks, prepare

LIMITS = Limits.of(Settings())
CHAIN = "a=>" + " ".join(["b"] * 30) + ", b=>" + " ".join(["c"] * 30)    # each level multiplies the text by 30


def test_a_replacement_chain_grows_the_text_without_limits_and_stops_at_the_limit_with_them():
    grown = prepare("a a a a a", TextOptions(sound_words_field=CHAIN))
    assert len(grown) > 8000                                    # 9 characters became 8,999
    with pytest.raises(TextTooLarge) as caught:
        prepare("a a a a a " * 400, TextOptions(sound_words_field=CHAIN), PrepLimits(max_chars=16384))
    assert caught.value.what == "chars" and caught.value.limit == 16384


def test_one_pass_is_stopped_inside_the_pass_not_after_it():
    """2,048 words each replaced by 10,000 characters would be 20 MB; the pass stops at the limit."""
    field = "a=>" + "x" * 9_990
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(TextTooLarge):
        prepare("a " * 2048, TextOptions(sound_words_field=field), PrepLimits(max_chars=16384))
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 0.5 and peak < 2 * 1024 * 1024, (elapsed, peak)


def test_a_text_already_longer_than_the_limit_may_still_shrink():
    text = "um hello there. " * 100
    assert "um" not in prepare(text, TextOptions(sound_words_field="um=>u"), PrepLimits(max_chars=100))


def test_rules_are_counted_before_any_pass():
    field = ",".join(f"w{i}" for i in range(1000))
    started = time.perf_counter()
    with pytest.raises(TextTooLarge) as caught:
        prepare("hello " * 680, TextOptions(sound_words_field=field), PrepLimits(max_rules=200))
    assert caught.value.what == "rules" and caught.value.found == 1000
    assert time.perf_counter() - started < 0.05


def test_the_default_rule_limit_bounds_the_work_of_a_full_text():
    """200 removals (the default) on 4,096 characters: the work a request may cost (1,000 took 0.66 s)."""
    field = ",".join(f"w{i}" for i in range(LIMITS.sound_words))
    started = time.perf_counter()
    prepare(("The quick brown fox jumps over the lazy dog. " * 100)[:4096], TextOptions(sound_words_field=field),
            LIMITS.prep)
    assert time.perf_counter() - started < 0.5


def test_over_the_text_limits_is_a_413_naming_the_setting_and_the_field():
    with pytest.raises(ApiError) as caught:
        prepared_chunks("a a a a a " * 400, TextOptions(sound_words_field=CHAIN), False, True, LIMITS,
                        "segments[3].tts")
    error = caught.value
    assert error.status == 413 and error.param == "segments[3].tts.sound_words_field"
    assert "CHATTERBOX_MAX_PREPARED_CHARS" in error.message
    with pytest.raises(ApiError) as caught:
        prepared_chunks("hello", TextOptions(sound_words_field=",".join(f"w{i}" for i in range(201))), False, True,
                        LIMITS)
    assert caught.value.status == 413 and "CHATTERBOX_MAX_SOUND_WORDS" in caught.value.message
    assert caught.value.param == "sound_words_field"


def test_the_prepared_text_limit_is_never_below_the_input_limit():
    assert Limits.of(Settings(max_input_chars=50_000)).prepared_chars == 50_000


def test_worst_case_takes():
    assert worst_case_takes(1024, 10, 10, False) == 102_400
    assert worst_case_takes(1024, 10, 10, True) == 10_240


def test_too_many_takes_is_a_413_before_any_synthesis():
    ledger = Ledger(LIMITS)
    with pytest.raises(ApiError) as caught:
        ledger.add_text(["x."] * 1024, 10, 10, False)
    error = caught.value
    assert error.status == 413 and error.code == "over_budget" and error.param == "max_attempts_per_candidate"
    assert "102400 takes" in error.message and "CHATTERBOX_MAX_TAKES" in error.message


def test_takes_add_up_over_segments():
    ledger = Ledger(LIMITS)
    for position in range(55):
        ledger.add_text(["x."] * 10, 3, 3, False, f"segments[{position}].tts")      # 90 takes each
    with pytest.raises(ApiError) as caught:
        ledger.add_text(["x."] * 10, 3, 3, False, "segments[55].tts")
    assert caught.value.param == "segments[55].tts.max_attempts_per_candidate"
    assert "segments before it" in caught.value.message


def test_the_default_takes_limit_admits_every_full_length_text_with_default_candidates():
    """The most chunks a 4,096-character text can have: sentences joined up to 20 characters."""
    text = ("Abc def ghi jkl mno. " * 200)[:Settings().max_input_chars]
    chunks = prepared_chunks(text, TextOptions(), False, True, LIMITS)
    Ledger(LIMITS).add_text(chunks, 3, 3, False)
    tiny = ("Ab. " * 1024)[:Settings().max_input_chars]
    chunks = prepared_chunks(tiny, TextOptions(), False, True, LIMITS)
    assert len(chunks) == 512
    Ledger(LIMITS).add_text(chunks, 3, 3, False)
    Ledger(LIMITS).add_text(prepared_chunks(text, TextOptions(), False, True, LIMITS), 10, 1, True)


def test_characters_times_candidates_times_attempts_are_bounded():
    """Few chunks, but long ones, with every candidate and attempt: the characters synthesized count."""
    chunks = prepared_chunks("Hello there, this is a sentence. " * 124, TextOptions(), True, True, LIMITS)
    assert len(chunks) < 20
    with pytest.raises(ApiError) as caught:
        Ledger(LIMITS).add_text(chunks, 10, 10, False)
    assert caught.value.status == 413 and "CHATTERBOX_MAX_SYNTHESIS_CHARS" in caught.value.message
    assert caught.value.param == "max_attempts_per_candidate"


def test_concat_seconds_items_and_bytes():
    ledger = Ledger(LIMITS)
    with pytest.raises(ApiError) as caught:
        ledger.add_seconds(20_000 * 10.0, "files")
    assert caught.value.status == 413 and "CHATTERBOX_MAX_CONCAT_SECONDS" in caught.value.message
    assert caught.value.param == "files"
    with pytest.raises(ApiError) as caught:
        Ledger(LIMITS).add_items(20_001, "files")
    assert "CHATTERBOX_MAX_CONCAT_ITEMS" in caught.value.message
    with pytest.raises(ApiError) as caught:
        Ledger(LIMITS).add_bytes(2 * 1024 ** 3, "files[0]")
    assert "CHATTERBOX_MAX_CONCAT_BYTES" in caught.value.message
    assert pauses_seconds(3, 500, 200) == pytest.approx(1.4)
    assert pauses_seconds(3, 0, 200) == 0


@pytest.mark.parametrize("name", ["x./a", "x./a.wav", "a/b", "x.mp3/..", "../x"])
def test_concat_output_names_with_a_folder_are_refused(name):
    with pytest.raises(ValidationError) as caught:
        ConcatSchema().load({"files": ["a.wav", "b.wav"], "output_filename": name})
    assert "output_filename" in caught.value.messages


@pytest.mark.parametrize("name, base", [("mix.wav", "mix"), ("mix.MP3", "mix"), ("mix.v2", "mix.v2"), ("mix", "mix")])
def test_concat_output_names(name, base):
    assert output_base(name) == base
    ConcatSchema().load({"files": ["a.wav", "b.wav"], "output_filename": name})


def test_plan_chunks_is_unchanged_without_limits():
    assert plan_chunks("Um. Hello there.", TextOptions(sound_words_field="um"), False, True) == ["hello there."]


# -- whole-file answers within the proxy's timeout ------------------------------------------------
def whole_file_ledger(limit: float = 300.0):
    from chatterbox_server.synthesis.budget import Ledger
    limits = Limits.of(Settings())
    return Ledger(dataclasses.replace(limits, whole_file_seconds=limit))


def test_whole_file_time_is_worst_case_characters_at_the_measured_speed_plus_the_queue():
    from chatterbox_server.synthesis.budget import Speed, synthesis_seconds
    ledger = whole_file_ledger()
    ledger.add_text(["a" * 100, "b" * 100], 3, 3, False)        # 200 characters, 3 candidates, 3 rounds
    # one row: the 3 candidates one after another, 3 rounds
    assert synthesis_seconds(ledger, Speed(0.01, None, 1, 0.0))[0] == pytest.approx(200 * 3 * 3 * 0.01)
    # 8 rows: a round's candidates side by side; and the queue comes on top
    assert synthesis_seconds(ledger, Speed(0.01, None, 8, 5.0)) == (pytest.approx(200 * 3 * 0.01 + 5.0), True)


def test_without_a_measured_speed_the_estimate_is_conservative_per_engine():
    from chatterbox_server.synthesis.budget import FALLBACK_SECONDS_PER_CHAR, Speed, synthesis_seconds
    ledger = whole_file_ledger()
    ledger.add_text(["a" * 1000], 1, 1, True)
    seconds, measured = synthesis_seconds(ledger, Speed(None, None, 1, 0.0, "chatterbox", "cuda:0"))
    assert not measured and seconds == pytest.approx(1000 * FALLBACK_SECONDS_PER_CHAR["chatterbox"])
    on_cpu, _ = synthesis_seconds(ledger, Speed(None, None, 1, 0.0, "chatterbox", "cpu"))
    assert on_cpu > seconds
    assert synthesis_seconds(ledger, Speed(None, None, 1, 0.0, "tone", "cpu"))[0] < seconds


def test_a_whole_file_over_the_limit_is_a_413_naming_the_setting_and_streaming():
    from chatterbox_server.synthesis.budget import Speed, check_whole_file
    ledger = whole_file_ledger(300.0)
    ledger.add_text(["a" * 4000], 1, 1, True)
    assert check_whole_file(ledger, Speed(0.05, None, 1, 0.0), "input") == pytest.approx(200.0)
    with pytest.raises(ApiError) as refused:
        check_whole_file(ledger, Speed(0.05, None, 1, 120.0), "input")     # the queue pushes it over
    assert refused.value.status == 413 and refused.value.code == "over_budget"
    assert "CHATTERBOX_MAX_WHOLE_FILE_SECONDS" in refused.value.message
    assert "/v1/audio/speech/stream" in refused.value.message and refused.value.param == "input"
    vc = whole_file_ledger(300.0)
    vc.convert_seconds = 600.0
    with pytest.raises(ApiError):
        check_whole_file(vc, Speed(None, 0.6, 1, 0.0), "input_audio")
    assert check_whole_file(whole_file_ledger(0.0), Speed(None, None, 1, 1e9), None) > 0    # 0: no limit


# -- long-text jobs --------------------------------------------------------------------------------
def long_params(chunk_size: int = 50, strategy: str = "sentence") -> dict:
    return {"streaming_strategy": strategy, "streaming_chunk_size": chunk_size}


def test_a_long_job_over_the_chunk_limit_is_a_413_naming_the_setting_and_the_chunk_size():
    from chatterbox_server.synthesis.longjobs.rules import plan_job
    limits = dataclasses.replace(LIMITS, long_chunks=100)
    assert len(plan_job("Ab. " * 1250, long_params(500), limits)) == 10          # 5,000 characters, 10 chunks
    with pytest.raises(ApiError) as refused:
        plan_job("Ab. " * 1250, long_params(50), limits)                        # the same text: 105 chunks
    error = refused.value
    assert error.status == 413 and error.code == "over_budget" and error.param == "streaming_chunk_size"
    assert "CHATTERBOX_LONGTEXT_MAX_CHUNKS" in error.message and "105 chunks" in error.message


def test_a_text_surely_over_the_chunk_limit_is_refused_before_it_is_cut():
    """Cutting 200,000 characters takes about 0.3 s of CPU; a lower bound (non-whitespace characters
    over the chunk size) refuses a text surely over the limit in milliseconds."""
    from chatterbox_server.synthesis.longjobs.rules import plan_job
    limits = dataclasses.replace(LIMITS, long_chunks=1000)
    started = time.perf_counter()
    with pytest.raises(ApiError) as refused:
        plan_job("Ab. " * 50_000, long_params(50), limits)            # 150,000 visible: at least 3,000
    assert time.perf_counter() - started < 0.05
    assert "at least 3000 chunks" in refused.value.message and refused.value.param == "streaming_chunk_size"


def test_a_long_job_over_the_character_limit_is_a_413_naming_it():
    """The input limit is checked by the schema on creation, but a retry keeps a text stored when the
    limit may have been higher: its characters are counted again."""
    from chatterbox_server.synthesis.longjobs.rules import plan_job
    with pytest.raises(ApiError) as refused:
        plan_job("Hello there. " * 200, long_params(250), dataclasses.replace(LIMITS, long_chars=1000),
                 "the job's text")
    error = refused.value
    assert error.status == 413 and error.param == "input" and "CHATTERBOX_LONGTEXT_MAX_CHARS" in error.message
    assert error.message.startswith("the job's text has 2589 characters")     # 2,600 less the spaces between chunks


def test_the_default_chunk_limit_admits_the_longest_text_at_the_smallest_chunk_size():
    """The most chunks found for 200,000 characters at size 50 (words of 50 letters and a full stop:
    each stop splits off): 7,693, under the default of 10,000."""
    from chatterbox_server.synthesis.longjobs.rules import plan_job
    settings = Settings()
    text = (("a" * 50 + ". ") * 4000)[:settings.longtext_max_chars]
    chunks = plan_job(text, long_params(50), Limits.of(settings))
    assert len(chunks) == 7693 and settings.longtext_max_chunks == 10_000


# -- voice conversion ------------------------------------------------------------------------------
def tone_wav(seconds: float, rate: int = 16000) -> bytes:
    import numpy as np

    from chatterbox_server.synthesis.voices import pcm_to_wav
    t = np.arange(int(seconds * rate)) / rate
    return pcm_to_wav((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), rate)


def test_vc_input_seconds_over_the_limit_are_a_413_and_decoding_stops_at_it():
    from chatterbox_server.api.extended.files import decode_vc_input
    ledger = Ledger(dataclasses.replace(LIMITS, convert_seconds=2.0))
    with pytest.raises(ApiError) as refused:
        decode_vc_input(tone_wav(60.0), ledger, "input_audio")
    error = refused.value
    assert error.status == 413 and error.code == "over_budget" and error.param == "input_audio"
    assert "CHATTERBOX_MAX_VC_SECONDS" in error.message and "2 s" in error.message
    assert 2.0 < ledger.convert_seconds <= 3.1          # one second past the limit decoded, not the minute
    fits = Ledger(dataclasses.replace(LIMITS, convert_seconds=2.0))
    _, _, seconds = decode_vc_input(tone_wav(1.5), fits, "input_audio")
    assert seconds == pytest.approx(1.5) and fits.convert_seconds == pytest.approx(1.5)


def test_vc_bytes_are_counted_before_decoding_and_each_file_is_held_to_the_upload_limit():
    from chatterbox_server.api.extended.files import decode_vc_input
    data = tone_wav(1.0)
    ledger = Ledger(dataclasses.replace(LIMITS, upload_bytes=len(data) - 1))
    with pytest.raises(ApiError) as refused:
        decode_vc_input(data, ledger, "input_audio_source")
    error = refused.value
    assert error.status == 413 and error.code == "over_budget" and error.param == "input_audio_source"
    assert "CHATTERBOX_MAX_UPLOAD_BYTES" in error.message and ledger.convert_seconds == 0.0    # nothing decoded
    counted = Ledger(LIMITS)
    decode_vc_input(data, counted, "input_audio")
    assert counted.decoded_bytes == len(data)


def test_the_vc_limit_is_a_setting_of_600_seconds_by_default():
    assert Settings().max_vc_seconds == 600.0 and Limits.of(Settings()).convert_seconds == 600.0
    assert Limits.of(Settings(max_vc_seconds=30.0)).convert_seconds == 30.0
    with pytest.raises(SettingsError):
        Settings.from_env({"CHATTERBOX_MAX_VC_SECONDS": "0"})
