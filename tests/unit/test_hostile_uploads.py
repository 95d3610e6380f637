"""A corpus of hostile uploads, generated here: every one is refused with a 400, quickly, without
FFmpeg choosing its own demuxer or opening anything but the bytes it was given."""
from __future__ import annotations

import io
import resource
import struct
import time

import av
import numpy as np
import pytest

from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.errors import ApiError
from chatterbox_server.security import untrusted_audio
from chatterbox_server.security.untrusted_audio import decode_reference

LIMIT = 20 * 1024 * 1024
MPEG_FRAME = b"\xff\xfb\x90\x00"
EMPTY_ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"


def wav(rate: int, frames: int, channels: int = 1) -> bytes:
    data = b"\x10\x00" * frames * channels
    fmt = struct.pack("<HHIIHH", 1, channels, rate, (rate * 2 * channels) & 0xFFFFFFFF,
                      (2 * channels) & 0xFFFF, 16)
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " + struct.pack("<I", 16) + fmt
            + b"data" + struct.pack("<I", len(data)) + data)


def encoded_silence(container_format: str, codec: str, seconds: float, rate: int = 8000) -> bytes:
    """Long silence compresses to almost nothing: a decompression bomb in a few kilobytes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=rate, layout="mono")
        sample_format = stream.codec_context.format.name
        block = 4096
        silence = np.zeros((1, block), dtype=np.int16 if sample_format.startswith("s16") else np.float32)
        for start in range(0, int(seconds * rate), block):
            frame = av.AudioFrame.from_ndarray(silence, format=sample_format.rstrip("p") + (
                "p" if sample_format.endswith("p") else ""), layout="mono")
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buffer.getvalue()


SDP = MPEG_FRAME + (b"\nv=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=x\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                    b"m=audio 5004 RTP/AVP 14\r\n")
HLS = MPEG_FRAME + b"\n#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\nhttp://127.0.0.1:9/x.ts\n#EXT-X-ENDLIST\n"
FFCONCAT = EMPTY_ID3 + b"ffconcat version 1.0\nfile /etc/hostname\n"
ONE_SECOND = pcm_to_wav(np.zeros(24000, np.int16), 24000)

CORPUS = {
    "sdp-as-mp3": SDP,
    "hls-as-mp3": HLS,
    "ffconcat-after-id3": FFCONCAT,
    "wav-rate-2^31": wav(2 ** 31 - 1, 48000),
    "wav-rate-1-hz": wav(1, 200_000),
    "wav-65535-channels": wav(8000, 20, channels=65535),
    "wav-truncated-header": ONE_SECOND[:30],
    "riff-only": b"RIFF",
    "flac-truncated": b"fLaC\x00\x00\x00\x22" + b"\x00" * 10,
    "ogg-truncated": b"OggS\x00\x02" + b"\x00" * 20,
    "webm-truncated": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01",
    "mp4-truncated": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2",
}


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_hostile_file_is_a_quick_400(name: str) -> None:
    started = time.monotonic()
    with pytest.raises(ApiError) as caught:
        decode_reference(CORPUS[name], LIMIT)
    assert caught.value.status == 400 and caught.value.code == "unsupported_audio"
    assert time.monotonic() - started < 2.0
    assert "/" not in caught.value.message          # never FFmpeg's text, which may carry paths


@pytest.mark.parametrize("container_format, codec, rate, seconds", [("flac", "flac", 8000, 1800),
                                                                  ("ogg", "libopus", 48000, 300)])
def test_decompression_bomb_stops_at_the_length_limit(container_format: str, codec: str, rate: int,
                                                      seconds: int) -> None:
    bomb = encoded_silence(container_format, codec, seconds=seconds, rate=rate)
    assert len(bomb) < 400_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(ApiError, match="lasts 12[01]"):
        decode_reference(bomb, LIMIT)
    assert time.monotonic() - started < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024    # KiB: < 100 MB


def test_the_sniffed_format_names_the_demuxer_and_no_protocol_is_allowed(monkeypatch) -> None:
    opened: list[tuple[str, dict]] = []
    real_open = av.open

    def spy(*args, **kwargs):
        try:
            container = real_open(*args, **kwargs)
        except av.FFmpegError:
            opened.append((kwargs.get("format"), kwargs.get("container_options") or {}))
            raise
        opened.append((container.format.name, kwargs.get("container_options") or {}))
        return container

    monkeypatch.setattr(av, "open", spy)
    with pytest.raises(ApiError):
        decode_reference(SDP, LIMIT)
    decode_reference(ONE_SECOND, LIMIT)
    assert [name for name, _ in opened] == ["mp3", "wav"]     # FFmpeg's own probe picks "sdp"
    assert all(options.get("protocol_whitelist") == "" for _, options in opened)


def test_every_decode_has_a_wall_clock_limit(monkeypatch) -> None:
    monkeypatch.setattr(untrusted_audio, "DECODE_TIMEOUT_SECONDS", 1e-6)
    with pytest.raises(ApiError, match="took longer than"):
        decode_reference(pcm_to_wav(np.zeros(24000 * 30, np.int16), 24000), LIMIT)
