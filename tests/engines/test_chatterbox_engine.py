"""ChatterboxEngine on the real chatterbox-tts code with a random-weight checkpoint (no hub).

Random weights never sample the stop token, so each generation runs to the 8-token cap. Most of a
call's time is S3Gen's flow decoder over the voice prompt (7-15 s a call on two CPU cores), so the
module makes each generation once and shares it between tests. About 2.5-3.5 minutes in all.
"""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before huggingface_hub is imported: it reads this once
pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (see requirements-chatterbox.txt)")

import chatterbox_checkpoint as checkpoints  # noqa: E402
import torch  # noqa: E402

from workers.engines.base import EngineError, SynthesisSettings, VoiceRef  # noqa: E402
from workers.engines.chatterbox import ChatterboxEngine, token_cap  # noqa: E402
from workers.engines.tags import TURBO_TAGS  # noqa: E402

pytestmark = pytest.mark.chatterbox

CAP = 8
SAMPLES_PER_TOKEN = 24000 // 25          # S3Gen: 2 mel frames of 480 samples per speech token
TEXT = "Hello there, this is a test."
BUILTIN = VoiceRef("default")


@pytest.fixture(scope="module")
def engine(chatterbox_checkpoint):
    engine = ChatterboxEngine(checkpoint_dir=str(chatterbox_checkpoint), device="cpu", max_new_tokens=CAP)
    engine.info = engine.load()
    return engine


@pytest.fixture(scope="module")
def builtin_snapshot(engine):
    """The built-in conditionals as they were right after load, before any request."""
    return _snapshot(engine._builtin)


@pytest.fixture(scope="module")
def runs(engine, builtin_snapshot, reference_wav):
    """Every generation the module needs, once each."""
    clone = VoiceRef("alice", str(reference_wav))
    out = {"builtin": engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)}
    out["builtin_again"] = engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)
    out["builtin_seed2"] = engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=2)
    out["builtin_unmarked"] = engine.synthesize(TEXT, SynthesisSettings(watermark=False), BUILTIN, seed=1)
    out["clone"] = engine.synthesize(TEXT, SynthesisSettings(), clone, seed=1)
    out["clone_snapshot"] = _snapshot(next(iter(engine.conditionals_cache._entries.values()))[0])   # (conds, bytes)
    # cfg_weight 0 as well: upstream standard generate() crashes there
    settings = SynthesisSettings(exaggeration=1.2, cfg_weight=0.0)
    out["clone_exaggerated"] = engine.synthesize(TEXT, settings, clone, seed=1)
    return out


def _snapshot(conds) -> dict:
    tensors = {f"t3.{k}": v for k, v in vars(conds.t3).items()}
    tensors.update({f"gen.{k}": v for k, v in conds.gen.items()})
    return {k: v.clone() if torch.is_tensor(v) else v for k, v in tensors.items()}


def _assert_unchanged(conds, snapshot: dict) -> None:
    now = _snapshot(conds)
    assert now.keys() == snapshot.keys()
    for key, before in snapshot.items():
        if torch.is_tensor(before):
            assert torch.equal(now[key], before), key
        else:
            assert now[key] == before, key


def test_engine_info(engine):
    info = engine.info
    assert info.engine == "chatterbox"
    assert info.model == "chatterbox-standard"
    assert info.device == "cpu"
    assert info.sample_rate == 24000
    assert info.model_names == ("chatterbox", "chatterbox-standard")
    assert info.default_voice == "default"
    assert info.supports_cloning and info.supports_exaggeration and info.supports_voice_conversion
    assert info.languages == () and info.native_speed is None
    assert info.tags == ()                                    # bracket tags are turbo's alone


def test_synthesis_gives_float32_audio_of_the_generated_length(runs):
    result = runs["builtin"]
    audio = result.audio
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
    assert 0 < result.extra["vocoded_tokens"] <= result.output_tokens <= CAP
    assert len(audio) == result.extra["vocoded_tokens"] * SAMPLES_PER_TOKEN
    assert result.extra["token_cap"] == CAP
    assert result.input_tokens >= 10                          # the test tokenizer is mostly per character
    assert result.extra["conditionals"] == "builtin"


def test_same_seed_same_audio_other_seed_other_audio(runs):
    assert np.array_equal(runs["builtin"].audio, runs["builtin_again"].audio)
    assert not np.array_equal(runs["builtin"].audio, runs["builtin_seed2"].audio)


def test_the_watermark_is_skipped_only_when_the_settings_say_so(runs):
    marked, unmarked = runs["builtin"].audio, runs["builtin_unmarked"].audio
    assert marked.size == unmarked.size and np.isfinite(unmarked).all()
    assert not np.array_equal(marked, unmarked)          # Perth changed every window of the default


