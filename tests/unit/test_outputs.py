"""Tests for chatterbox_server.store.outputs: names, atomic writes, safe look-ups and retention."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest

from chatterbox_server.store.outputs import TEMP_MAX_AGE, OutputStore

NOW = datetime(2025, 6, 22, 14, 30, 22, 456789, tzinfo=timezone.utc).timestamp()


@pytest.fixture
def store(tmp_path) -> OutputStore:
    return OutputStore(str(tmp_path / "outputs"), retention_seconds=3600, max_bytes=1000)


def make(store: OutputStore, name: str, size: int = 100, age: float = 0.0) -> str:
    path = os.path.join(store.directory, name)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (NOW - age, NOW - age))
    return path


def listing(store: OutputStore) -> list[str]:
    return sorted(os.listdir(store.directory))


# -- names and writes ----------------------------------------------------------------------------
def test_base_name_is_the_seed_format_in_utc_then_an_unguessable_part(store):
    assert re.fullmatch(r"tts_2025-06-22_143022_456_[0-9a-f]{16}", store.new_base_name(NOW))
    assert re.fullmatch(r"vc_2025-06-22_143022_456_[0-9a-f]{16}", store.new_base_name(NOW, prefix="vc"))
    assert store.new_base_name(NOW) != store.new_base_name(NOW)


def test_store_writes_every_format_under_one_base_and_leaves_no_temporary_file(store):
    names = store.store({"wav": b"RIFF....", "mp3": b"ID3..."}, now=NOW)
    base = names["wav"].removesuffix(".wav")
    assert base.startswith("tts_2025-06-22_143022_456_") and names["mp3"] == base + ".mp3"
    assert listing(store) == sorted(names.values())
    with open(os.path.join(store.directory, names["mp3"]), "rb") as f:
        assert f.read() == b"ID3..."


def test_storing_twice_in_the_same_millisecond_never_overwrites(store):
    first = store.store({"wav": b"first"}, now=NOW)
    second = store.store({"wav": b"second"}, now=NOW)
    assert first["wav"] != second["wav"]
    with open(os.path.join(store.directory, first["wav"]), "rb") as f:
        assert f.read() == b"first"


def test_a_lost_race_for_a_base_name_is_undone_and_retried(store, monkeypatch):
    make(store, "race.mp3", size=5)           # another request published race.mp3 after our check
    bases = iter(["race", "fresh"])
    monkeypatch.setattr(store, "new_base_name", lambda now=None, prefix="tts", tag="": next(bases))
    names = store.store({"wav": b"ours", "mp3": b"ours"})
    assert names == {"wav": "fresh.wav", "mp3": "fresh.mp3"}
    assert listing(store) == ["fresh.mp3", "fresh.wav", "race.mp3"]      # our race.wav was removed
    assert os.path.getsize(os.path.join(store.directory, "race.mp3")) == 5


def test_write_atomic_refuses_an_existing_name_unless_asked_to_replace(store):
    make(store, "a.wav", size=3)
    with pytest.raises(FileExistsError):
        store.write_atomic("a.wav", b"new data")
    assert listing(store) == ["a.wav"] and os.path.getsize(os.path.join(store.directory, "a.wav")) == 3
    store.write_atomic("a.wav", b"new data", replace=True)
    assert os.path.getsize(os.path.join(store.directory, "a.wav")) == 8


def test_a_failed_write_leaves_nothing_behind(store):
    with pytest.raises(TypeError):
        store.write_atomic("b.wav", None)          # fails half-way, after the temporary file exists
    assert listing(store) == []


@pytest.mark.parametrize("name", ["", "../x.wav", "a/b.wav", ".hidden", "x\x00.wav", "x.wav\n"])
def test_write_atomic_takes_plain_names_only(store, name):
    with pytest.raises(ValueError):
        store.write_atomic(name, b"data")


# -- path_for --------------------------------------------------------------------------------------
def test_path_for_finds_a_regular_file(store):
    path = make(store, "tts_1.wav")
    assert store.path_for("tts_1.wav") == path


@pytest.mark.parametrize("name", [
    "", ".", "..", "../outputs/tts_1.wav", "..%2ftts_1.wav", "/etc/passwd", "sub/tts_1.wav", "tts_1.wav\n",
    "tts_1.wav\x00", ".tmp-abc", "missing.wav", "tts 1.wav", "~root",
])
def test_path_for_rejects_anything_but_a_plain_name_in_the_directory(store, name):
    make(store, "tts_1.wav")
    make(store, ".tmp-abc")
    assert store.path_for(name) is None


def test_path_for_rejects_symlinks_and_directories(store, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    make(store, "inside.wav")
    os.symlink(secret, os.path.join(store.directory, "escape.wav"))
    os.symlink("/etc/passwd", os.path.join(store.directory, "passwd.wav"))
    os.symlink("inside.wav", os.path.join(store.directory, "alias.wav"))
    os.mkdir(os.path.join(store.directory, "folder"))
    for name in ("escape.wav", "passwd.wav", "alias.wav", "folder"):
        assert store.path_for(name) is None, name


def test_path_for_works_through_a_symlinked_directory(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "link")
    store = OutputStore(str(tmp_path / "link"), 0, 0)
    make(store, "a.wav")
    assert store.path_for("a.wav") == os.path.join(str(tmp_path / "link"), "a.wav")


# -- retention -------------------------------------------------------------------------------------
def test_prune_removes_files_older_than_the_retention(store):
    make(store, "old.wav", age=3601)
    make(store, "fresh.wav", age=3599)
    assert store.prune(now=NOW) == ["old.wav"]
    assert listing(store) == ["fresh.wav"]


def test_zero_retention_means_no_age_limit(tmp_path):
    store = OutputStore(str(tmp_path), retention_seconds=0, max_bytes=0)
    make(store, "ancient.wav", age=10 * 365 * 86400)
    assert store.prune(now=NOW) == []


def test_prune_deletes_the_oldest_first_until_the_total_fits(store):
    for index in range(6):                     # 6 x 300 bytes, the first one the oldest
        make(store, f"f{index}.wav", size=300, age=600 - index * 10)
    removed = store.prune(now=NOW)
    assert removed == ["f0.wav", "f1.wav", "f2.wav"]
    assert listing(store) == ["f3.wav", "f4.wav", "f5.wav"] and store.total_bytes() == 900


def test_prune_never_removes_the_files_it_is_told_to_keep(store):
    make(store, "older.wav", size=600, age=100)
    make(store, "new.wav", size=600, age=5000)    # past the retention and the oldest: still kept
    assert store.prune(now=NOW, keep=["new.wav"]) == ["older.wav"]
    assert listing(store) == ["new.wav"]


def test_prune_removes_only_stale_temporary_files_and_ignores_the_rest(store, tmp_path):
    make(store, ".tmp-dead", age=TEMP_MAX_AGE + 1)
    make(store, ".tmp-writing", size=5000, age=10)            # a write in progress: not counted
    make(store, ".keepme", age=99999)
    os.mkdir(os.path.join(store.directory, "folder"))
    target = tmp_path / "elsewhere.wav"
    target.write_bytes(b"y" * 5000)
    os.symlink(target, os.path.join(store.directory, "link.wav"))
    os.utime(os.path.join(store.directory, "link.wav"), (NOW - 99999, NOW - 99999), follow_symlinks=False)
    assert store.prune(now=NOW) == [".tmp-dead"]
    assert listing(store) == [".keepme", ".tmp-writing", "folder", "link.wav"]
    assert target.exists()


def test_prune_covers_folders_and_takes_the_metadata_with_the_last_file(store):
    from chatterbox_server.store import outputs_index
    written = store.store({"wav": b"x" * 100, "mp3": b"y" * 100}, now=NOW - 7200, folder="proj/ch1")
    outputs_index.record_generation(store, written, "tts", {"seed": 1})
    folder = os.path.join(store.directory, "proj", "ch1")
    base = written["wav"].rsplit("/", 1)[1].split(".")[0]
    for name in os.listdir(folder):
        os.utime(os.path.join(folder, name), (NOW - 7200, NOW - 7200))
    assert sorted(store.prune(now=NOW)) == sorted(written.values())
    assert os.listdir(folder) == [] and not os.path.exists(os.path.join(folder, base + ".json"))
