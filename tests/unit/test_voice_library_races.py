"""Voice library writes from several threads (front workers decode uploads in the hub's pool)."""
from __future__ import annotations

import json
import threading
import time
import wave

import numpy as np
import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.security.untrusted_audio import STORED_RATE
from chatterbox_server.store import voice_library
from chatterbox_server.store.voice_library import VoiceLibrary, check_name


def slow_decode(data: bytes, max_bytes: int):
    seconds = float(data.decode())
    time.sleep(0.2)                     # both uploads are past the first existence check
    return np.zeros(int(seconds * STORED_RATE), np.int16), "wav", seconds


def test_two_uploads_of_one_new_name_never_mix_audio_and_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(voice_library, "decode_reference", slow_decode)
    library = VoiceLibrary(str(tmp_path), 1 << 20)
    outcomes: list[object] = []

    def upload(seconds: str) -> None:
        try:
            outcomes.append(library.add("narrator", seconds.encode()))
        except ApiError as exc:
            outcomes.append(exc.status)

    threads = [threading.Thread(target=upload, args=(seconds,)) for seconds in ("1.5", "3.0")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(map(str, outcomes)).count("409") == 1       # one wins, the other is told it lost
    with wave.open(str(tmp_path / "narrator.wav")) as audio:
        stored_seconds = audio.getnframes() / audio.getframerate()
    meta = json.loads((tmp_path / "narrator.json").read_text())
    assert meta["duration_seconds"] == pytest.approx(stored_seconds)


@pytest.mark.parametrize("name", ["narrator\n", "narrator\r\n", "a/b", "\nnarrator"])
def test_a_name_with_a_trailing_newline_is_refused(name, tmp_path):
    with pytest.raises(ApiError) as caught:
        check_name(name)
    assert caught.value.status == 400
    assert VoiceLibrary(str(tmp_path), 1).get(name) is None
