"""Fixtures that start real servers (see tests/serverkit.py)."""
from __future__ import annotations

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
