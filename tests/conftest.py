"""Fixtures shared across test folders."""
from __future__ import annotations

import os
import shutil

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # before huggingface_hub is imported: it reads this once

# tests/installed talks to a server that `make run` started (make smoke, .ci/run); not part of make test
collect_ignore = [] if os.environ.get("CHATTERBOX_INSTALLED_URL") else ["installed"]


@pytest.fixture(scope="session")
def chatterbox_checkpoint(tmp_path_factory):
    """One random-weight checkpoint of the real architecture for every Chatterbox test (~45 s, 5 GB).

    A 3 s built-in voice halves S3Gen's prompt, and its time per call, against the usual 6 s.
    """
    pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (make install-chatterbox)")
    import chatterbox_checkpoint as checkpoints
    directory = tmp_path_factory.mktemp("chatterbox-checkpoint")
    yield checkpoints.build_random_checkpoint(directory, seed=0, multilingual=True, reference_seconds=3.0)
    shutil.rmtree(directory, ignore_errors=True)           # pytest keeps the last three runs' tmp
