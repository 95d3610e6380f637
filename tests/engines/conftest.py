"""Fixtures shared by the engine tests."""
from __future__ import annotations

import chatterbox_checkpoint as checkpoints
import pytest


@pytest.fixture(scope="module")
def reference_wav(tmp_path_factory):
    """A 5 s synthetic voice to clone, as a WAV file."""
    path = tmp_path_factory.mktemp("voices") / "alice.wav"
    return checkpoints.write_wav(path, checkpoints.synthetic_voice(5.0, f0=210.0, seed=7))
