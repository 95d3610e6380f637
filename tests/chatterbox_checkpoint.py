"""Chatterbox checkpoints with random weights, laid out the way the upstream loaders read them.

`build_random_checkpoint` writes the English release files (`ChatterboxTTS.from_local` and
`ChatterboxVC.from_local` load them unchanged); with `multilingual=True` it also writes the files
`ChatterboxMultilingualTTS.from_local` reads, sharing the voice encoder and S3Gen weights.
`build_random_turbo_checkpoint` writes what `ChatterboxTurboTTS.from_local` reads, in its own directory.
Random weights never learn to stop, so every generation runs to its token cap: keep caps tiny.
"""
from __future__ import annotations

import json
import pathlib
import string
from collections.abc import Sequence

import numpy as np

SAMPLE_RATE = 24000                 # S3GEN_SR: the rate the conditioning reference is read at
EN_VOCAB_SIZE = 704                 # T3Config.english_only().text_tokens_dict_size
MTL_VOCAB_SIZE = 2454               # T3Config.multilingual().text_tokens_dict_size
EN_FILES = ("ve.safetensors", "t3_cfg.safetensors", "s3gen.safetensors", "tokenizer.json", "conds.pt")
MTL_FILES = ("ve.pt", "t3_mtl23ls_v2.safetensors", "s3gen.pt", "grapheme_mtl_merged_expanded_v1.json", "conds.pt")


