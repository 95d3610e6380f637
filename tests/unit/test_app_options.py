"""App options that need no model: the API key and CORS, through Flask's test client."""
from __future__ import annotations

import pytest

from chatterbox_server.app import create_app
from workers.ipc.board import Board


@pytest.fixture()
def make_client(tmp_path, monkeypatch):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()      # an empty board: no worker, none needed
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))

    def make(**config):
        return create_app({"data_dir": str(tmp_path / "data"), **config}).test_client()
    return make


def test_api_key_is_required_everywhere_but_health(make_client):
    client = make_client(api_key="s3cret")
    response = client.get("/v1/models")
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_api_key"
    assert client.get("/v1/models", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/health").status_code == 503           # open, and not ready: no worker here
    assert client.get("/api/v1/voices").get_json()["success"] is False


def test_no_api_key_means_no_authentication(make_client):
    assert make_client().get("/v1/models").status_code == 200


def test_cors_only_when_configured(make_client):
    origin = {"Origin": "https://app.example"}
    assert "Access-Control-Allow-Origin" not in make_client().get("/v1/models", headers=origin).headers
    headers = make_client(cors_origins="https://app.example").get("/v1/models", headers=origin).headers
    assert headers["Access-Control-Allow-Origin"] == "https://app.example"
    assert "X-Alternative-Formats" in headers["Access-Control-Expose-Headers"]
    preflight = make_client(cors_origins="*", api_key="k").options(
        "/v1/audio/speech", headers={**origin, "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200                       # preflights carry no key
