"""Fixtures that start real servers (see tests/serverkit.py)."""
from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from serverkit import Server, start_server


@pytest.fixture(scope="session")
def hibari_server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("hibari"), engine="hibari", front_workers="2")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tone_server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("tone"), engine="tone", front_workers="2", model_workers="1",
                          graceful_timeout="5")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def chatterbox_turbo_checkpoint(tmp_path_factory):
    """A random-weight Chatterbox-Turbo checkpoint (~25 s, 2.5 GB), once per session for the server tests;
    the standard and multilingual one is tests/conftest.py's chatterbox_checkpoint."""
    pytest.importorskip("chatterbox", reason="chatterbox-tts is not installed (make install-chatterbox)")
    import chatterbox_checkpoint as checkpoints
    directory = tmp_path_factory.mktemp("chatterbox-turbo-checkpoint")
    yield checkpoints.build_random_turbo_checkpoint(directory, seed=0)
    shutil.rmtree(directory, ignore_errors=True)
