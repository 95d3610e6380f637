"""Which device each model-worker slot gets, and how exits are described."""
import signal

import pytest

from chatterbox_server.settings import Settings
from workers.model_worker import EXIT_ENGINE_BROKEN, EXIT_LOAD_FAILED
from workers.supervisor import _describe_exit, worker_devices


@pytest.mark.parametrize(("engine", "device", "per_device", "expected"), [
    ("hibari", "cuda:0,cuda:1", 2, ["cpu", "cpu"]),
    ("tone", "auto", 1, ["cpu"]),
    ("chatterbox", "auto", 1, ["auto"]),
    ("chatterbox", "cuda:0,cuda:1", 1, ["cuda:0", "cuda:1"]),
    ("chatterbox", "cuda:0, cuda:1", 2, ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]),
    ("auto", "cpu", 1, ["cpu"]),
])
def test_one_slot_per_listed_device_and_worker(engine, device, per_device, expected):
    settings = Settings.from_env({}, engine=engine, device=device, model_workers=per_device)
    assert worker_devices(settings) == expected


def test_exit_descriptions():
    assert _describe_exit(-signal.SIGKILL) == "was killed by SIGKILL"
    assert _describe_exit(EXIT_LOAD_FAILED) == "could not load its engine"
    assert _describe_exit(EXIT_ENGINE_BROKEN) == "gave up on its engine"
    assert _describe_exit(70) == "exited with code 70"
    assert _describe_exit(None) == "vanished"
