"""ChatterboxEngine.describe, unload, weight_bytes and the per-model checkpoint layout (issue 20), on
the real chatterbox-tts code with the random-weight checkpoint (no hub).

One engine goes through the whole life the model worker gives it: load, speak, unload (twice),
reload and speak again, then two more unload/reload cycles; the module's tests read what the
fixture measured. On the CPU an unload drops the model and a reload reads the checkpoint again; on
a GPU the weights wait in host memory (the CUDA test, skipped without one). Each load is ~8 s and
each generation (8 tokens) ~8 s on two cores: about 2 minutes, plus 20 s for the multilingual model.
"""
from __future__ import annotations

import gc
import logging
import os
import time

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before huggingface_hub is imported: it reads this once
pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (see requirements-chatterbox.txt)")

import torch  # noqa: E402

from workers.engines.base import SynthesisSettings, VoiceRef  # noqa: E402
from workers.engines.chatterbox import ChatterboxEngine  # noqa: E402
from workers.engines.tags import TURBO_TAGS  # noqa: E402

pytestmark = [pytest.mark.chatterbox, pytest.mark.timeout(1200)]   # the module fixture runs inside the first test

CAP = 8
TEXT = "Hello there, this is a test."
BUILTIN = VoiceRef("default")


def _rss() -> int:
    """This process's resident set size in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _timed_load(engine: ChatterboxEngine) -> tuple[object, float]:
    start = time.perf_counter()
    info = engine.load()
    return info, time.perf_counter() - start


def _module_bytes(engine: ChatterboxEngine) -> int:
    """Parameters and buffers of T3, S3Gen and the voice encoder (a lower bound of weight_bytes)."""
    modules = (engine._tts.t3, engine._tts.s3gen, engine._tts.ve)
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def model_root(chatterbox_checkpoint, tmp_path_factory):
    """A checkpoint root with one subdirectory per model; only standard/ here (the shared checkpoint)."""
    root = tmp_path_factory.mktemp("models")
    (root / "standard").symlink_to(chatterbox_checkpoint, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def life(model_root, reference_wav):
    """One CPU engine's load, speech, unload and reload cycles, and what each step measured."""
    records = _Records()
    logger = logging.getLogger("workers.engines.chatterbox")
    logger.addHandler(records)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    clone = VoiceRef("alice", str(reference_wav))
    engine = ChatterboxEngine(checkpoint_dir=str(model_root), device="cpu", max_new_tokens=CAP)
    out: dict = {"engine": engine, "log": records.messages}
    try:
        out["described"] = engine.describe()      # imports chatterbox: the load below times the weights alone
        gc.collect()
        out["rss_empty"] = _rss()
        out["info"], out["cold_load_s"] = _timed_load(engine)
        out["rss_loaded"] = [_rss()]
        out["weights"] = engine.weight_bytes()
        out["module_bytes"] = _module_bytes(engine)
        out["before"] = {name: engine.synthesize(TEXT, SynthesisSettings(), voice, seed=1)
                         for name, voice in (("builtin", BUILTIN), ("clone", clone))}
        out["rss_spoken"] = _rss()
        engine.unload()
        out["rss_unloaded"] = [_rss()]
        out["weights_unloaded"] = engine.weight_bytes()
        out["cache_unloaded"] = engine.cache_stats()["conditionals"]
        engine.unload()                             # a second unload: nothing to do
        out["rss_unloaded_twice"] = _rss()
        out["reload_s"] = []
        for cycle in range(3):
            _, seconds = _timed_load(engine)
            out["reload_s"].append(seconds)
            out["rss_loaded"].append(_rss())
            if cycle == 0:
                out["weights_reloaded"] = engine.weight_bytes()
                out["after"] = {name: engine.synthesize(TEXT, SynthesisSettings(), voice, seed=1)
                                for name, voice in (("builtin", BUILTIN), ("clone", clone))}
                out["cache_reloaded"] = engine.cache_stats()["conditionals"]
            if cycle == 1:
                left_open = engine.open_stream(TEXT, SynthesisSettings(), BUILTIN, seed=1)
                engine.step([left_open])
            if cycle < 2:
                engine.unload()
                out["rss_unloaded"].append(_rss())
            if cycle == 1:
                out["stepped_after_unload"] = engine.step([left_open])
                left_open.close()
                del left_open
        print(f"\nchatterbox-standard on CPU: weight_bytes {out['weights'] / 1e9:.3f} GB; RSS empty "
              f"{out['rss_empty'] / 1e9:.3f} GB, loaded {out['rss_loaded'][0] / 1e9:.3f} GB, after speaking "
              f"{out['rss_spoken'] / 1e9:.3f} GB, unloaded {[round(r / 1e9, 3) for r in out['rss_unloaded']]} GB, "
              f"reloaded {[round(r / 1e9, 3) for r in out['rss_loaded'][1:]]} GB; cold load "
              f"{out['cold_load_s']:.1f} s, load after unload {[round(s, 1) for s in out['reload_s']]} s")
        yield out
    finally:
        engine.unload()
        logger.removeHandler(records)
        logger.setLevel(previous_level)


