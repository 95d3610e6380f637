"""The board's info JSON is rewritten in place by a model worker while front workers read it: a
reader must never see half of one write and half of another (that was a spurious 503)."""
from __future__ import annotations

import json
import multiprocessing
import time

from workers.ipc.board import INFO_BYTES, SLOT, Board

INFOS = [{"engine": "tone", "model": "tone", "padding": letter * 1500, "memory": {"n": n}}
         for n, letter in enumerate("ab")]


def test_a_board_written_before_the_sequence_number_still_reads(tmp_path):
    board = Board(str(tmp_path / "board"), 1, create=True)
    board._put_text(0, SLOT.size, INFO_BYTES, json.dumps(INFOS[0]))      # the old layout: text at offset 0
    assert board.view(0).info == INFOS[0]
    board.publish_info(0, INFOS[1])
    assert board.view(0).info == INFOS[1]


def _writer(path: str, seconds: float) -> None:
    board = Board.open(path)
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        board.publish_info(0, INFOS[n % 2])
        n += 1


def test_reads_never_see_a_torn_write(tmp_path):
    path = str(tmp_path / "board")
    board = Board(path, 1, create=True)
    board.publish_info(0, INFOS[0])
    writer = multiprocessing.get_context("fork").Process(target=_writer, args=(path, 1.5))
    writer.start()
    reads = torn = 0
    try:
        while writer.is_alive() or reads == 0:
            info = board.view(0).info
            reads += 1
            torn += info not in INFOS
    finally:
        writer.join(5)
    assert reads > 1000 and torn == 0, f"{torn} of {reads} reads were torn"
