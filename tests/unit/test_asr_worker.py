"""The pure parts of the speech-recognition process (workers/asr_worker.py)."""
from __future__ import annotations

import numpy as np
import pytest

from workers.asr_worker import resolve_model, to_whisper_audio, token_budget


def test_models_resolve_to_the_hub_or_a_local_directory(tmp_path):
    assert resolve_model("medium", "") == "medium"
    (tmp_path / "tiny").mkdir()
    (tmp_path / "tiny" / "model.bin").write_bytes(b"x")
    assert resolve_model("tiny", str(tmp_path)) == str(tmp_path / "tiny")
    with pytest.raises(FileNotFoundError):
        resolve_model("medium", str(tmp_path))
    (tmp_path / "model.bin").write_bytes(b"x")        # one model for every name
    assert resolve_model("medium", str(tmp_path)) == str(tmp_path)


def test_audio_is_resampled_to_16_khz():
    tone = (np.sin(np.arange(24000) * 2 * np.pi * 440 / 24000) * 16000).astype("<i2")
    out = to_whisper_audio(tone.tobytes(), 24000)
    assert out.dtype == np.float32 and abs(out.size - 16000) <= 32
    assert abs(np.abs(out).max() - 16000 / 32768) < 0.02
    assert to_whisper_audio(b"", 24000).size == 0


def test_token_budget_grows_with_the_audio_and_is_capped():
    assert token_budget(16000) < token_budget(16000 * 10) <= 440
    assert token_budget(16000 * 600) == token_budget(16000 * 30)


def test_a_front_worker_that_hangs_up_before_its_answer_ends_the_connection_quietly():
    """A status read is bounded (0.5 s): the front worker may be gone when the answer is ready. That
    used to kill the serving thread with a BrokenPipeError traceback in the log."""
    from multiprocessing import Pipe
    from types import SimpleNamespace

    from workers.asr_worker import serve_connection
    from workers.ipc.asr import AsrStatus, Status

    ours, theirs = Pipe()
    theirs.send(Status())
    theirs.close()
    answered = []
    recognizer = SimpleNamespace(status=lambda request: answered.append(request) or AsrStatus((), (), None, True))
    serve_connection(ours, recognizer)      # returns; nothing raised
    assert answered == [Status()] and ours.closed
