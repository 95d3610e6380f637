"""Which bracket tags an engine says it speaks (EngineInfo.tags); Chatterbox's are checked against its
tokenizer in test_chatterbox_engine.py."""
from __future__ import annotations

import dataclasses
import json

from chatterbox_server.runtime.pool_client import engine_info_from_dict
from workers.engines.base import EngineInfo
from workers.engines.tags import TURBO_DELIVERY_TAGS, TURBO_SOUND_TAGS, TURBO_TAGS
from workers.engines.tone import ToneEngine
from workers.ipc.board import INFO_BYTES, Board


def test_turbo_has_nineteen_tags_sounds_then_delivery():
    assert TURBO_TAGS == (
        "laugh", "chuckle", "gasp", "cough", "sigh", "groan", "sniff", "shush", "clear throat",
        "whispering", "angry", "fear", "surprised", "crying", "happy", "sarcastic", "dramatic", "narration",
        "advertisement")
    assert TURBO_TAGS == TURBO_SOUND_TAGS + TURBO_DELIVERY_TAGS and len(set(TURBO_TAGS)) == 19
    assert all(tag == tag.strip().lower() and not set(tag) & set("[]<>") for tag in TURBO_TAGS)


def test_the_whole_chunk_engines_speak_no_tags():
    from workers.engines.hibari import HibariEngine
    assert ToneEngine().load().tags == ()
    assert HibariEngine().load().tags == ()


def test_tags_reach_the_front_workers_through_the_board(tmp_path):
    """As a turbo worker on a GPU publishes its info (model_worker._publish_info): within the slot's
    INFO_BYTES, and back as the same EngineInfo."""
    info = EngineInfo(engine="chatterbox", model="chatterbox-turbo", device="cuda:0", sample_rate=24000,
                      model_names=("chatterbox", "chatterbox-turbo"), supports_cloning=True, tags=TURBO_TAGS)
    extra = {"memory": {"device": "cuda:0", "allocated_bytes": 10**11, "reserved_bytes": 10**11,
                        "peak_allocated_bytes": 10**11},
             "outbox": {"parked_jobs": 100}, "admission": {"rows": 64, "per_unit": {"speech": 1 / 3, "convert": 1 / 7}}}
    published = {**dataclasses.asdict(info), **extra}
    assert len(json.dumps(published, separators=(",", ":"))) < INFO_BYTES // 2
    board = Board(str(tmp_path / "board"), 1, create=True)
    try:
        board.publish_info(0, published)
        read = board.view(0).info
    finally:
        board.close()
    assert read["tags"] == list(TURBO_TAGS)
    assert engine_info_from_dict(read) == info