# -- describe ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["standard", "turbo", "multilingual"])
def test_describe_reads_no_checkpoint(model, tmp_path):
    engine = ChatterboxEngine(model, device="cpu", checkpoint_dir=str(tmp_path / "missing"), max_new_tokens=CAP)
    info = engine.describe()
    assert info.engine == "chatterbox" and info.model == f"chatterbox-{model}" and info.device == "cpu"
    assert info.sample_rate == 24000 and info.model_names == ("chatterbox", f"chatterbox-{model}")
    assert info.supports_cloning
    assert info.supports_exaggeration == info.supports_voice_conversion == (model != "turbo")
    assert info.tags == (TURBO_TAGS if model == "turbo" else ())
    if model == "multilingual":
        assert {"en", "de", "zh", "ja"} <= set(info.languages) and list(info.languages) == sorted(info.languages)
    else:
        assert info.languages == ()
    assert engine._tts is None and engine.weight_bytes() == 0


def test_describe_equals_what_load_reports(life):
    assert life["described"] == life["info"]
    assert life["engine"].describe() == life["info"]          # loaded or not


# -- the per-model checkpoint layout --------------------------------------------------------------------

def test_a_root_with_a_subdirectory_per_model_loads_the_model_s_one(life, model_root):
    engine = life["engine"]
    assert engine.checkpoint_path() == str(model_root / "standard")
    assert life["info"].model == "chatterbox-standard" and life["before"]["builtin"].audio.size > 0
    loads = [m for m in life["log"] if m.startswith("loading chatterbox-standard from")]
    assert len(loads) == 4 and all(str(model_root / "standard") in m and "subdirectory" in m for m in loads)


def test_a_one_model_directory_is_used_as_it_is(chatterbox_checkpoint, model_root):
    flat = ChatterboxEngine(checkpoint_dir=str(chatterbox_checkpoint), device="cpu")
    assert flat.checkpoint_path() == str(chatterbox_checkpoint)
    # a root without the model's subdirectory is taken as that model's own directory
    other = ChatterboxEngine("multilingual", checkpoint_dir=str(model_root), device="cpu")
    assert other.checkpoint_path() == str(model_root)
    assert ChatterboxEngine(device="cpu").checkpoint_path() is None          # the hub


# -- unload on the CPU --------------------------------------------------------------------------------

def test_weight_bytes_counts_every_module_of_the_loaded_model(life):
    # T3, S3Gen, the voice encoder, plus the watermarker's network and S3Gen's positional encodings
    assert life["module_bytes"] <= life["weights"] <= life["module_bytes"] + 100 * 2**20
    assert life["weights_reloaded"] == life["weights"]


def test_unload_frees_the_weights_memory(life):
    assert life["weights_unloaded"] == 0
    drop = life["rss_spoken"] - life["rss_unloaded"][0]
    assert drop >= life["weights"] / 2, f"RSS fell by {drop / 1e9:.2f} GB of {life['weights'] / 1e9:.2f} GB"
    # the cached conditionals went with the model; their counts stay
    assert life["cache_unloaded"]["entries"] == 0 and life["cache_unloaded"]["misses"] == 1
    assert abs(life["rss_unloaded_twice"] - life["rss_unloaded"][0]) < 50 * 2**20


def test_an_unloaded_engine_refuses_to_speak(model_root):
    engine = ChatterboxEngine(checkpoint_dir=str(model_root), device="cpu", max_new_tokens=CAP)
    engine.unload()                                     # never loaded: nothing to do
    with pytest.raises(RuntimeError, match="not loaded"):
        engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)


def test_a_stream_left_open_across_an_unload_fails_alone(life):
    [result] = life["stepped_after_unload"]
    assert isinstance(result, RuntimeError) and "unloaded" in str(result)


