"""off_hub: work in the hub's threadpool; what it raises comes back to the caller, and an expected
refusal is one warning line, not a traceback from the pool thread (issue 15, item 5)."""
import logging
import subprocess
import sys
import textwrap

import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.runtime.hub import off_hub


def refuse(name: str) -> None:
    raise ApiError(400, f"voice_file: {name} is not audio\nsecond line", param="voice_file")


def test_result_and_errors_come_back_to_the_greenlet():
    assert off_hub(sum, [1, 2, 3]) == 6
    with pytest.raises(ZeroDivisionError):
        off_hub(divmod, 1, 0)


def test_a_refusal_is_one_warning_line(caplog):
    with caplog.at_level(logging.WARNING, logger="chatterbox.hub"), pytest.raises(ApiError) as info:
        off_hub(refuse, "clip.txt")
    assert info.value.status == 400
    (record,) = caplog.records
    assert record.getMessage() == "refuse refused: 400 voice_file: clip.txt is not audio second line"


def test_the_pool_thread_prints_no_traceback():
    """gevent prints whatever escapes a threadpool thread to stderr; run in a fresh process to read it."""
    code = textwrap.dedent("""
        from gevent import monkey; monkey.patch_all()
        from tests.unit.test_hub import refuse
        from chatterbox_server.errors import ApiError
        from chatterbox_server.runtime.hub import off_hub
        try:
            off_hub(refuse, "clip.txt")
        except ApiError:
            print("refused")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused"
    assert "Traceback" not in done.stderr, done.stderr
