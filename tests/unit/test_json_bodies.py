"""JSON bodies are bounded (CHATTERBOX_MAX_JSON_BYTES) on every route, parsed off the hub when big,
parsed once, and too deep a nesting is a 400 wherever JSON is read (bodies.py)."""
from __future__ import annotations

import io
import json
import time

import pytest
from flask import Flask, jsonify, request

from chatterbox_server.api import bodies
from chatterbox_server.errors import ApiError
from chatterbox_server.settings import Settings

DEEP = b"[" * 100_000 + b"]" * 100_000


def make_app(**settings) -> Flask:
    app = Flask(__name__)
    app.config["SETTINGS"] = Settings(**settings)
    app.config["MAX_CONTENT_LENGTH"] = 21 * 1024 * 1024        # the upload limit, far above the JSON limit
    bodies.init_app(app)

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return jsonify({"message": error.message, "param": error.param}), error.status

    @app.post("/object")
    def whole():
        return jsonify(sorted(bodies.json_object()))

    @app.post("/any")
    def any_reader():                   # a view that reads JSON itself, like voice_library.field
        body = bodies.json_or_none()
        return jsonify({"dict": isinstance(body, dict), "again": request.get_json(silent=True) is body})

    return app


def test_a_json_body_over_the_limit_is_a_413_before_it_is_parsed():
    client = make_app(max_json_bytes=1024 * 1024).test_client()
    big = json.dumps({"x": [1] * 3_000_000}).encode()            # 9 MB: about 0.3 s of parsing, on the hub
    started = time.perf_counter()
    response = client.post("/object", data=big, content_type="application/json")
    assert response.status_code == 413, response.get_data(as_text=True)
    assert "CHATTERBOX_MAX_JSON_BYTES" in response.json["message"] and str(len(big)) in response.json["message"]
    assert time.perf_counter() - started < 0.1
    response = client.post("/any", data=big, content_type="application/json")     # any route that reads JSON
    assert response.status_code == 413


def test_a_chunked_json_body_is_cut_at_the_limit():
    client = make_app(max_json_bytes=1024).test_client()
    body = io.BytesIO(b'{"x": "' + b"a" * 4096 + b'"}')      # no Content-Length, as gunicorn hands a chunked body
    response = client.post("/object", input_stream=body, content_type="application/json",
                           environ_base={"wsgi.input_terminated": True})
    assert response.status_code == 413 and "CHATTERBOX_MAX_JSON_BYTES" in response.json["message"]


def test_a_big_body_within_the_limit_is_parsed_off_the_hub_and_once():
    client = make_app().test_client()
    body = json.dumps({f"k{i}": "v" * 10 for i in range(10_000)}).encode()
    assert len(body) > bodies.OFF_HUB_JSON_BYTES
    response = client.post("/object", data=body, content_type="application/json")
    assert response.status_code == 200 and len(response.json) == 10_000
    assert client.post("/any", data=body, content_type="application/json").json == {"dict": True, "again": True}


@pytest.mark.parametrize("route", ["/object", "/any"])
def test_deep_nesting_is_never_a_500(route):
    response = make_app().test_client().post(route, data=DEEP, content_type="application/json")
    assert response.status_code in (200, 400)
    if route == "/object":
        assert response.status_code == 400 and "nested too deeply" in response.json["message"]
    else:
        assert response.json == {"dict": False, "again": True}        # get_json(silent=True): None, not parsed again


def test_a_json_form_field_is_bounded_and_deep_nesting_is_a_400():
    with make_app(max_json_bytes=1024).test_request_context("/"):
        with pytest.raises(ApiError) as caught:
            bodies.loads_field('{"a": "' + "x" * 2000 + '"}', "request_json")
        assert caught.value.status == 413 and caught.value.param == "request_json"
    with make_app().test_request_context("/"):
        with pytest.raises(ApiError) as caught:
            bodies.loads_field(DEEP.decode(), "request_json")
        assert caught.value.status == 400 and "nested too deeply" in caught.value.message
        assert bodies.loads_field('{"a": 1}', "request_json") == {"a": 1}