def test_reload_speaks_as_before(life):
    # a reload on the CPU reads the same checkpoint: the same text, voice and seed give the same samples
    for name in ("builtin", "clone"):
        before, after = life["before"][name], life["after"][name]
        assert after.extra["speech_tokens"] == before.extra["speech_tokens"]
        assert np.array_equal(after.audio, before.audio), name
    assert life["after"]["clone"].extra["conditionals"] == "computed"       # the cache started empty
    assert life["cache_reloaded"]["entries"] == 1 and life["cache_reloaded"]["misses"] == 2


def test_unload_reload_cycles_do_not_leak(life):
    loaded, unloaded, weights = life["rss_loaded"], life["rss_unloaded"], life["weights"]
    assert abs(loaded[-1] - loaded[0]) <= 0.15 * loaded[0]
    # what stays after each unload does not grow from cycle to cycle
    assert max(unloaded) - unloaded[0] <= 0.05 * weights, [round(r / 1e9, 3) for r in unloaded]
    assert life["engine"].weight_bytes() == weights        # loaded again after the third reload


# -- the watermark ------------------------------------------------------------------------------------

def test_the_watermark_runs_under_inference_mode(life, monkeypatch):
    engine = life["engine"]
    watermarker = engine._tts.watermarker
    apply, modes = watermarker.apply_watermark, []

    def recording(*args, **kwargs):
        modes.append(torch.is_inference_mode_enabled())
        return apply(*args, **kwargs)

    monkeypatch.setattr(watermarker, "apply_watermark", recording)
    assert not torch.is_inference_mode_enabled()
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 4800).astype(np.float32)
    marked = engine._watermark(audio)
    assert marked.dtype == np.float32 and marked.size == audio.size
    # voice conversion's whole-chunk vocoding marks through _watermark as well
    wav = engine._vocode(torch.tensor([1, 2, 3, 4, 5, 6]), engine._builtin.gen, watermark=True)
    assert wav.size > 0 and modes == [True, True]
    # and the streamer's windows do: its callback is the engine's _watermark
    assert engine._streamer.watermark == engine._watermark


# -- other models, other devices --------------------------------------------------------------------

def test_multilingual_describe_equals_load_and_unloads(chatterbox_checkpoint):
    engine = ChatterboxEngine("multilingual", device="cpu", checkpoint_dir=str(chatterbox_checkpoint),
                              max_new_tokens=CAP)
    described = engine.describe()
    try:
        assert engine.load() == described
        assert engine.weight_bytes() > 2 * 10**9
    finally:
        engine.unload()
    assert engine.weight_bytes() == 0 and engine._tts is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the host copy exists only for weights on a GPU")
def test_gpu_unload_keeps_a_host_copy_and_reload_reads_no_file(chatterbox_checkpoint, monkeypatch):
    from chatterbox.tts import ChatterboxTTS

    gc.collect()
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    engine = ChatterboxEngine(checkpoint_dir=str(chatterbox_checkpoint), device="cuda", max_new_tokens=CAP)
    _, cold = _timed_load(engine)
    weights = engine.weight_bytes()
    assert weights > 3 * 10**9 and torch.cuda.memory_allocated() - base >= 0.95 * weights
    first = engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)
    used = engine.weight_bytes()                    # S3Gen's positional encodings followed their input
    engine.unload()
    torch.cuda.synchronize()
    assert engine.weight_bytes() == 0
    left = torch.cuda.memory_allocated() - base
    assert left < 64 * 2**20, f"{left / 2**20:.0f} MiB still allocated after unload"

    def no_disk(*args, **kwargs):
        raise AssertionError("load after unload read the checkpoint")

    monkeypatch.setattr(ChatterboxTTS, "from_local", no_disk)
    monkeypatch.setattr(ChatterboxTTS, "from_pretrained", no_disk)
    try:
        _, warm = _timed_load(engine)
        assert engine.weight_bytes() == weights
        again = engine.synthesize(TEXT, SynthesisSettings(), BUILTIN, seed=1)
        assert engine.weight_bytes() == used
        assert again.extra["speech_tokens"] == first.extra["speech_tokens"]
        assert np.allclose(again.audio, first.audio, atol=1e-4)
        print(f"\nchatterbox-standard on {engine.device}: weight_bytes {weights / 1e9:.3f} GB, "
              f"{left / 2**20:.1f} MiB left after unload; cold load {cold:.1f} s, from host memory {warm:.1f} s")
    finally:
        engine.unload()
