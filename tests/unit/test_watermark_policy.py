"""disable_watermark on /api/v1/tts and /api/v1/vc: honoured only when the operator allows it, and always said."""
from __future__ import annotations

import io

import numpy as np
import pytest

from chatterbox_server.api.extended import tts as extended_tts
from chatterbox_server.api.extended import vc as extended_vc
from chatterbox_server.api.extended.tts_schema import ExtendedTtsSchema
from chatterbox_server.app import create_app
from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.services import Services
from chatterbox_server.synthesis import checked
from workers.engines.base import EngineInfo
from workers.ipc.board import Board


def request(**body):
    return ExtendedTtsSchema(max_input_chars=100).load({"text": "Hi.", **body})


def engine(name: str) -> EngineInfo:
    return EngineInfo(engine=name, model=name, device="cpu", sample_rate=24000, model_names=(name,))


def header(req, info, allowed):
    return extended_tts.watermark_header(req, info, allowed)["X-Chatterbox-Watermark"]


def test_engines_without_a_watermark_say_so():
    assert header(request(), engine("hibari"), False) == "none (the hibari engine does not watermark)"


def test_the_default_setting_keeps_the_watermark_and_says_why():
    assert header(request(), engine("chatterbox"), False).startswith("applied; disable_watermark refused")
    assert header(request(disable_watermark=False), engine("chatterbox"), False) == "applied"


def test_an_allowed_request_disables_it():
    assert header(request(), engine("chatterbox"), True) == "disabled"


def test_the_switch_reaches_the_engine_settings_only_when_allowed():
    assert checked.synthesis_settings(request(), allow_disable=True).watermark is False
    assert checked.synthesis_settings(request(), allow_disable=False).watermark is True
    assert checked.synthesis_settings(request(disable_watermark=False), allow_disable=True).watermark is True


# -- POST /api/v1/vc: the same rule, carried on the ConvertJob to the engine ----------------------
CHATTERBOX = EngineInfo(engine="chatterbox", model="chatterbox-standard", device="cpu", sample_rate=24000,
                        model_names=("chatterbox",), supports_cloning=True, supports_voice_conversion=True)


def wav_upload(seconds: float = 1.0) -> bytes:
    t = np.arange(int(seconds * 16000)) / 16000
    return pcm_to_wav((np.sin(2 * np.pi * 180 * t) * 8000).astype(np.int16), 16000)


@pytest.fixture(params=[False, True], ids=["refused", "allowed"])
def vc_app(request, tmp_path, monkeypatch):
    """The app with a chatterbox engine on paper and a pool stand-in that records the ConvertJob."""
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))
    monkeypatch.setattr(Services, "engine_info", lambda self, model=None: CHATTERBOX)
    jobs = []

    def synthesize(svc, job, info):
        jobs.append(job)
        return np.zeros(2400, np.int16).tobytes()

    monkeypatch.setattr(extended_vc, "synthesize", synthesize)
    allowed = request.param
    client = create_app({"data_dir": str(tmp_path / "data"), "allow_disable_watermark": allowed}).test_client()
    return client, jobs, allowed


def convert_multipart(client, **form):
    return client.post("/api/v1/vc", data={"input_audio": (io.BytesIO(wav_upload()), "in.wav"),
                                           "target_voice_source": "default", **form},
                       content_type="multipart/form-data")


def convert_json(client, **body):
    upload = client.post("/api/v1/vc_input", data={"vc_input_file": (io.BytesIO(wav_upload()), "talk.wav"),
                                                    "overwrite": "true"}, content_type="multipart/form-data")
    assert upload.status_code in (200, 201), upload.get_json()
    return client.post("/api/v1/vc", json={"input_audio_source": "talk.wav", "target_voice_source": "default",
                                           "export_formats": ["wav"], **body})


@pytest.mark.parametrize("send", [convert_multipart, convert_json], ids=["multipart", "json"])
def test_voice_conversion_honours_disable_watermark_only_when_allowed(vc_app, send):
    client, jobs, allowed = vc_app
    value = "true" if send is convert_multipart else True
    response = send(client, disable_watermark=value)
    assert response.status_code == 200, response.get_json()
    assert jobs[-1].watermark is (not allowed)
    expected = "disabled" if allowed else "applied; disable_watermark refused"
    assert response.headers["X-Chatterbox-Watermark"].startswith(expected)
    assert "X-Chatterbox-Ignored-Fields" not in response.headers


def test_voice_conversion_keeps_the_watermark_when_not_asked(vc_app):
    client, jobs, _ = vc_app
    for response in (convert_multipart(client), convert_json(client, disable_watermark=False)):
        assert response.status_code == 200, response.get_json()
        assert jobs[-1].watermark is True
        assert response.headers["X-Chatterbox-Watermark"] == "applied"
    # the peer's JSON default asks for no watermark; the multipart form's default keeps it
    assert convert_json(client).headers["X-Chatterbox-Watermark"] != "applied"
