"""Tests for workers.ipc.board: the memory-mapped pool board."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from workers.ipc.board import ERROR_BYTES, INFO_BYTES, Board, WorkerState, pid_alive


@pytest.fixture
def board_path(tmp_path):
    path = str(tmp_path / "board")
    Board(path, 3, create=True).close()
    return path


def test_create_and_open(board_path):
    board = Board.open(board_path)
    try:
        assert board.slots == 3
        assert board.supervisor() == (0, 0.0)
        views = board.views()
        assert [v.slot for v in views] == [0, 1, 2]
        for view in views:
            assert view.state == WorkerState.EMPTY
            assert (view.pid, view.restarts, view.active, view.jobs_done, view.jobs_failed) == (0, 0, 0, 0, 0)
            assert view.info == {} and view.last_error == ""
    finally:
        board.close()


def test_open_rejects_a_file_that_is_not_a_board(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"NOTABRD!" + b"\0" * 4096)
    with pytest.raises(ValueError):
        Board(str(path), 1)


def test_create_truncates_an_old_board(tmp_path):
    path = str(tmp_path / "board")
    old = Board(path, 2, create=True)
    old.reset(1, 1234, 5)
    old.close()
    new = Board(path, 1, create=True)
    assert new.slots == 1 and new.view(0).pid == 0
    new.close()
    assert os.path.getsize(path) < 2 * (INFO_BYTES + ERROR_BYTES)


def test_slot_index_checked(board_path):
    board = Board.open(board_path)
    with pytest.raises(IndexError):
        board.view(3)
    with pytest.raises(IndexError):
        board.view(-1)
    board.close()


def test_writes_are_seen_by_another_mapping(board_path):
    writer, reader = Board.open(board_path), Board.open(board_path)
    try:
        writer.supervisor_beat(4321)
        pid, beat = reader.supervisor()
        assert pid == 4321 and beat > 0

        writer.reset(1, 999, restarts=2)
        view = reader.view(1)
        assert (view.pid, view.state, view.restarts, view.active) == (999, WorkerState.STARTING, 2, 0)
        assert view.started > 0 and view.heartbeat == view.started

        writer.publish_info(1, {"engine": "tone", "sample_rate": 24000, "voices": ["default"]})
        writer.set_state(1, WorkerState.READY)
        writer.update_load(1, active=4, done=10, failed=1)
        view = reader.view(1)
        assert view.state == WorkerState.READY
        assert view.info == {"engine": "tone", "sample_rate": 24000, "voices": ["default"]}
        assert (view.active, view.jobs_done, view.jobs_failed) == (4, 10, 1)
        assert (view.pid, view.restarts) == (999, 2)
        assert view.heartbeat >= view.started

        # the neighbours are untouched
        assert reader.view(0).state == WorkerState.EMPTY and reader.view(2).pid == 0
    finally:
        writer.close()
        reader.close()


def test_beat_updates_only_the_heartbeat(board_path):
    board = Board.open(board_path)
    board.reset(0, 42, 0)
    board.update_load(0, 2, 3, 4)
    before = board.view(0)
    board.beat(0)
    after = board.view(0)
    assert after.heartbeat >= before.heartbeat
    assert (after.pid, after.state, after.active, after.jobs_done, after.jobs_failed, after.started) == \
        (before.pid, before.state, before.active, before.jobs_done, before.jobs_failed, before.started)
    board.close()


@pytest.mark.parametrize("state", [WorkerState.FAILED, WorkerState.STOPPED])
def test_failed_and_stopped_clear_the_active_count(board_path, state):
    board = Board.open(board_path)
    board.reset(0, 42, 0)
    board.update_load(0, 5, 0, 0)
    board.set_state(0, state, "it died")
    view = board.view(0)
    assert view.state == state and view.active == 0 and view.last_error == "it died"
    board.close()


def test_ready_keeps_the_error_unless_given_and_reset_clears_it(board_path):
    board = Board.open(board_path)
    board.reset(0, 42, 0)
    board.set_state(0, WorkerState.FAILED, "first failure")
    board.set_state(0, WorkerState.READY)
    assert board.view(0).last_error == "first failure"
    board.publish_info(0, {"a": 1})
    board.reset(0, 43, 1)
    view = board.view(0)
    assert view.last_error == "" and view.info == {} and view.pid == 43
    board.close()


def test_long_ascii_text_is_truncated_to_the_field(board_path):
    board = Board.open(board_path)
    board.set_state(0, WorkerState.FAILED, "e" * 5000)
    assert board.view(0).last_error == "e" * (ERROR_BYTES - 1)
    # the overlong error did not spill into the next slot
    assert board.view(1).last_error == "" and board.view(1).info == {}
    board.close()


def test_info_too_long_reads_as_empty_and_does_not_spill(board_path):
    board = Board.open(board_path)
    board.publish_info(0, {"voices": ["v" * 100] * 50})     # > INFO_BYTES of JSON
    assert board.view(0).info == {}
    assert board.view(0).last_error == ""
    board.close()


def test_multibyte_text_truncation_never_raises(board_path):
    board = Board.open(board_path)
    for text in ("é" * 1000, "✓" * 1000, "a" + "😀" * 500):
        board.set_state(0, WorkerState.FAILED, text)
        read = board.view(0).last_error
        assert len(read.encode("utf-8")) <= ERROR_BYTES + 3
        assert read.rstrip("\ufffd") and text.startswith(read.rstrip("\ufffd"))
    board.close()


def test_multibyte_text_truncated_on_a_character_boundary(board_path):
    board = Board.open(board_path)
    board.set_state(0, WorkerState.FAILED, "é" * 1000)
    read = board.view(0).last_error
    assert "\ufffd" not in read
    assert read == "é" * ((ERROR_BYTES - 1) // 2)
    board.close()


def test_info_fits_a_realistic_engine_description(board_path):
    board = Board.open(board_path)
    info = {"engine": "chatterbox", "model": "chatterbox-multilingual", "device": "cuda:0",
            "sample_rate": 24000, "model_names": ["chatterbox", "chatterbox-multilingual", "tts-1", "tts-1-hd"],
            "languages": [f"l{i}" for i in range(40)], "native_speed": None}
    board.publish_info(0, info)
    assert board.view(0).info == info
    assert INFO_BYTES > 1000
    board.close()


def test_pid_alive():
    assert pid_alive(os.getpid())
    assert not pid_alive(0)
    assert not pid_alive(-5)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not pid_alive(child.pid)
