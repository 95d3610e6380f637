"""hibari's own alignment: phoneme durations from its duration predictor, mapped onto words.

hibari's ONNX graph predicts a whole number of frames per phoneme id (``/Cast_32_output_0``, the
input of the CumSum that builds its alignment matrix; a frame is two 12.5 ms vocoder hops in 0.2.x,
read off the audio length) but does not output it. ``with_output``
adds that tensor to the graph's outputs by appending a ValueInfo to the serialized model (plain
protobuf wire format: the ``onnx`` package is not a runtime dependency), so one run yields audio
and durations, bit for bit the audio it made before. A hibari build without that tensor loads
without it, and the model worker estimates its timings instead.

The phoneme string keeps a space where the text had one, so the spoken "phoneme words" are the
space-separated groups; punctuation marks are ids too (their frames are the pauses). Text words map
one to one onto groups when the counts agree; where the G2P expanded a word ("1,250" is five
groups, "$9.99" six), each word's count comes from phonemizing it alone (workers/timings.py
``spread_over_groups`` absorbs any disagreement left).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from workers.timings import Word, split_words, spread_over_groups

DURATIONS = "/Cast_32_output_0"       # int64 [ids]: frames per phoneme id (hibari 0.2.x)
PUNCTUATION = frozenset(';:,.!?—…"“”()')
SPACE_SHARE = 0.5                     # of a space's frames, each neighbouring word takes this share


# -- the model ------------------------------------------------------------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def with_output(model: bytes, name: str) -> bytes:
    """A serialized ONNX ModelProto with tensor `name` added to its graph's outputs (field 7 of the
    model is the GraphProto, field 12 of the graph its repeated outputs; repeated fields may come in
    any order, so the new one is appended)."""
    i = 0
    while i < len(model):
        start = i
        key, i = _read_varint(model, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, i = _read_varint(model, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, body = _read_varint(model, i)
            i = body + length
            if field == 7:
                encoded = name.encode()
                value_info = b"\x0a" + _varint(len(encoded)) + encoded
                graph = model[body:i] + _varint((12 << 3) | 2) + _varint(len(value_info)) + value_info
                return model[:start] + _varint((7 << 3) | 2) + _varint(len(graph)) + graph + model[i:]
        else:
            raise ValueError(f"unexpected protobuf wire type {wire}")
    raise ValueError("no graph in the model")


def session_with_durations(model_path: str, threads: int) -> object | None:
    """An onnxruntime session that also outputs DURATIONS; None if this model has no such tensor."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3
    with open(model_path, "rb") as source:
        model = source.read()
    try:
        session = ort.InferenceSession(with_output(model, DURATIONS), options, providers=["CPUExecutionProvider"])
    except Exception:  # noqa: BLE001 - another hibari build: no engine timings, the estimate instead
        return None
    return session if len(session.get_outputs()) == 7 else None


# -- words ----------------------------------------------------------------------------------------
def phoneme_groups(phonemes: str, frames: np.ndarray, vocab: dict[str, int], offset: float,
                   frame_seconds: float) -> list[tuple[float, float]]:
    """The spoken groups of one sentence, as (start, end) seconds from `offset`: the frames of each
    group's phonemes, its punctuation left out, each space split between its two neighbours.
    `frames` holds one count per id, the two 0 pads around the sentence included."""
    ends = np.cumsum(frames)
    groups: list[tuple[float, float]] = []
    current: list[float] | None = None
    pending_space = 0.0               # the share of the last space the next group starts with
    k = 0                             # index of the previous id; 0 is the leading pad
    previous = ""                     # the previous id's character
    for char in phonemes:
        if char not in vocab:
            continue
        k += 1
        begin, end = float(ends[k - 1]), float(ends[k])
        if char == " ":
            if current is not None:
                if previous not in PUNCTUATION:     # a pause mark stays the pause it is
                    current[1] += SPACE_SHARE * (end - begin)
                groups.append((current[0], current[1]))
                current = None
            pending_space = SPACE_SHARE * (end - begin)
        elif char in PUNCTUATION:
            pending_space = 0.0
        elif current is None:
            current = [begin - pending_space, end]
        else:
            current[1] = end
        previous = char
    if current is not None:
        groups.append((current[0], current[1]))
    return [(offset + start * frame_seconds, offset + end * frame_seconds) for start, end in groups]


def spoken_groups(phonemes: str) -> int:
    """How many space-separated groups of a phoneme string are spoken (not punctuation alone)."""
    return sum(1 for group in phonemes.split() if any(c not in PUNCTUATION for c in group))


def words_for(text: str, groups: Sequence[tuple[float, float]],
              phonemize_word: Callable[[str], str]) -> tuple[Word, ...]:
    words = split_words(text)
    if len(words) == len(groups):
        counts: list[float] = [1.0] * len(words)
    else:
        counts = [float(spoken_groups(_safe(phonemize_word, word))) for word in words]
    return spread_over_groups(words, counts, groups)


def _safe(phonemize_word: Callable[[str], str], word: str) -> str:
    try:
        return phonemize_word(word)
    except Exception:  # noqa: BLE001 - the G2P fails on odd lone tokens: count the word as one group
        return "x"
