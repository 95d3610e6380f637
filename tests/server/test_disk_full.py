"""A full disk under DATA_DIR (a small tmpfs; root only): a request that must write answers 507
with Retry-After and leaves no temporary file, a long job pauses instead of failing, and resumes
to the end once there is room. Speech that writes nothing goes on."""
from __future__ import annotations

import contextlib
import os
import subprocess
import time

import pytest
import requests
from test_long_text import LONG, completed, create, story, tone, wait_for

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(directory) -> str:  # noqa: ANN001 - a Path
    path = os.path.join(directory, "filler")
    with open(path, "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * 65536)
            f.flush()
    with contextlib.suppress(OSError), open(path, "ab") as f:
        while True:
            f.write(b"\0" * 512)
            f.flush()
    return path


def temporary_files(directory) -> list[str]:  # noqa: ANN001
    return [os.path.join(root, name) for root, _, names in os.walk(directory) for name in names
            if name.startswith(".tmp-") or name.endswith(".tmp")]


def test_a_full_disk_is_a_507_and_pauses_long_jobs_until_there_is_room(tmp_path, small_disk):
    data = small_disk / "data"
    server = tone(tmp_path, data_dir=str(data), database_url=f"sqlite:///{tmp_path / 'jobs.db'}")
    try:
        job_id = create(server, story(6, 0.3))
        wait_for(server, job_id, lambda s: s["status"] == "processing")
        filler = fill(small_disk)
        paused = wait_for(server, job_id, lambda s: s["status"] in ("paused", "failed", "completed"), timeout=30)
        assert paused["status"] == "paused", paused["metadata"]["error"]
        assert "disk is full" in paused["metadata"]["error"]
        response = requests.post(server.extended_base + "/api/v1/tts",
                                 json={"text": "No room for this one, sadly. " * 20}, timeout=60)
        assert response.status_code == 507, response.text
        assert response.headers.get("Retry-After")
        assert "disk is full" in response.text
        speech = requests.post(server.url("/v1/audio/speech"), json={"input": "Still here."}, timeout=30)
        assert speech.status_code == 200
        assert temporary_files(data) == []
        os.unlink(filler)
        assert requests.put(server.url(f"{LONG}/{job_id}/resume"), timeout=10).status_code == 200
        assert len(completed(server, job_id)) > 44
        assert server.process.poll() is None
        time.sleep(0.1)
    finally:
        server.stop()
