"""What /health says of the optional parts, from the facts the processes report."""
from chatterbox_server.runtime.asr_availability import engine_availability, whisper_availability
from workers.ipc.asr import AsrStatus


def status(**overrides) -> AsrStatus:
    return AsrStatus(**{"loaded": (), "failed": (), "local": None, "offline": False, **overrides})


def test_whisper_states_in_order_of_precedence():
    assert whisper_availability(None, "refused")["code"] == "process_unreachable"
    assert whisper_availability(status(loaded=("medium",), failed=(("x", "y"),)))["available"] is True
    assert whisper_availability(status(local="/models/medium"))["code"] == "on_disk"
    failed = whisper_availability(status(failed=(("medium", "OSError: no space"),), offline=True))
    assert failed == {"available": False, "code": "load_failed", "reason": "Whisper 'medium' failed to load: "
                      "OSError: no space", "effect": "/api/v1/tts makes one unchecked take per chunk"}
    assert whisper_availability(status(offline=True))["code"] == "no_local_model"
    assert whisper_availability(status())["available"] is None


def test_engine_fallback_says_why():
    fell_back = engine_availability("hibari", "auto", "ModuleNotFoundError: No module named 'torch'")
    assert fell_back["available"] is False and "No module named 'torch'" in fell_back["reason"]
    assert engine_availability("chatterbox", "auto", None)["available"] is True
    assert engine_availability(None, "auto", None)["available"] is None
