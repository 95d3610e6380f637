"""pipecat's ElevenLabs, Cartesia and Deepgram WebSocket TTS services in a real pipeline against our routes.

What each service speaks (pipecat-ai 1.14):
- ElevenLabsTTSService(url="ws://H:P"): {url}/v1/text-to-speech/{voice}/multi-stream-input?model_id=&
  output_format=pcm_24000&auto_mode=true, header xi-api-key; per turn {"text": " ", "context_id"}, then
  sentences {"text", "context_id"}, at the turn's end {"context_id", "flush": true} + {"context_id",
  "close_context": true}; barge-in {"context_id", "close_context": true}; keepalive {"text": ""} every 10 s.
  Reads contextId (camelCase), audio, alignment|normalizedAlignment, isFinal (holds the pipeline until it).
- CartesiaTTSService(url="ws://H:P/tts/websocket"): no query; X-API-Key + Cartesia-Version 2026-03-01;
  one full generation request per sentence (continue: true, max_buffer_delay_ms 0), transcript "" +
  continue false at the end, {"context_id", "cancel": true} on barge-in. Reads context_id (required),
  type chunk/timestamps/done/error/flush_done (others are reported as errors).
- DeepgramTTSService(base_url="ws://H:P"): /v1/speak?model=&encoding=linear16&sample_rate=24000,
  Authorization: Token; {"type": "Speak"} per sentence, {"type": "Flush"} at the turn's end, {"type":
  "Clear"} on barge-in. Binary frames are audio of whatever context is active; Flushed ends the turn.
A context that stays 3 s without audio is ended by pipecat itself, so first audio must come sooner.
"""
from __future__ import annotations

import asyncio
import time

import pytest
import voiceagentkit as kit

pytestmark = [pytest.mark.clients, pytest.mark.server, pytest.mark.slow]

frames = pytest.importorskip("pipecat.frames.frames", reason="pipecat-ai is not installed (Python 3.11+)")
from pipecat.pipeline.pipeline import Pipeline  # noqa: E402
from pipecat.pipeline.worker import PipelineParams, PipelineWorker  # noqa: E402
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor  # noqa: E402
from pipecat.workers.runner import WorkerRunner  # noqa: E402


