"""The stores through a real server (tone engine): VC from JSON that names a stored VC input or a
URL, the generation metadata of outputs, folder-qualified voices and a voice's default parameters."""
from __future__ import annotations

import io
import threading
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import requests
from serverkit import start_server

from chatterbox_server.audio.encoders import pcm_to_wav

pytestmark = pytest.mark.server


def recording(seconds: float, rate: int, frequency: float = 220.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return pcm_to_wav((0.4 * np.sin(2 * np.pi * frequency * t) * 32767).astype(np.int16), rate)


SOURCE = recording(3.0, 16000)
TARGET = recording(3.0, 22050, 180.0)


def seconds_of(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as audio:
        return audio.getnframes() / audio.getframerate()


class Files(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = {"/source.wav": SOURCE, "/target.wav": TARGET}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def files_url():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Files)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("stores"), engine="tone", front_workers="1",
                          url_fetch_allow_private="true", graceful_timeout="5")
    base = server.extended_base
    voice = requests.post(base + "/api/v1/voice", files={"voice_file": ("speaker1.wav", TARGET)},
                          data={"folder_path": "team", "default_parameters": '{"speed_factor": 2.0}'}, timeout=30)
    assert voice.status_code == 201, voice.text
    uploaded = requests.post(base + "/api/v1/vc_input", files={"vc_input_file": ("in.wav", SOURCE)},
                             data={"folder_path": "ep1", "text": "a test tone"}, timeout=30)
    assert uploaded.status_code == 201, uploaded.text
    yield server
    server.stop()


def vc_json(server, body: dict, mode: str = "stream") -> requests.Response:
    return requests.post(server.extended_base + f"/api/v1/vc?response_mode={mode}", json=body, timeout=60)


def test_vc_json_from_a_stored_input_matches_the_multipart_upload(server):
    body = {"input_audio_source": "ep1/in.wav", "target_voice_source": "team/speaker1.wav", "chunk_sec": 2,
            "overlap_sec": 0.5, "export_formats": ["wav"], "seed": 7}
    by_json = vc_json(server, body)
    assert by_json.status_code == 200, by_json.text
    name = by_json.headers["Content-Disposition"].split('"')[1]
    assert name.startswith("vc_") and name.endswith("_chunk2_overlap0.5_voicespeaker1.wav")
    form = {"target_voice_source": "team/speaker1", "chunk_sec": "2", "overlap_sec": "0.5", "seed": "7"}
    by_upload = requests.post(server.extended_base + "/api/v1/vc", data=form,
                              files={"input_audio": ("in.wav", SOURCE)}, timeout=60)
    assert by_upload.status_code == 200 and by_upload.content == by_json.content
    listing = requests.get(server.extended_base + f"/api/v1/outputs?filenames={name}", timeout=10).json()
    entry = listing["files"][0]
    assert entry["generation_type"] == "vc" and entry["source_files"] == ["ep1/in.wav", "team/speaker1.wav"]
    assert entry["parameters"]["chunk_sec"] == 2 and entry["parameters"]["seed"] == 7
    assert entry["duration_seconds"] == pytest.approx(3.0, abs=0.01)


def test_vc_json_from_urls(server, files_url):
    body = {"input_audio_source": files_url + "/source.wav", "target_voice_source": files_url + "/target.wav"}
    response = vc_json(server, body, mode="url")
    assert response.status_code == 200, response.text
    files = response.json()["output_files"]
    assert [f["format"] for f in files] == ["wav", "mp3"]          # the peer's default export formats
    assert seconds_of(requests.get(files[0]["url"], timeout=10).content) == pytest.approx(3.0, abs=0.01)
    missing = vc_json(server, {**body, "input_audio_source": files_url + "/missing.wav"})
    assert missing.status_code == 400 and "404" in missing.json()["detail"]


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"target_voice_source": "team/speaker1"}, 400, "input_audio_source"),
    ({"input_audio_source": "ep1/in.wav"}, 400, "target_voice_source"),
    ({"input_audio_source": "ep1/none.wav", "target_voice_source": "team/speaker1"}, 404, "input_audio_source"),
    ({"input_audio_source": "../voices/team/speaker1.wav", "target_voice_source": "team/speaker1"}, 400,
     "input_audio_source"),
    ({"input_audio_source": "ep1/in.wav", "target_voice_source": "../../etc/passwd"}, 400, "target_voice_source"),
    ({"input_audio_source": "ftp://example.com/a.wav", "target_voice_source": "team/speaker1"}, 400,
     "input_audio_source"),
    ({"input_audio_source": "ep1/in.wav", "target_voice_source": "team/speaker1", "chunk_sec": 0}, 400, "chunk_sec"),
    ({"input_audio_source": "ep1/in.wav", "target_voice_source": "team/speaker1", "chunk_sec": 2,
      "overlap_sec": 3}, 400, "overlap_sec"),
    ({"input_audio_source": "ep1/in.wav", "target_voice_source": "team/speaker1", "colour": "x"}, 400, "colour"),
])
def test_vc_json_errors_name_the_field(server, body, status, named):
    response = vc_json(server, body)
    assert response.status_code == status, response.text
    assert named in response.json()["detail"]


