"""Tests for chatterbox_server.audio.encoders: every response format, whole and progressive."""

import hashlib
import importlib
import io
import struct
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np
import pytest

# The repository root is not on sys.path by default (pytest only prepends tests/unit/).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
encoders = importlib.import_module("chatterbox_server.audio.encoders")
CONTENT_TYPES = encoders.CONTENT_TYPES
FILE_EXTENSIONS = encoders.FILE_EXTENSIONS
FORMATS = encoders.FORMATS
StreamEncoder = encoders.StreamEncoder
encode_whole = encoders.encode_whole
wav_header = encoders.wav_header

SR = 24_000
N_SAMPLES = 2 * SR + 111  # ~2 s, deliberately not a multiple of any codec frame size
CHUNK_SAMPLES = (1000, 4800, 7, 2401, 333, 12_000)
LOSSLESS = ("wav", "flac", "pcm")
LOSSY = ("mp3", "opus", "aac", "mulaw", "alaw")
G711 = ("mulaw", "alaw")
RAW = ("pcm", *G711)  # no header: nothing to probe, nothing for empty audio

# How much longer (s) than the input a decoded stream may be. Lossless formats and
# Ogg Opus (granule position + pre-skip trim exactly) are sample-exact. aac: ADTS
# cannot signal the 1024-sample priming, plus up to 1023 samples of final-frame
# padding (measured 43-85 ms). mp3: ~1105 samples encoder delay + padding to
# 576-sample frames; the streamed file has no Xing/LAME header to trim them
# (measured 48-72 ms; encode_whole's file has one and decodes sample-exact).
DURATION_TOLERANCE_S = {
    "wav": 0.0,
    "pcm": 0.0,
    "flac": 0.0,
    "opus": 0.0,
    "aac": 2 * 1024 / SR,
    "mp3": 3 * 576 / SR,
    "mulaw": 0.0,  # resampled to 8 kHz: exactly len * 8000 / 24000 samples
    "alaw": 0.0,
}
RMS_TOLERANCE = 0.30


def _speech_like(n: int = N_SAMPLES, sr: int = SR) -> np.ndarray:
    """Harmonics of a gliding pitch under a syllable-rate envelope, as int16."""
    t = np.arange(n) / sr
    f0 = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5, 8))
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0.0, None) ** 0.5
    audio = 0.25 * voice * envelope
    return np.round(audio * 32767).astype("<i2")


def _chunks(pcm: bytes) -> list[bytes]:
    """Split PCM into chunks of varying sample counts, cycling CHUNK_SAMPLES."""
    out, pos, i = [], 0, 0
    while pos < len(pcm):
        size = CHUNK_SAMPLES[i % len(CHUNK_SAMPLES)] * 2
        out.append(pcm[pos : pos + size])
        pos, i = pos + size, i + 1
    return out


def _stream(fmt: str, pcm: bytes, chunks: list[bytes] | None = None, sample_rate: int = SR) -> bytes:
    """Encode through StreamEncoder as the server would: header, feeds, finish."""
    enc = StreamEncoder(fmt, sample_rate)
    parts = [enc.header()]
    parts += [enc.feed(c) for c in (chunks if chunks is not None else _chunks(pcm))]
    parts.append(enc.finish())
    return b"".join(parts)


def _decode(data: bytes, fmt: str | None = None, rate: int = 8000) -> tuple[np.ndarray, int]:
    """Decode with PyAV to float mono in [-1, 1] and the decoded sample rate.

    Raw G.711 has no header to probe: ``fmt`` (mulaw, alaw) and ``rate`` name it."""
    pieces = []
    raw = {"format": fmt, "options": {"sample_rate": str(rate)}} if fmt in G711 else {}
    with av.open(io.BytesIO(data), mode="r", **raw) as container:
        for frame in container.decode(audio=0):
            rate = frame.sample_rate
            arr = frame.to_ndarray()
            if arr.dtype == np.int16:
                arr = arr / 32768.0
            elif arr.dtype == np.int32:
                arr = arr / 2147483648.0
            pieces.append(np.asarray(arr, dtype=np.float64).reshape(-1))
    samples = np.concatenate(pieces) if pieces else np.zeros(0)
    return samples, rate


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0


def _envelope(x: np.ndarray, sr: int, win_s: float = 0.01) -> np.ndarray:
    """RMS in fixed windows of win_s seconds."""
    win = int(sr * win_s)
    n = x.size // win
    return np.sqrt(np.mean(np.square(x[: n * win].reshape(n, win)), axis=1))


