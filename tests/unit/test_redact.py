"""Error texts as clients see them: no server paths, no unexpected exception text."""
from __future__ import annotations

from chatterbox_server.security.redact import ENGINE_FAILURE, public_pool_message, scrub


def test_paths_are_replaced():
    assert scrub("cannot read /var/lib/chatterbox-server/voices/x.wav: no such file") == \
        "cannot read <path>: no such file"
    assert scrub("C:\\data\\voices\\x.wav missing") == "<path> missing"
    assert scrub("voice 'x' cannot be read") == "voice 'x' cannot be read"
    assert scrub("use 1/2 speed or http://host/a/b") == "use 1/2 speed or http://host/a/b"


def test_an_unexpected_engine_exception_says_only_that_it_happened():
    text = "synthesis failed: RuntimeError: CUDA error at /opt/x/kernels.cu:12"
    assert public_pool_message(text, 500, "synthesis_failed") == ENGINE_FAILURE
    assert public_pool_message("reference audio at /srv/v/a.wav unreadable", 400, "invalid_request") == \
        "reference audio at <path> unreadable"
