"""LiveKit Agents' ElevenLabs, Cartesia and Deepgram plugins: tts.stream() against our routes.

What each plugin speaks (livekit-plugins-* 1.8.9, all on aiohttp, none sends pings):
- elevenlabs.TTS(base_url="http://H:P/v1") -> ws://H:P/v1/text-to-speech/{voice}/multi-stream-input?
  model_id=&output_format=pcm_24000&enable_ssml_parsing=false&enable_logging=true&inactivity_timeout=180&
  apply_text_normalization=auto&sync_alignment=true&auto_mode=true; one socket per TTS, one context per
  stream: {"text": " ", "voice_settings": {}, "context_id"}, {"text": "Sentence. ", "context_id", "flush":
  true} per sentence, {"text": "", "context_id", "flush": true} + {"context_id", "close_context": true} at
  end_input; aclose() before the end sends close_context. Reads contextId|context_id, audio, ONLY
  normalizedAlignment (chars/charStartTimesMs/charDurationsMs), isFinal (ends the stream), error.
- cartesia.TTS(base_url="http://H:P") -> ws://H:P/tts/websocket?cartesia_version=2025-04-16, X-API-Key;
  a full request per sentence (continue true, max_buffer_delay_ms 0), transcript " " + continue false at
  the end; never a cancel: aclose() closes the pooled socket. Reads context_id, data, done, word_timestamps
  {words,start,end}, type error.
- deepgram.TTS(base_url="http://H:P/v1/speak") -> ?encoding=linear16&model=&sample_rate=24000&mip_opt_out=false,
  Authorization: Token; one {"type": "Speak"} per WORD, {"type": "Flush"} per flush() (waits for Flushed
  before the next segment); aclose() sends Flush + Close and closes. Binary frames are audio.
Every plugin gives up after 10 s without a message (APITimeoutError).
"""
from __future__ import annotations

import asyncio

import pytest
import voiceagentkit as kit

pytestmark = [pytest.mark.clients, pytest.mark.server, pytest.mark.slow]

pytest.importorskip("livekit.agents", reason="livekit-agents is not installed")
import aiohttp  # noqa: E402
from livekit.agents import APIConnectOptions  # noqa: E402

TIMED = "lk.timed_transcripts"          # livekit.agents.types.USERDATA_TIMED_TRANSCRIPT
NO_RETRY = APIConnectOptions(max_retry=0, timeout=20.0)


def make_tts(kind: str, server, session):
    http = server.base
    if kind == "elevenlabs":
        from livekit.plugins import elevenlabs

        # the plugin's default output is mp3_22050_32; the PCM format is asked for explicitly
        return elevenlabs.TTS(api_key=kit.API_KEY, base_url=http + "/v1", voice_id=kit.VOICE,
                              model="eleven_turbo_v2_5", encoding=f"pcm_{kit.SAMPLE_RATE}", http_session=session)
    if kind == "cartesia":
        from livekit.plugins import cartesia

        return cartesia.TTS(api_key=kit.API_KEY, base_url=http, voice=kit.VOICE, model="sonic-3",
                            language="en", encoding="pcm_s16le", sample_rate=kit.SAMPLE_RATE, http_session=session)
    from livekit.plugins import deepgram

    return deepgram.TTS(api_key=kit.API_KEY, base_url=http + "/v1/speak", model=kit.VOICE, encoding="linear16",
                        sample_rate=kit.SAMPLE_RATE, http_session=session)


class Collected:
    def __init__(self):
        self.frames = []
        self.timed = []
        self.finals = 0
        self.segments: list[str] = []
        self.timed_by_segment: dict[str, list] = {}

    def add(self, ev) -> None:
        frame = ev.frame
        assert frame.sample_rate == kit.SAMPLE_RATE and frame.num_channels == 1, frame
        self.frames.append(bytes(frame.data.cast("B")))
        timed = frame.userdata.get(TIMED) or []
        self.timed.extend(timed)
        self.timed_by_segment.setdefault(ev.segment_id, []).extend(timed)
        self.finals += bool(ev.is_final)
        if ev.segment_id and ev.segment_id not in self.segments:
            self.segments.append(ev.segment_id)

    @property
    def pcm(self) -> bytes:
        return b"".join(self.frames)