def synthetic_voice(seconds: float, sample_rate: int = SAMPLE_RATE, *, f0: float = 120.0, seed: int = 0) -> np.ndarray:
    """A voiced, speech-like signal: a glottal pulse train with vibrato through three formant
    resonators, amplitude-modulated into ~4 syllables a second. float32 mono in [-1, 1]."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    pitch = f0 * (1.0 + 0.08 * np.sin(2 * np.pi * 0.7 * t) + 0.03 * np.sin(2 * np.pi * 5.0 * t))
    phase = np.cumsum(pitch) / sample_rate
    source = np.diff(np.floor(phase), prepend=0.0) + 0.02 * rng.standard_normal(n)
    signal = source
    for formant, bandwidth in ((700.0, 110.0), (1200.0, 120.0), (2600.0, 160.0)):
        r = np.exp(-np.pi * bandwidth / sample_rate)
        theta = 2 * np.pi * formant / sample_rate
        signal = lfilter([1.0 - r], [1.0, -2 * r * np.cos(theta), r * r], signal)
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, np.pi))
    signal = signal * envelope
    return (0.8 * signal / np.max(np.abs(signal))).astype(np.float32)


def write_wav(path: pathlib.Path, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> pathlib.Path:
    import soundfile

    soundfile.write(str(path), audio, sample_rate, subtype="PCM_16")
    return path


def _tokenizer_spec(vocab_size: int, extra_specials: list[str]) -> dict:
    """A real `tokenizers` BPE file shaped like the released one: [STOP]=0, [UNK]=1, [SPACE]=2,
    [START]=255 (T3Config's start/stop text tokens), the other specials, printable characters,
    a few merges, and filler entries up to exactly `vocab_size`."""
    specials = ["[STOP]", "[UNK]", "[SPACE]", "[START]", "[PAD]", "[SEP]", "[CLS]", "[MASK]", *extra_specials]
    merges = [("t", "h"), ("h", "e"), ("i", "n"), ("e", "r"), ("a", "n"), ("th", "e")]
    ordinary = [c for c in string.printable if not c.isspace()] + list("àáâäçèéêëíîïñóôöúûüß")
    tokens = [t for t in specials if t != "[START]"] + ordinary + ["".join(m) for m in merges]
    tokens += [f"[unused{i}]" for i in range(len(tokens), vocab_size - 1)]
    tokens.insert(255, "[START]")
    vocab = {token: i for i, token in enumerate(tokens)}
    assert len(vocab) == vocab_size and vocab["[STOP]"] == 0 and vocab["[START]"] == 255
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [
            {"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
             "normalized": False, "special": True}
            for t in specials
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": None,
        "decoder": None,
        "model": {
            "type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
            "vocab": vocab, "merges": [" ".join(m) for m in merges],
        },
    }


def _write_tokenizer(path: pathlib.Path, vocab_size: int, extra_specials: Sequence[str] = ()) -> None:
    from tokenizers import Tokenizer

    path.write_text(json.dumps(_tokenizer_spec(vocab_size, list(extra_specials)), ensure_ascii=False))
    assert Tokenizer.from_file(str(path)).get_vocab_size() == vocab_size


def _build_conditionals(t3, s3gen, ve, tokenizer_path: pathlib.Path, directory: pathlib.Path, seed: int,
                        seconds: float):
    """Run upstream `prepare_conditionals` on a synthetic voice: the same code made conds.pt."""
    from chatterbox.models.tokenizers import EnTokenizer
    from chatterbox.tts import ChatterboxTTS

    reference = write_wav(directory / "_reference.wav", synthetic_voice(seconds, seed=seed))
    try:
        tts = ChatterboxTTS(t3, s3gen, ve, EnTokenizer(str(tokenizer_path)), "cpu")
        tts.prepare_conditionals(str(reference), exaggeration=0.5)
    finally:
        reference.unlink()
    return tts.conds


def _write_multilingual(directory: pathlib.Path, s3gen, ve) -> None:
    import torch
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config
    from chatterbox.mtl_tts import SUPPORTED_LANGUAGES
    from safetensors.torch import save_file

    torch.save(ve.state_dict(), directory / "ve.pt")
    torch.save(s3gen.state_dict(), directory / "s3gen.pt")
    save_file(T3(T3Config.multilingual()).state_dict(), directory / "t3_mtl23ls_v2.safetensors")
    _write_tokenizer(directory / "grapheme_mtl_merged_expanded_v1.json", MTL_VOCAB_SIZE,
                     [f"[{code}]" for code in SUPPORTED_LANGUAGES])


def build_random_checkpoint(directory: pathlib.Path, *, seed: int = 0, multilingual: bool = False,
                            reference_seconds: float = 6.0) -> pathlib.Path:
    """Write a random-weight checkpoint into `directory` and return it (about 3.2 GB; with
    `multilingual`, 2.1 GB more). Deterministic for a given seed. The built-in voice comes from
    `reference_seconds` of synthetic voice (the S3Gen prompt, and its cost per call, scale with it)."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.t3 import T3
    from chatterbox.models.voice_encoder import VoiceEncoder
    from safetensors.torch import save_file

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t3, s3gen, ve = T3().eval(), S3Gen().eval(), VoiceEncoder().eval()
    save_file(ve.state_dict(), directory / "ve.safetensors")
    save_file(t3.state_dict(), directory / "t3_cfg.safetensors")
    save_file(s3gen.state_dict(), directory / "s3gen.safetensors")
    _write_tokenizer(directory / "tokenizer.json", EN_VOCAB_SIZE)
    conds = _build_conditionals(t3, s3gen, ve, directory / "tokenizer.json", directory, seed, reference_seconds)
    conds.save(directory / "conds.pt")
    del t3                      # 2 GB, before the multilingual T3 is built
    if multilingual:
        _write_multilingual(directory, s3gen, ve)
    return directory


TURBO_VOCAB_SIZE = 50276            # ChatterboxTurboTTS.from_local expects this many text tokens
GPT2_VOCAB_SIZE = 50257             # GPT-2's byte-level BPE, <|endoftext|> last; the turbo tags come after it
# The released turbo tokenizer's added tokens (written out here, not taken from workers/engines/tags.py,
# so the engine's list is checked against them): 50257 + 19 = TURBO_VOCAB_SIZE.
TURBO_TAG_TOKENS = (
    "[laugh]", "[chuckle]", "[gasp]", "[cough]", "[sigh]", "[groan]", "[sniff]", "[shush]", "[clear throat]",
    "[whispering]", "[angry]", "[fear]", "[surprised]", "[crying]", "[happy]", "[sarcastic]", "[dramatic]",
    "[narration]", "[advertisement]",
)
TURBO_FILES = ("ve.safetensors", "t3_turbo_v1.safetensors", "s3gen_meanflow.safetensors", "tokenizer.json",
               "tokenizer_config.json", "conds.pt")


def _write_turbo_tokenizer(directory: pathlib.Path) -> None:
    """A byte-level BPE (GPT-2 style, no merges) padded to GPT-2's vocabulary size, then the turbo tags
    as added special tokens (one id each, whatever surrounds them), saved the way
    `AutoTokenizer.from_pretrained(ckpt_dir)` reads it."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tokens = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens += [f"<|filler{i}|>" for i in range(len(tokens), GPT2_VOCAB_SIZE - 1)] + ["<|endoftext|>"]
    tokenizer = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token="<|endoftext|>",
                                   bos_token="<|endoftext|>", unk_token="<|endoftext|>")
    fast.add_special_tokens({"additional_special_tokens": [AddedToken(tag, special=True, normalized=False)
                                                           for tag in TURBO_TAG_TOKENS]})
    fast.save_pretrained(str(directory))
    assert len(fast) == TURBO_VOCAB_SIZE
    assert fast.convert_tokens_to_ids(list(TURBO_TAG_TOKENS)) == list(range(GPT2_VOCAB_SIZE, TURBO_VOCAB_SIZE))


def _turbo_t3():
    from chatterbox.models.t3 import T3
    from chatterbox.models.t3.modules.t3_config import T3Config

    hp = T3Config(text_tokens_dict_size=TURBO_VOCAB_SIZE)   # the settings ChatterboxTurboTTS.from_local uses
    hp.llama_config_name = "GPT2_medium"
    hp.speech_tokens_dict_size = 6563
    hp.input_pos_emb = None
    hp.speech_cond_prompt_len = 375
    hp.use_perceiver_resampler = False
    hp.emotion_adv = False
    return T3(hp).eval()


def build_random_turbo_checkpoint(directory: pathlib.Path, *, seed: int = 0,
                                  reference_seconds: float = 6.0) -> pathlib.Path:
    """Write what `ChatterboxTurboTTS.from_local` reads (about 2.5 GB; its own directory: its
    tokenizer.json is a different file). Turbo wants a built-in voice over 5 s long."""
    import torch
    from chatterbox.models.s3gen import S3Gen
    from chatterbox.models.voice_encoder import VoiceEncoder
    from chatterbox.tts_turbo import ChatterboxTurboTTS
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    t3, s3gen, ve = _turbo_t3(), S3Gen(meanflow=True).eval(), VoiceEncoder().eval()
    save_file(ve.state_dict(), directory / "ve.safetensors")
    save_file(t3.state_dict(), directory / "t3_turbo_v1.safetensors")
    save_file(s3gen.state_dict(), directory / "s3gen_meanflow.safetensors")
    _write_turbo_tokenizer(directory)
    reference = write_wav(directory / "_reference.wav", synthetic_voice(reference_seconds, seed=seed))
    try:
        tts = ChatterboxTurboTTS(t3, s3gen, ve, AutoTokenizer.from_pretrained(str(directory)), "cpu")
        tts.prepare_conditionals(str(reference))
    finally:
        reference.unlink()
    tts.conds.save(directory / "conds.pt")
    return directory