def test_builtin_voice_is_never_modified(engine, runs, builtin_snapshot):
    _assert_unchanged(engine._builtin, builtin_snapshot)
    assert engine._builtin.t3.cond_prompt_speech_emb is None   # T3 caches it on the T3Cond it gets
    assert engine._tts.conds is engine._builtin


def test_exaggeration_changes_the_conditioning_not_the_stored_voice(engine, runs, builtin_snapshot):
    # Random weights sample the same tokens whatever the conditioning, so look at T3's input instead.
    t3 = engine._tts.t3
    with torch.inference_mode():
        usual = t3.prepare_conditioning(engine._t3_cond(engine._builtin.t3, 0.5))
        strong = t3.prepare_conditioning(engine._t3_cond(engine._builtin.t3, 1.5))
    assert usual.shape == strong.shape and not torch.equal(usual, strong)
    assert float(engine._builtin.t3.emotion_adv.reshape(-1)[0]) == 0.5
    _assert_unchanged(engine._builtin, builtin_snapshot)


def test_cloned_voice_differs_and_its_conditionals_are_cached(engine, runs):
    assert runs["clone"].extra["conditionals"] == "computed"
    assert runs["clone_exaggerated"].extra["conditionals"] == "cached"
    assert engine.conditionals_cache.misses == 1 and engine.conditionals_cache.hits >= 1
    assert len(engine.conditionals_cache) == 1
    assert not np.array_equal(runs["clone"].audio, runs["builtin"].audio)
    cached, size = next(iter(engine.conditionals_cache._entries.values()))
    _assert_unchanged(cached, runs["clone_snapshot"])
    stats = engine.cache_stats()["conditionals"]         # what /memory shows
    assert stats["entries"] == 1 and stats["bytes"] == size > 0
    for audio in (runs["clone"].audio, runs["clone_exaggerated"].audio):
        assert audio.dtype == np.float32 and np.isfinite(audio).all() and len(audio) > 0


def test_changed_reference_file_is_read_again(engine, reference_wav, tmp_path):
    moved = tmp_path / "alice.wav"
    moved.write_bytes(reference_wav.read_bytes())
    before = engine.conditionals_cache.misses
    conds, source = engine._conditionals(VoiceRef("alice", str(moved)))
    assert source == "computed" and engine.conditionals_cache.misses == before + 1
    assert engine._conditionals(VoiceRef("alice", str(moved)))[0] is conds


@pytest.mark.parametrize("content", [b"", b"RIFF\x00\x00\x00\x00WAVEgarbage", np.random.default_rng(0).bytes(4096)],
                         ids=["empty", "bad-header", "noise"])
def test_unreadable_reference_raises_engine_error(engine, tmp_path, content):
    path = tmp_path / "broken.wav"
    path.write_bytes(content)
    with pytest.raises(EngineError):
        engine.synthesize(TEXT, SynthesisSettings(), VoiceRef("broken", str(path)), seed=0)


def test_missing_reference_raises_engine_error(engine, tmp_path):
    with pytest.raises(EngineError):
        engine.synthesize(TEXT, SynthesisSettings(), VoiceRef("gone", str(tmp_path / "gone.wav")), seed=0)


def test_text_over_the_model_limit_raises_engine_error(engine):
    with pytest.raises(EngineError):
        engine.synthesize("word " * 1000, SynthesisSettings(), BUILTIN, seed=0)


def test_other_language_raises_engine_error(engine):
    with pytest.raises(EngineError):
        engine.synthesize(TEXT, SynthesisSettings(language="fr"), BUILTIN, seed=0)


@pytest.fixture(scope="module")
def converted(engine, builtin_snapshot):
    """One second converted as the model worker does it, with and without the watermark."""
    source = checkpoints.synthetic_voice(1.0, 16000, f0=160.0, seed=3)
    out = {}
    for watermark in (True, False):
        stream = engine.open_conversion(source, BUILTIN, 0, watermark=watermark)
        piece = engine.step([stream])[0]
        assert not isinstance(piece, BaseException), piece
        out[watermark] = piece.audio
    return out


def test_voice_conversion_speaks_the_source_length(engine, converted, builtin_snapshot):
    audio = converted[True]
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all()
    assert abs(len(audio) - 24000) <= 2 * SAMPLES_PER_TOKEN    # 25 tokens a second of source
    _assert_unchanged(engine._builtin, builtin_snapshot)


