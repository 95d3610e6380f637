"""Request budgets of long-text jobs and VC inputs through Flask's test client (no model worker):
the refusal is a 413 naming the setting and the field, and comes before any other work (no job row,
no file linked or stored), on creation and on a retry."""
from __future__ import annotations

import hashlib
import io
import json
import os

import numpy as np
import pytest

from chatterbox_server.app import create_app
from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.synthesis.longjobs import files
from chatterbox_server.synthesis.longjobs.rules import ACTIVE, FAILED
from chatterbox_server.text.chunking import chunk_texts
from workers.ipc.board import Board

SHORT_SENTENCES = "Ab. " * 1250          # 5,000 characters: 105 chunks at size 50, 10 at 500


@pytest.fixture()
def make_client(tmp_path, monkeypatch):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()      # no model worker: none is reached
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))

    def make(**settings):
        app = create_app({"data_dir": str(tmp_path / "data"), **settings})
        return app, app.test_client()
    return make


def message(response) -> str:
    body = response.get_json()
    return body["detail"] if "detail" in body else body["error"]["message"]


def param(response) -> str | None:
    """The OpenAI family's `param`; the Extended family's body has none, its message starts with it."""
    return response.get_json()["error"]["param"]


def test_a_long_job_over_the_chunk_limit_is_refused_before_anything_else(make_client):
    """Without the check the request went on to the engine (a 503 here, no model worker)."""
    app, client = make_client(longtext_max_chunks=100)
    response = client.post("/v1/audio/speech/long", json={"input": SHORT_SENTENCES, "streaming_chunk_size": 50})
    assert response.status_code == 413, response.get_data(as_text=True)
    assert "CHATTERBOX_LONGTEXT_MAX_CHUNKS" in message(response) and param(response) == "streaming_chunk_size"
    assert app.extensions["chatterbox"].jobs.count_active() == 0


def failed_job(app, text: str, job_id: str = "old-job") -> None:
    """A failed job of `text` at chunk size 50 whose first chunk was made (a retry would reuse it)."""
    mgmt = app.extensions["chatterbox"]
    params = {"exaggeration": 0.5, "cfg_weight": 0.5, "temperature": 0.8, "speed": 1.0, "language": None,
              "streaming_strategy": "sentence", "streaming_chunk_size": 50, "seed": 7}
    made = files.chunk_path(mgmt.jobs_root, job_id, 0)
    os.makedirs(os.path.dirname(made))
    with open(made, "wb") as f:
        f.write(b"\0\0" * 2400)
    mgmt.jobs.create({"id": job_id, "text": text, "text_length": len(text), "voice": None,
                      "text_hash": hashlib.sha256(text.encode()).hexdigest(), "parameters": json.dumps(params),
                      "output_format": "wav", "owner": None}, chunk_texts(text, "sentence", 50),
                     {0: {"audio_file": os.path.basename(made), "samples": 2400, "synth_ms": 10}})
    assert mgmt.jobs.transition(job_id, ACTIVE, {"status": FAILED})


def test_a_retry_is_checked_against_the_limits_now_in_force(make_client):
    """A job stored under higher limits (or before there were any) is refused on retry, one by one
    or in bulk: no new job row, no chunk linked; the same retry within the limits is accepted."""
    app, client = make_client(longtext_max_chunks=100)
    failed_job(app, SHORT_SENTENCES)
    jobs_root = app.extensions["chatterbox"].jobs_root
    response = client.post("/v1/audio/speech/long/old-job/retry", json={"preserve_chunks": True})
    assert response.status_code == 413, response.get_data(as_text=True)
    assert "CHATTERBOX_LONGTEXT_MAX_CHUNKS" in message(response) and "the job's text" in message(response)
    bulk = client.post("/v1/audio/speech/long/bulk", json={"job_ids": ["old-job"], "action": "retry",
                                                           "confirm": True})
    assert bulk.status_code == 200 and bulk.get_json()["failed_jobs"] == ["old-job"]
    assert app.extensions["chatterbox"].jobs.count_active() == 0
    assert os.listdir(jobs_root) == ["old-job"]                    # no retry's folder, no chunk linked
    app, client = make_client(longtext_max_chunks=200)
    accepted = client.post("/v1/audio/speech/long/old-job/retry", json={"preserve_chunks": True})
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    assert accepted.get_json()["total_chunks"] == 105 and len(os.listdir(jobs_root)) == 2


def test_a_retry_over_a_lowered_character_limit_is_a_413_naming_it(make_client):
    app, client = make_client(longtext_max_chars=1000)
    failed_job(app, SHORT_SENTENCES)
    response = client.post("/v1/audio/speech/long/old-job/retry", json={"new_parameters": {"seed": 3}})
    assert response.status_code == 413 and "CHATTERBOX_LONGTEXT_MAX_CHARS" in message(response)
    assert param(response) == "input"


def wav(seconds: float, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return pcm_to_wav((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), rate)


def test_a_vc_input_longer_than_the_setting_is_a_413_and_is_not_stored(make_client, tmp_path):
    """Before the setting the limit was a constant of 600 s, and this 3 s input was stored."""
    _, client = make_client(max_vc_seconds=2.0)
    response = client.post("/api/v1/vc_input", data={"vc_input_file": (io.BytesIO(wav(3.0)), "talk.wav")},
                           content_type="multipart/form-data")
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.get_json()["error_code"] == "OVER_BUDGET" and "CHATTERBOX_MAX_VC_SECONDS" in message(response)
    assert message(response).startswith("vc_input_file lasts longer than the limit of 2 s")
    assert not [name for name in os.listdir(tmp_path / "data" / "vc_inputs") if name.endswith(".wav")]
    stored = client.post("/api/v1/vc_input", data={"vc_input_file": (io.BytesIO(wav(1.5)), "talk.wav")},
                         content_type="multipart/form-data")
    assert stored.status_code == 201, stored.get_data(as_text=True)


def test_a_concat_over_the_entry_limit_is_refused_before_its_schema_checks_each_entry(make_client, monkeypatch):
    """20,000 silences took ~150 ms of hub CPU in the schema before the count refused them (/health
    p95 208 ms under a flood of them; 28 ms with the count first)."""
    from chatterbox_server.api.extended import concat

    def schema_reached(*_: object, **__: object) -> None:
        raise AssertionError("the schema ran before the entry count")
    monkeypatch.setattr(concat.ConcatSchema, "load", schema_reached)
    _, client = make_client(max_concat_items=1000)
    response = client.post("/api/v1/concat", json={"files": ["x.wav"] + ["(10s)"] * 20_000})
    assert response.status_code == 413 and "CHATTERBOX_MAX_CONCAT_ITEMS" in message(response)