def _envelope_correlation(ref: np.ndarray, ref_sr: int, out: np.ndarray, out_sr: int) -> float:
    """Best correlation of 10 ms RMS envelopes over lags of 0..120 ms (codec delay)."""
    a, b = _envelope(ref, ref_sr), _envelope(out, out_sr)
    best = -1.0
    for lag in range(13):
        n = min(a.size, b.size - lag)
        best = max(best, float(np.corrcoef(a[:n], b[lag : lag + n])[0, 1]))
    return best


def _assert_close_to_input(fmt: str, data: bytes, ref: np.ndarray) -> None:
    """Decoded audio has the input's duration, level and shape (exact for lossless)."""
    if fmt == "pcm":
        assert data == ref.tobytes()
        return
    out, rate = _decode(data, fmt)
    assert rate in ((8000,) if fmt in G711 else (SR, 48_000))
    in_s, out_s = ref.size / SR, out.size / rate
    assert in_s - 0.001 <= out_s <= in_s + DURATION_TOLERANCE_S[fmt] + 0.001, (fmt, in_s, out_s)
    ref_f = ref / 32768.0
    if fmt in LOSSLESS:
        np.testing.assert_array_equal(np.round(out * 32768).astype(np.int16), ref)
        return
    assert abs(_rms(out) / _rms(ref_f) - 1.0) < RMS_TOLERANCE, (fmt, _rms(out), _rms(ref_f))
    assert _envelope_correlation(ref_f, SR, out, rate) > 0.9


def _has_magic(fmt: str, data: bytes) -> bool:
    """True if data starts the way a file of this format must."""
    if fmt == "wav":
        return data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    if fmt == "mp3":
        return data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    if fmt == "opus":
        return data[:4] == b"OggS"
    if fmt == "aac":
        return data[0] == 0xFF and data[1] in (0xF1, 0xF9)
    if fmt == "flac":
        return data[:4] == b"fLaC"
    return len(data) > 0  # pcm: no magic


def _streaminfo(flac: bytes) -> tuple[int, bytes]:
    """(total samples, MD5) from a native FLAC file's STREAMINFO block."""
    assert flac[:4] == b"fLaC" and flac[4] & 0x7F == 0
    info = flac[8:42]
    total = int.from_bytes(info[13:18], "big") & ((1 << 36) - 1)
    return total, info[18:34]


@pytest.fixture(scope="module")
def ref() -> np.ndarray:
    return _speech_like()


def test_tables_cover_all_formats() -> None:
    assert set(CONTENT_TYPES) == set(FILE_EXTENSIONS) == set(FORMATS)
    assert CONTENT_TYPES["mp3"] == "audio/mpeg"
    assert StreamEncoder("opus", SR).content_type == "audio/opus"


