"""A real server for the voice-agent clients (tests/serverkit.py): gunicorn on gevent with the hibari engine."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from serverkit import Server, start_server


@pytest.fixture(scope="session")
def hibari_server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("hibari-clients"), engine="hibari", front_workers="2")
    yield server
    server.stop()
