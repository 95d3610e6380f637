"""disable_watermark on /api/v1/tts: honoured only when the operator allows it, and always said."""
from __future__ import annotations

from chatterbox_server.api import extended_tts
from chatterbox_server.api.tts_schema import ExtendedTtsSchema
from workers.engines.base import EngineInfo


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
    assert extended_tts.synthesis_settings(request(), allow_disable=True).watermark is False
    assert extended_tts.synthesis_settings(request(), allow_disable=False).watermark is True
    assert extended_tts.synthesis_settings(request(disable_watermark=False), allow_disable=True).watermark is True