@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_roundtrip(fmt: str, ref: np.ndarray) -> None:
    data = _stream(fmt, ref.tobytes())
    assert _has_magic(fmt, data)
    _assert_close_to_input(fmt, data, ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_roundtrip(fmt: str, ref: np.ndarray) -> None:
    data = encode_whole(fmt, ref.tobytes(), SR)
    assert _has_magic(fmt, data)
    _assert_close_to_input(fmt, data, ref)
    if fmt == "mp3":  # the Xing/LAME header lets the decoder trim delay and padding
        out, rate = _decode(data)
        assert abs(out.size / rate - ref.size / SR) < 0.001


@pytest.mark.parametrize("fmt", FORMATS)
def test_odd_byte_chunk_boundaries(fmt: str, ref: np.ndarray) -> None:
    """Chunks that split a sample in half are reassembled."""
    pcm = ref.tobytes()
    chunks = [pcm[i : i + 4801] for i in range(0, len(pcm), 4801)]
    _assert_close_to_input(fmt, _stream(fmt, pcm, chunks), ref)


@pytest.mark.parametrize("fmt", FORMATS)
def test_progressive_output(fmt: str, ref: np.ndarray) -> None:
    """Audio comes out after the first 0.5 s chunk, not only at finish()."""
    enc = StreamEncoder(fmt, SR)
    first = enc.header() + enc.feed(ref[: SR // 2].tobytes())
    assert first and _has_magic(fmt, first)
    if fmt in ("wav", "pcm"):
        assert len(first) >= SR  # 0.5 s of PCM16 passes straight through
        return
    # The prefix alone is decodable and already holds most of the 0.5 s fed
    # (minus the codec lookahead and the Ogg page duration).
    out, rate = _decode(first, fmt)
    assert out.size / rate >= 0.35, (fmt, out.size / rate)


@pytest.mark.parametrize("fmt", FORMATS)
def test_header_is_optional(fmt: str, ref: np.ndarray) -> None:
    """Without header(), the first feed() carries the header bytes."""
    pcm = ref.tobytes()
    enc = StreamEncoder(fmt, SR)
    data = enc.feed(pcm) + enc.finish()
    assert _has_magic(fmt, data)
    assert enc.header() == b""
    _assert_close_to_input(fmt, data, ref)


def test_whole_wav_has_exact_sizes(ref: np.ndarray) -> None:
    pcm = ref.tobytes()
    data = encode_whole("wav", pcm, SR)
    riff, riff_size, wave_id = struct.unpack("<4sI4s", data[:12])
    assert (riff, wave_id, riff_size) == (b"RIFF", b"WAVE", len(data) - 8)
    assert data[36:40] == b"data" and struct.unpack("<I", data[40:44])[0] == len(pcm)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        assert w.getnframes() == ref.size
        assert w.readframes(ref.size) == pcm


def test_wav_header_exact_and_placeholder() -> None:
    assert len(wav_header(SR)) == len(wav_header(SR, data_bytes=10)) == 44
    assert struct.unpack("<I", wav_header(SR, data_bytes=10)[4:8])[0] == 46
    header = wav_header(SR)
    assert header[4:8] == header[40:44] == b"\xff\xff\xff\xff"
    with wave.open(io.BytesIO(header)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
    assert StreamEncoder("wav", SR).header() == header


def test_wav_without_streaming_header(ref: np.ndarray) -> None:
    enc = StreamEncoder("wav", SR, streaming_wav_header=False)
    assert enc.header() == b""
    assert enc.feed(ref.tobytes()) + enc.finish() == ref.tobytes()


def test_flac_streaminfo() -> None:
    """Whole flac has total samples and MD5; streamed flac leaves them unset (0)."""
    pcm = _speech_like().tobytes()
    assert _streaminfo(encode_whole("flac", pcm, SR)) == (N_SAMPLES, hashlib.md5(pcm).digest())
    assert _streaminfo(_stream("flac", pcm)) == (0, bytes(16))


def test_other_sample_rate_for_opus() -> None:
    """22050 Hz is not an Opus rate: it is resampled, not rejected."""
    ref = _speech_like(22_050, 22_050)
    out, rate = _decode(_stream("opus", ref.tobytes(), sample_rate=22_050))
    assert rate == 48_000 and abs(out.size / rate - 1.0) < 0.01


@pytest.mark.parametrize("fmt", FORMATS)
def test_empty_audio(fmt: str) -> None:
    enc = StreamEncoder(fmt, SR)
    data = enc.header() + enc.feed(b"") + enc.finish()
    whole = encode_whole(fmt, b"", SR)
    if fmt in RAW:
        assert data == whole == b""
        return
    for blob in (data, whole):  # lossy codecs encode one silent sample to stay decodable
        assert _has_magic(fmt, blob)
        out, _ = _decode(blob, fmt)
        assert out.size <= (0 if fmt in LOSSLESS else 2 * 2048)
        assert not np.any(out)


def test_unknown_format() -> None:
    with pytest.raises(ValueError):
        StreamEncoder("ogg", SR)
    with pytest.raises(ValueError):
        encode_whole("m4a", b"\x00\x00", SR)


def test_feed_after_finish() -> None:
    enc = StreamEncoder("mp3", SR)
    enc.finish()
    assert enc.finish() == b""
    with pytest.raises(RuntimeError):
        enc.feed(b"\x00\x00")


@pytest.mark.parametrize("fmt", FORMATS)
def test_encode_cost(fmt: str) -> None:
    """Creating an encoder and streaming 1 s through it takes well under 50 ms (CPU time)."""
    pcm = _speech_like(SR).tobytes()
    chunks = [pcm[i : i + 4800] for i in range(0, len(pcm), 4800)]
    best = float("inf")
    for _ in range(5):
        start = time.process_time()
        _stream(fmt, pcm, chunks)
        best = min(best, time.process_time() - start)
    assert best < 0.05, (fmt, best)


# -- output rates: resampling, G.711, float PCM ---------------------------------------------------
OUTPUT_RATES = encoders.OUTPUT_RATES
output_rate_for = encoders.output_rate_for


def _sine(n: int = SR, sr: int = SR, hz: float = 440.0, level: float = 0.3) -> np.ndarray:
    return np.round(level * 32767 * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype("<i2")


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2")


def _random_pieces(pcm: bytes, count: int, seed: int = 7) -> list[bytes]:
    """``pcm`` cut at count - 1 random byte offsets (odd ones included: a sample may be split)."""
    cuts = sorted(np.random.default_rng(seed).choice(np.arange(1, len(pcm)), count - 1, replace=False))
    return [pcm[a:b] for a, b in zip([0, *cuts], [*cuts, len(pcm)], strict=True)]


def _mulaw_reference(data: bytes) -> np.ndarray:
    """G.711 mu-law expansion, written out from the standard (as FFmpeg's ulaw2linear)."""
    u = ~np.frombuffer(data, dtype=np.uint8).astype(np.int32) & 0xFF
    magnitude = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where(u & 0x80, 0x84 - magnitude, magnitude - 0x84)


def _alaw_reference(data: bytes) -> np.ndarray:
    """G.711 A-law expansion, written out from the standard (as FFmpeg's alaw2linear)."""
    a = np.frombuffer(data, dtype=np.uint8).astype(np.int32) ^ 0x55
    mantissa, segment = a & 0x0F, (a >> 4) & 0x07
    magnitude = np.where(segment == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(segment - 1, 0))
    return np.where(a & 0x80, magnitude, -magnitude)


@pytest.mark.parametrize("out_rate", OUTPUT_RATES)
def test_resampling_in_pieces_equals_resampling_whole(out_rate: int) -> None:
    """37 random-size pieces (sample halves included) give what one piece gives: no clicks or lost samples
    at the joins, and finish() flushes the resampler's tail."""
    pcm = _sine().tobytes()
    enc = StreamEncoder("pcm", SR, output_rate=out_rate)
    assert enc.output_rate == out_rate
    pieces = b"".join([enc.header(), *(enc.feed(p) for p in _random_pieces(pcm, 37)), enc.finish()])
    one = StreamEncoder("pcm", SR, output_rate=out_rate)
    whole = one.feed(pcm) + one.finish()
    assert abs(len(pieces) // 2 - out_rate) <= 1          # 1 s in, 1 s out
    np.testing.assert_allclose(_samples(pieces), _samples(whole), atol=1)
    assert encode_whole("pcm", pcm, SR, out_rate) == whole


@pytest.mark.parametrize("out_rate", OUTPUT_RATES)
def test_resampled_sine_keeps_its_pitch_level_and_phase(out_rate: int) -> None:
    out = _samples(encode_whole("pcm", _sine().tobytes(), SR, out_rate)).astype(np.float64)
    ideal = 0.3 * 32767 * np.sin(2 * np.pi * 440.0 * np.arange(out.size) / out_rate)
    inner = slice(out_rate // 100, -out_rate // 100)        # the edges ring: the sine starts abruptly
    assert np.max(np.abs(out[inner] - ideal[inner])) < 0.01 * 32767


@pytest.mark.parametrize("fmt", G711)
def test_g711_is_8k_by_default_and_decodes_by_the_standard(fmt: str) -> None:
    pcm = _speech_like().tobytes()
    data = _stream(fmt, pcm)
    assert StreamEncoder(fmt, SR).output_rate == output_rate_for(fmt, SR, None) == 8000
    assert len(data) == N_SAMPLES * 8000 // SR          # one byte a sample, no header
    assert data == encode_whole(fmt, pcm, SR)
    expected = _samples(encode_whole("pcm", pcm, SR, 8000)).astype(np.int32)
    decoded = (_mulaw_reference if fmt == "mulaw" else _alaw_reference)(data)
    assert np.all(np.abs(decoded - expected) <= np.abs(expected) / 16 + 16)     # within one G.711 step
    pyav, rate = _decode(data, fmt)
    assert rate == 8000
    np.testing.assert_array_equal(np.round(pyav * 32768).astype(np.int32), decoded)


@pytest.mark.parametrize("fmt", G711)
def test_g711_at_other_rates(fmt: str) -> None:
    pcm = _sine().tobytes()
    data = encode_whole(fmt, pcm, SR, 16000)
    assert len(data) == 16000
    assert b"".join(_random_feed(fmt, pcm, 16000)) == data


def _random_feed(fmt: str, pcm: bytes, out_rate: int) -> list[bytes]:
    enc = StreamEncoder(fmt, SR, output_rate=out_rate)
    return [enc.header(), *(enc.feed(p) for p in _random_pieces(pcm, 37)), enc.finish()]


@pytest.mark.parametrize("out_rate", (SR, 16000))
def test_pcm_f32le(out_rate: int) -> None:
    pcm = _sine().tobytes()
    data = b"".join(_random_feed("pcm_f32le", pcm, out_rate))
    floats = np.frombuffer(data, dtype="<f4")
    expected = _samples(encode_whole("pcm", pcm, SR, out_rate)) / 32768.0
    np.testing.assert_allclose(floats, expected, atol=1 / 32768)
    assert floats.dtype == np.float32 and np.max(np.abs(floats)) < 1.0
    assert encode_whole("pcm_f32le", pcm, SR, out_rate) == data
    assert StreamEncoder("pcm_f32le", SR).content_type == "application/octet-stream"
    assert "pcm_f32le" not in FORMATS       # the WebSocket layer's, not an HTTP response format


@pytest.mark.parametrize("out_rate", (8000, 44100, 48000))
def test_wav_header_carries_the_output_rate(out_rate: int) -> None:
    pcm = _sine().tobytes()
    for data in (_stream_at("wav", pcm, out_rate), encode_whole("wav", pcm, SR, out_rate)):
        with wave.open(io.BytesIO(data)) as w:
            assert w.getframerate() == out_rate
        assert abs((len(data) - 44) // 2 - out_rate) <= 1


def _stream_at(fmt: str, pcm: bytes, out_rate: int) -> bytes:
    return b"".join(_random_feed(fmt, pcm, out_rate))


@pytest.mark.parametrize(("fmt", "out_rate"), [("mp3", 44100), ("mp3", 8000), ("opus", 16000), ("opus", 48000),
                                               ("aac", 22050), ("flac", 48000)])
def test_codecs_at_other_rates(fmt: str, out_rate: int, ref: np.ndarray) -> None:
    """The codec runs at the asked rate (Opus decoders always give 48 kHz; its header keeps the input rate)."""
    for data in (_stream_at(fmt, ref.tobytes(), out_rate), encode_whole(fmt, ref.tobytes(), SR, out_rate)):
        out, rate = _decode(data)
        assert rate == (48_000 if fmt == "opus" else out_rate)
        padding = DURATION_TOLERANCE_S[fmt] * SR / out_rate          # codec frames are counted in samples
        assert ref.size / SR - 0.002 <= out.size / rate <= ref.size / SR + padding + 0.002
        assert _envelope_correlation(ref / 32768.0, SR, out, rate) > 0.9
        if fmt == "opus":
            assert struct.unpack("<I", data[data.index(b"OpusHead") + 12:][:4])[0] == out_rate


def test_output_rate_rules() -> None:
    assert output_rate_for("wav", SR, None) == SR
    assert output_rate_for("pcm", 22050, None) == 22050
    assert output_rate_for("opus", 22050, None) == 24000        # the codec's next rate up
    assert output_rate_for("mulaw", SR, None) == output_rate_for("alaw", 44100, None) == 8000
    for fmt in ("wav", "pcm", "mp3", "aac", "flac", "mulaw", "alaw", "pcm_f32le"):
        assert encoders.rates_for(fmt) == OUTPUT_RATES
        assert all(output_rate_for(fmt, SR, rate) == rate for rate in OUTPUT_RATES)
    assert encoders.rates_for("opus") == (8000, 16000, 24000, 48000)
    with pytest.raises(ValueError, match="opus cannot carry 44100 Hz; use one of 8000, 16000, 24000, 48000"):
        output_rate_for("opus", SR, 44100)
    with pytest.raises(ValueError, match="opus cannot carry 22050"):
        StreamEncoder("opus", SR, output_rate=22050)
    for bad in (12345, 0, -8000, True):
        with pytest.raises(ValueError, match="is not offered; use one of 8000, 16000, 22050, 24000, 44100, 48000"):
            encode_whole("wav", b"", SR, bad)
    with pytest.raises(ValueError, match="unknown audio format"):
        output_rate_for("ogg", SR, None)


def test_passthrough_only_without_a_rate_change() -> None:
    assert StreamEncoder("pcm", SR).passthrough and StreamEncoder("wav", SR).passthrough
    assert not StreamEncoder("pcm", SR, output_rate=16000).passthrough
    assert not StreamEncoder("mulaw", SR, output_rate=SR).passthrough
    assert StreamEncoder("pcm", SR, output_rate=SR).feed(b"\x01") == b"\x01"     # a copy, odd byte and all


@pytest.mark.parametrize("fmt", ("pcm", "mulaw", "mp3"))
def test_resampling_cost(fmt: str) -> None:
    """Resampling 1 s of audio in 0.2 s chunks to 8 and 48 kHz and encoding it stays well under 50 ms."""
    pcm = _speech_like(SR).tobytes()
    chunks = [pcm[i : i + 9600] for i in range(0, len(pcm), 9600)]
    for out_rate in (8000, 48000):
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            enc = StreamEncoder(fmt, SR, output_rate=out_rate)
            b"".join([enc.header(), *(enc.feed(c) for c in chunks), enc.finish()])
            best = min(best, time.process_time() - start)
        assert best < 0.05, (fmt, out_rate, best)
