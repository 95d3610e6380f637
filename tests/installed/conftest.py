"""The installed product, as a user runs it: these tests talk to a server that `make run` started
from the runtime install alone (.ci/run does it; by hand: `make run`, then `make smoke`). They start
nothing themselves and need only HTTP, so they run from a client environment of their own."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

URL_ENV, EXTENDED_URL_ENV = "CHATTERBOX_INSTALLED_URL", "CHATTERBOX_INSTALLED_EXTENDED_URL"


@dataclass(frozen=True)
class InstalledServer:
    base: str                 # the OpenAI family's port (4123 by default)
    extended_base: str        # the Extended family's port (7860 by default)

    def url(self, path: str) -> str:
        return self.base + path


@pytest.fixture(scope="session")
def installed() -> InstalledServer:
    base = os.environ.get(URL_ENV)
    if not base:
        pytest.fail(f"{URL_ENV} names no server (start one with make run)")
    return InstalledServer(base.rstrip("/"), os.environ.get(EXTENDED_URL_ENV, base).rstrip("/"))