def test_voice_conversion_skips_the_watermark_only_when_told(engine, converted):
    marked, unmarked = converted[True], converted[False]
    assert marked.size == unmarked.size and np.isfinite(unmarked).all()
    assert not np.array_equal(marked, unmarked)
    # the same seed without the watermark is S3Gen's own output: marking it gives the marked audio
    remarked = engine._tts.watermarker.apply_watermark(unmarked, sample_rate=24000)
    assert np.allclose(np.clip(remarked, -1, 1), marked, atol=1e-5)


def test_token_cap_scales_with_the_text():
    assert token_cap("a" * 10, 1000) == 75                 # ceil(2.5 * 10) + 50
    assert token_cap("a" * 1000, 1000) == 1000
    assert token_cap("字" * 10, 1000, "zh") == 150
    assert token_cap("Hi.", 8) == 8


def test_multilingual_engine_speaks_a_listed_language(chatterbox_checkpoint):
    engine = ChatterboxEngine("multilingual", device="cpu", checkpoint_dir=str(chatterbox_checkpoint),
                              max_new_tokens=CAP)
    info = engine.load()
    assert info.model == "chatterbox-multilingual" and info.supports_exaggeration and info.tags == ()
    assert {"en", "de", "zh", "ja"} <= set(info.languages)
    result = engine.synthesize("Guten Tag, wie geht es dir?", SynthesisSettings(language="de"), BUILTIN, seed=1)
    assert result.audio.dtype == np.float32 and np.isfinite(result.audio).all()
    assert len(result.audio) == result.extra["vocoded_tokens"] * SAMPLES_PER_TOKEN
    assert 0 < result.output_tokens <= CAP
    # upstream registers alignment hooks on every call and never removes them; the engine does
    assert all(not layer.self_attn._forward_hooks for layer in engine._tts.t3.tfmr.layers)
    with pytest.raises(EngineError):
        engine.synthesize("Hallo.", SynthesisSettings(language="xx"), BUILTIN, seed=1)


@pytest.fixture(scope="module")
def turbo_checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chatterbox-turbo")
    yield checkpoints.build_random_turbo_checkpoint(directory, seed=0)
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def turbo(turbo_checkpoint):
    engine = ChatterboxEngine("turbo", device="cpu", checkpoint_dir=str(turbo_checkpoint), max_new_tokens=CAP)
    return engine, engine.load()


def test_turbo_engine(turbo):
    engine, info = turbo
    assert info.model == "chatterbox-turbo" and info.model_names == ("chatterbox", "chatterbox-turbo")
    assert not info.supports_exaggeration and not info.supports_voice_conversion
    first = engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)
    again = engine.synthesize(TEXT, SynthesisSettings(exaggeration=1.5, cfg_weight=0.0), BUILTIN, seed=1)
    assert 0 < first.output_tokens <= CAP
    # turbo appends three silence tokens before vocoding
    assert len(first.audio) == (first.extra["vocoded_tokens"] + 3) * SAMPLES_PER_TOKEN
    assert np.array_equal(first.audio, again.audio)          # turbo ignores exaggeration and CFG
    with pytest.raises(EngineError):
        engine.convert_voice(np.zeros(16000, np.float32), BUILTIN, 0)


def test_turbo_speaks_its_tags_each_as_one_token(turbo):
    """The tags EngineInfo lists are added tokens of turbo's tokenizer, one id each even inside a text
    (the random checkpoint's tokenizer has them as the released one does), and a tagged text speaks."""
    engine, info = turbo
    assert info.tags == TURBO_TAGS and len(set(info.tags)) == 19
    ids = [engine._tokenize(f"[{tag}]", None).reshape(-1).tolist() for tag in info.tags]
    assert all(len(tag_ids) == 1 for tag_ids in ids) and len({tag_ids[0] for tag_ids in ids}) == 19
    assert ids == [[engine._tts.tokenizer.convert_tokens_to_ids(f"[{tag}]")] for tag in info.tags]
    text = "Oh, that is funny [laugh] anyway, [clear throat] where were we?"
    tokens = engine._tokenize(engine._punc_norm(text), None).reshape(-1).tolist()
    laugh, clear_throat = ids[info.tags.index("laugh")][0], ids[info.tags.index("clear throat")][0]
    assert tokens.count(laugh) == 1 and tokens.count(clear_throat) == 1
    result = engine.synthesize(text, SynthesisSettings(), BUILTIN, seed=1)
    assert result.input_tokens == len(tokens)
    assert 0 < result.output_tokens <= CAP
    assert result.audio.dtype == np.float32 and np.isfinite(result.audio).all()
    assert len(result.audio) == (result.extra["vocoded_tokens"] + 3) * SAMPLES_PER_TOKEN
