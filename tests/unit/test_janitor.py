"""Which temporary files the housekeeping sweep deletes."""
from __future__ import annotations

import os
import time

from chatterbox_server.runtime import janitor
from chatterbox_server.synthesis.voices import write_temporary_wav


def touch(directory, name: str, age: float) -> str:
    path = os.path.join(directory, name)
    open(path, "wb").close()
    then = time.time() - age
    os.utime(path, (then, then))
    return name


def test_sweep_deletes_the_files_of_dead_front_workers_and_old_files_only(tmp_path):
    import numpy as np
    mine = os.path.basename(write_temporary_wav(str(tmp_path), np.zeros(10, np.int16), 24000))
    assert mine.startswith(janitor.upload_prefix())
    dead = touch(tmp_path, janitor.upload_prefix(pid=999_999_999) + "x.wav", age=60)
    newborn = touch(tmp_path, janitor.upload_prefix(pid=999_999_998) + "y.wav", age=1)
    elsewhere = touch(tmp_path, "upload-otherhost-1-z.wav", age=3600)
    ancient = touch(tmp_path, "upload-otherhost-1-old.wav", age=janitor.MAX_AGE_SECONDS + 10)
    legacy = touch(tmp_path, "upload-abc.wav", age=60)
    os.mkdir(tmp_path / "a-directory")
    removed = janitor.sweep(str(tmp_path))
    assert sorted(removed) == sorted([dead, ancient])
    assert sorted(os.listdir(tmp_path)) == sorted([mine, newborn, elsewhere, legacy, "a-directory"])


def test_sweep_of_a_missing_directory_is_empty(tmp_path):
    assert janitor.sweep(str(tmp_path / "none")) == []