async def whole_stream(kind: str, server) -> tuple[Collected, list]:
    """Two segments on one TTS (its pooled socket), one stream each as LiveKit wants (a SynthesizeStream
    drops text pushed after its first flush()): turn one with push_text + flush() + end_input(), turn
    two with push_text + end_input()."""
    errors: list = []
    async with aiohttp.ClientSession() as session:
        tts = make_tts(kind, server, session)
        tts.on("error", errors.append)
        got = Collected()
        try:
            for text, flush in ((kit.TURN_ONE, True), (kit.TURN_TWO, False)):
                stream = tts.stream(conn_options=NO_RETRY)
                for token in kit.tokens(text):
                    stream.push_text(token)
                if flush:
                    stream.flush()
                stream.end_input()

                async def collect(stream=stream):
                    async for ev in stream:
                        got.add(ev)

                await asyncio.wait_for(collect(), 90)
                await stream.aclose()
        finally:
            await tts.aclose()
    return got, errors


async def barge_in(kind: str, server) -> tuple[Collected, Collected, list]:
    """Turn one until its first audio, aclose() (what an AgentSession does on interruption), turn two."""
    errors: list = []
    async with aiohttp.ClientSession() as session:
        tts = make_tts(kind, server, session)
        tts.on("error", errors.append)
        try:
            first = tts.stream(conn_options=NO_RETRY)
            for token in kit.tokens(kit.TURN_ONE):
                first.push_text(token)
            first.flush()
            one = Collected()
            it = first.__aiter__()
            one.add(await asyncio.wait_for(it.__anext__(), 30))
            await first.aclose()

            second = tts.stream(conn_options=NO_RETRY)
            for token in kit.tokens(kit.TURN_TWO):
                second.push_text(token)
            second.end_input()
            two = Collected()

            async def collect():
                async for ev in second:
                    two.add(ev)

            await asyncio.wait_for(collect(), 60)
            await second.aclose()
        finally:
            await tts.aclose()
    return one, two, errors


@pytest.mark.parametrize("kind", ["elevenlabs", "cartesia", "deepgram"])
def test_livekit_stream_push_flush_end(kind, hibari_server):
    got, errors = asyncio.run(whole_stream(kind, hibari_server))
    assert not errors, errors
    seconds = kit.assert_speech(got.pcm, min_seconds=3.0, what=f"{kind} stream")
    assert got.finals >= 2, "a frame marked is_final for each segment"
    kit.assert_intelligible(got.pcm, kit.TURN_ONE + " " + kit.TURN_TWO)
    if kind == "deepgram":
        # one segment per stream, each ended by its Flushed
        assert len(got.segments) == 2, got.segments
    if kind in ("elevenlabs", "cartesia"):
        # ElevenLabs normalizedAlignment and Cartesia word_timestamps become timed transcripts on the frames
        assert got.timed, f"{kind}: no timed transcript (alignment / word_timestamps missing)"
        text = "".join(str(t) for t in got.timed).lower()
        assert "elephants" in text and "bicycle" in text, text
        starts = [t.start_time for t in got.timed]
        assert all(isinstance(s, (int, float)) and 0 <= s <= seconds + 1 for s in starts), starts
        if kind == "cartesia":          # word times run from the start of each context (one per stream)
            for segment in got.timed_by_segment.values():
                segment_starts = [t.start_time for t in segment]
                assert segment_starts == sorted(segment_starts), segment_starts


@pytest.mark.parametrize("kind", ["elevenlabs", "cartesia", "deepgram"])
def test_livekit_barge_in_then_next_turn(kind, hibari_server):
    one, two, errors = asyncio.run(barge_in(kind, hibari_server))
    assert not errors, errors
    assert one.pcm, "turn one gave no audio before the barge-in"
    kit.assert_speech(two.pcm, what="turn two")
    kit.assert_not_turn_one(two.pcm)
    kit.assert_intelligible(two.pcm, kit.TURN_TWO)