def test_a_voice_in_a_folder_and_its_default_parameters(server):
    text = {"input": "one two three four", "seed": 3, "response_format": "wav"}
    plain = requests.post(server.url("/v1/audio/speech"), json=text, timeout=30).content
    with_defaults = requests.post(server.url("/v1/audio/speech"), json={**text, "voice": "team/speaker1"},
                                  timeout=30).content
    overridden = requests.post(server.url("/v1/audio/speech"),
                               json={**text, "voice": "speaker1", "speed": 1.0}, timeout=30).content
    assert seconds_of(with_defaults) == pytest.approx(seconds_of(plain) / 2, rel=0.05)     # speed_factor 2.0
    assert seconds_of(overridden) == pytest.approx(seconds_of(plain), rel=0.05)
    extended = requests.post(server.extended_base + "/api/v1/tts",
                             json={"text": "one two three four", "reference_audio_filename": "team/speaker1.wav",
                                   "seed": 3}, timeout=30)
    assert extended.status_code == 200 and seconds_of(extended.content) == pytest.approx(seconds_of(with_defaults),
                                                                                           rel=0.05)
    name = extended.headers["Content-Disposition"].split('"')[1]
    entry = requests.get(server.extended_base + f"/api/v1/outputs?filenames={name}", timeout=10).json()["files"][0]
    assert entry["generation_type"] == "tts" and entry["parameters"]["speed_factor"] == 2.0
    assert entry["parameters"]["reference_audio_filename"] == "team/speaker1"


def test_two_instances_sharing_data_dir_keep_each_others_changes(server, tmp_path):
    """Another server on the same DATA_DIR: aliases and metadata changed through both at once."""
    from concurrent.futures import ThreadPoolExecutor
    other = start_server(tmp_path, engine="tone", front_workers="2", data_dir=str(server.data_dir),
                         graceful_timeout="5")
    try:
        def change(base: str, prefix: str) -> None:
            for index in range(5):
                added = requests.post(base + "/v1/voices/team/speaker1/aliases", data={"alias": f"{prefix}{index}"},
                                      timeout=30)
                assert added.status_code == 201, added.text
                tagged = requests.put(base + "/api/v1/voice/team/speaker1/metadata",
                                      json={"description": f"{prefix}{index}"}, timeout=30)
                assert tagged.status_code == 200, tagged.text
        with ThreadPoolExecutor(4) as pool:
            for result in [pool.submit(change, base, prefix) for base, prefix in (
                    (server.url(""), "a"), (server.extended_base, "b"), (other.url(""), "c"),
                    (other.extended_base, "d"))]:
                result.result()
        for base in (server.url(""), other.url("")):
            aliases = requests.get(base + "/v1/voices/team/speaker1/aliases", timeout=10).json()["aliases"]
            assert sorted(aliases) == sorted(f"{p}{i}" for p in "abcd" for i in range(5))
        voice = requests.get(other.extended_base + "/api/v1/voices?folder=team", timeout=10).json()["voices"][0]
        assert voice["description"] in {f"{p}4" for p in "abcd"} and voice["default_parameters"]
    finally:
        other.stop()
        for prefix in "abcd":
            for index in range(5):
                requests.delete(server.url(f"/v1/voices/team/speaker1/aliases/{prefix}{index}"), timeout=10)