class Recorder(FrameProcessor):
    """The pipeline's sink: every frame that reaches the end, in order, with its arrival time."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[float, object]] = []
        self.errors: list[object] = []
        self.changed = asyncio.Event()

    async def process_frame(self, frame, direction):
        await super().process_frame(frame, direction)
        if isinstance(frame, frames.ErrorFrame):
            self.errors.append(frame)
        elif direction == FrameDirection.DOWNSTREAM:
            self.seen.append((time.monotonic(), frame))
            self.changed.set()
        await self.push_frame(frame, direction)

    async def wait_for(self, predicate, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                kinds = [type(f).__name__ for _, f in self.seen][-30:]
                raise AssertionError(f"{what}: not seen in {timeout} s; last frames {kinds}; errors {self.errors}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), min(left, 0.5))
            except asyncio.TimeoutError:
                pass

    def audio(self, context_id=None, after: float = 0.0) -> list:
        return [f for t, f in self.seen if isinstance(f, frames.TTSAudioRawFrame) and t >= after
                and (context_id is None or f.context_id == context_id)]

    def stopped(self, context_id) -> bool:
        return any(isinstance(f, frames.TTSStoppedFrame) and f.context_id == context_id for _, f in self.seen)


def turn(text: str) -> list:
    return [frames.LLMFullResponseStartFrame(), *(frames.LLMTextFrame(t) for t in kit.tokens(text)),
            frames.LLMFullResponseEndFrame()]


async def converse(tts, *, interrupt: bool = True, timeout: float = 60.0) -> Recorder:
    """Turn one; after its first audio an interruption (a barge-in); then turn two plays to its end."""
    recorder = Recorder()
    worker = PipelineWorker(Pipeline([tts, recorder]), params=PipelineParams(audio_out_sample_rate=kit.SAMPLE_RATE),
                            cancel_on_idle_timeout=False, enable_rtvi=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker, frame):
        started.set()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait_for(started.wait(), 30)
        await worker.queue_frames(turn(kit.TURN_ONE))
        await recorder.wait_for(lambda: recorder.audio(), timeout, "turn one's first audio")
        first = recorder.audio()[0].context_id
        recorder.turn_one = first
        if interrupt:
            recorder.interrupted_at = time.monotonic()
            await worker.queue_frame(frames.InterruptionFrame())
            await asyncio.sleep(0.3)
        else:
            await recorder.wait_for(lambda: recorder.stopped(first), timeout, "turn one's end")
        recorder.turn_two_from = time.monotonic()
        await worker.queue_frames(turn(kit.TURN_TWO))

        def new_audio():
            return [f for f in recorder.audio(after=recorder.turn_two_from) if f.context_id != first]

        await recorder.wait_for(new_audio, timeout, "turn two's audio")
        second = new_audio()[0].context_id
        recorder.turn_two = second
        await recorder.wait_for(lambda: recorder.stopped(second), timeout, "turn two's end (TTSStoppedFrame)")
        await worker.queue_frame(frames.EndFrame())
        await asyncio.wait_for(running, 30)
    finally:
        if not running.done():
            await worker.cancel()
            await asyncio.wait_for(running, 30)
    return recorder


def check(recorder: Recorder, *, interrupted: bool = True) -> None:
    assert not recorder.errors, recorder.errors
    one, two = recorder.turn_one, recorder.turn_two
    assert one and two and one != two
    turn_one = b"".join(f.audio for f in recorder.audio(one))
    for f in recorder.audio():
        assert f.sample_rate == kit.SAMPLE_RATE and f.num_channels == 1, f
    assert turn_one, "turn one gave no audio"
    if interrupted:
        # the barge-in is honoured: nothing of turn one reaches the sink after the interruption
        late = recorder.audio(one, after=recorder.interrupted_at + 0.05)
        assert not late, f"{len(late)} audio frames of the interrupted turn after the interruption"
    turn_two = b"".join(f.audio for f in recorder.audio(two))
    kit.assert_speech(turn_two, what="turn two")
    kit.assert_not_turn_one(turn_two)
    kit.assert_intelligible(turn_two, kit.TURN_TWO)


def test_pipecat_elevenlabs_turns_and_barge_in(hibari_server):
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    tts = ElevenLabsTTSService(api_key=kit.API_KEY, url=kit.ws_base(hibari_server),
                               settings=ElevenLabsTTSService.Settings(voice=kit.VOICE, model="eleven_flash_v2_5"))
    recorder = asyncio.run(converse(tts))
    check(recorder)
    # ElevenLabs alignment -> pipecat word timestamps (TTSTextFrame with a pts)
    words = [f for _, f in recorder.seen if isinstance(f, frames.TTSTextFrame) and f.context_id == recorder.turn_two]
    assert words, "no word frames for turn two (alignment missing?)"


def test_pipecat_elevenlabs_whole_turn(hibari_server):
    from pipecat.services.elevenlabs.tts import ElevenLabsTTSService

    tts = ElevenLabsTTSService(api_key=kit.API_KEY, url=kit.ws_base(hibari_server),
                               settings=ElevenLabsTTSService.Settings(voice=kit.VOICE))
    recorder = asyncio.run(converse(tts, interrupt=False))
    check(recorder, interrupted=False)
    whole = b"".join(f.audio for f in recorder.audio(recorder.turn_one))
    kit.assert_speech(whole, min_seconds=3.0, what="turn one, played to its end")
    kit.assert_intelligible(whole, kit.TURN_ONE)


def test_pipecat_cartesia_turns_and_barge_in(hibari_server):
    from pipecat.services.cartesia.tts import CartesiaTTSService

    tts = CartesiaTTSService(api_key=kit.API_KEY, url=kit.ws_base(hibari_server) + "/tts/websocket",
                             settings=CartesiaTTSService.Settings(voice=kit.VOICE, model="sonic-3"))
    recorder = asyncio.run(converse(tts))
    check(recorder)
    # Cartesia word timestamps -> TTSTextFrame
    words = [f for _, f in recorder.seen if isinstance(f, frames.TTSTextFrame) and f.context_id == recorder.turn_two]
    assert words, "no word frames for turn two (word_timestamps missing?)"


def test_pipecat_deepgram_turns_and_barge_in(hibari_server):
    from pipecat.services.deepgram.tts import DeepgramTTSService

    tts = DeepgramTTSService(api_key=kit.API_KEY, base_url=kit.ws_base(hibari_server),
                             settings=DeepgramTTSService.Settings(voice=kit.VOICE))
    recorder = asyncio.run(converse(tts))
    # Deepgram audio carries no context id: audio of turn one sent after Clear would be filed under
    # turn two, which assert_not_turn_one (Whisper) catches.
    check(recorder)
