"""Request budgets against a real server (tone engine): hostile requests of every kind are answered
in well under 3 s with a 4xx naming the limit, before any synthesis; no front worker is stalled
(/health p95 stays under 250 ms meanwhile) or restarted."""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import psutil
import pytest
import requests
from serverkit import Server, start_server

pytestmark = [pytest.mark.server, pytest.mark.serial]
CHEAP = {"bypass_whisper_checking": True, "num_candidates_per_chunk": 1, "export_formats": ["wav"]}
CHAIN = "a=>" + " ".join(["b"] * 30) + ", b=>" + " ".join(["c"] * 30)    # x30 per level
SHORT_SENTENCES = ("Abc def ghi jkl mno. " * 200)[:4096]                     # 196 chunks
DEEP = "[" * 50_000 + "]" * 50_000


def wav_bytes(seconds: float, rate: int = 16000) -> bytes:
    import numpy as np

    from chatterbox_server.synthesis.voices import pcm_to_wav
    t = np.arange(int(seconds * rate)) / rate
    return pcm_to_wav((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), rate)


VC_LIMIT_SECONDS = 30           # the default is 600 s: 19 MB of WAV a request; the same code path at 1 MB
LONG_CHUNKS = 1000              # the default (10,000) admits any text of 200,000 characters; this one does not
LONG_RECORDING = wav_bytes(VC_LIMIT_SECONDS + 1.0)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("budget"), engine="tone", front_workers="2", model_workers="1",
                          max_vc_seconds=str(VC_LIMIT_SECONDS), longtext_max_chunks=str(LONG_CHUNKS))
    yield server
    server.stop()


def hostile_requests(server: Server) -> dict[str, tuple[str, dict]]:
    """name -> (path, requests keyword arguments) of requests each over one budget."""
    ext = server.extended_base
    tts = ext + "/api/v1/tts?response_mode=url"
    return {
        "takes": (tts, {"json": {"text": SHORT_SENTENCES, "num_candidates_per_chunk": 10,
                                 "max_attempts_per_candidate": 10}}),
        "chain": (tts, {"json": {**CHEAP, "text": "a a a a " * 500, "sound_words_field": CHAIN}}),
        "rules": (tts, {"json": {**CHEAP, "text": "hello there " * 340,
                                 "sound_words_field": ",".join(f"w{i}" for i in range(1000))}}),
        "silences": (ext + "/api/v1/concat", {"json": {"files": ["x.wav"] + ["(10s)"] * 20_000}}),   # 180 KB
        "hour_of_silence": (ext + "/api/v1/concat", {"json": {"files": ["x.wav"] + ["(10s)"] * 361}}),
        "mixed": (ext + "/api/v1/concat/mixed", {"json": {"segments": [
            {"type": "tts", "tts": {**CHEAP, "text": "a a a a " * 500, "sound_words_field": CHAIN}}] * 100}}),
        "mixed_takes": (ext + "/api/v1/concat/mixed", {"json": {"segments": [
            {"type": "tts", "tts": {"text": SHORT_SENTENCES}}] * 100}}),
        "big_json": (ext + "/api/v1/tts", {"data": b'{"text": "' + b"a" * (3 * 1024 * 1024) + b'"}',
                                           "headers": {"Content-Type": "application/json"}}),
        "deep_json": (server.url("/v1/audio/speech"), {"data": DEEP, "headers": {"Content-Type": "application/json"}}),
        # 200,000 characters (the input limit) cut at 50: 4,167 chunks, each a row, a file and a job;
        # refused from a lower bound (3,000) before the text is cut
        "long_chunks": (server.url("/v1/audio/speech/long"), {"json": {"input": "Ab. " * 50_000,
                                                                      "streaming_chunk_size": 50}}),
        "vc_seconds": (ext + "/api/v1/vc", {"data": {"target_voice_source": "anyone"},
                                            "files": {"input_audio": ("long.wav", LONG_RECORDING)}}),
    }


EXPECTED = {"takes": (413, "CHATTERBOX_MAX_TAKES"), "chain": (413, "CHATTERBOX_MAX_PREPARED_CHARS"),
            "rules": (413, "CHATTERBOX_MAX_SOUND_WORDS"), "silences": (413, "CHATTERBOX_MAX_CONCAT_ITEMS"),
            "hour_of_silence": (413, "CHATTERBOX_MAX_CONCAT_SECONDS"),
            "mixed": (413, "CHATTERBOX_MAX_PREPARED_CHARS"), "mixed_takes": (413, "CHATTERBOX_MAX_SYNTHESIS_CHARS"),
            "big_json": (413, "CHATTERBOX_MAX_JSON_BYTES"), "deep_json": (400, "nested too deeply"),
            "long_chunks": (413, "CHATTERBOX_LONGTEXT_MAX_CHUNKS"), "vc_seconds": (413, "CHATTERBOX_MAX_VC_SECONDS")}


def message(response: requests.Response) -> str:
    body = response.json()
    return body["detail"] if "detail" in body else body["error"]["message"]


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_hostile_request_is_refused_fast_and_names_its_limit(server, kind):
    url, kwargs = hostile_requests(server)[kind]
    started = time.monotonic()
    response = requests.post(url, timeout=30, **kwargs)
    elapsed = time.monotonic() - started
    status, limit = EXPECTED[kind]
    assert response.status_code == status, response.text[:500]
    assert limit in message(response) and elapsed < 3, (message(response), elapsed)


def test_the_refusal_names_the_field_and_comes_before_any_synthesis(server):
    url, kwargs = hostile_requests(server)["mixed_takes"]
    before = requests.get(server.url("/v1/status/statistics"), timeout=5)
    response = requests.post(url, timeout=30, **kwargs)
    assert response.status_code == 413 and response.json()["error_code"] == "OVER_BUDGET"
    assert response.json()["detail"].startswith("segments[1].tts.text needs up to ")
    after = requests.get(server.url("/v1/status/statistics"), timeout=5)
    if before.status_code == 200:
        assert before.json() == after.json()        # no take ran


def test_the_default_limits_admit_ordinary_requests(server):
    ext = server.extended_base
    ok = requests.post(ext + "/api/v1/tts?response_mode=url", timeout=60,
                       json={**CHEAP, "text": "Um, hello there. Quickly now.",
                             "sound_words_field": "um, quickly=>slowly"})
    assert ok.status_code == 200, ok.text
    name = ok.json()["output_files"][0]["filename"]
    joined = requests.post(ext + "/api/v1/concat?response_mode=url", timeout=60,
                           json={"files": [name, "(1s)", name], "output_filename": "joined.v2.wav"})
    assert joined.status_code == 200, joined.text
    assert joined.json()["output_files"] == ["joined.v2.wav"]
    mixed = requests.post(ext + "/api/v1/concat/mixed?response_mode=url", timeout=60,
                          json={"segments": [{"type": "server_file", "source": name},
                                             {"type": "silence", "source": "(1s)"},
                                             {"type": "tts", "tts": {**CHEAP, "text": "And goodbye."}}]})
    assert mixed.status_code == 200, mixed.text
    assert mixed.json()["total_duration_seconds"] > 1


@pytest.mark.parametrize("name", ["x./a", "x./a.wav", "x.mp3/.."])
def test_a_concat_output_name_with_a_folder_is_a_400_before_the_work(server, name):
    response = requests.post(server.extended_base + "/api/v1/concat", timeout=30,
                             json={"files": ["(1s)", "nothing-here.wav"], "output_filename": name})
    assert response.status_code == 400 and "output_filename" in message(response), response.text


def test_deep_json_is_never_a_500(server):
    """RecursionError is no ValueError: each place that parses JSON turns it into a 400."""
    ext = server.extended_base
    deep_json = {"data": DEEP, "headers": {"Content-Type": "application/json"}}
    cases = {
        "concat/mixed request_json": requests.post(ext + "/api/v1/concat/mixed", data={"request_json": DEEP},
                                                   timeout=30),
        "voice default_parameters": requests.post(ext + "/api/v1/voice", timeout=30,
                                                  files={"voice_file": ("v.wav", b"RIFF0000WAVE", "audio/wav")},
                                                  data={"name": "deep", "default_parameters": DEEP}),
        "library default voice": requests.post(server.url("/v1/voices/default"), timeout=30, **deep_json),
        "library alias": requests.post(server.url("/v1/voices/nobody/aliases"), timeout=30, **deep_json),
        "speech": requests.post(server.url("/v1/audio/speech"), timeout=30, **deep_json),
    }
    wrong = {what: response.status_code for what, response in cases.items() if not 400 <= response.status_code < 500}
    assert not wrong, wrong


def front_workers(server: Server) -> set[int]:
    return {child.pid for child in psutil.Process(server.process.pid).children()
            if "model" not in " ".join(child.cmdline())}


def test_health_stays_fast_while_hostile_requests_are_in_flight(server):
    hostile = hostile_requests(server)
    workers = front_workers(server)
    stop = threading.Event()
    answers: list[tuple[str, int, float]] = []

    def attack(kinds: list[str]) -> None:
        session = requests.Session()
        while not stop.is_set():
            for kind in kinds:
                url, kwargs = hostile[kind]
                started = time.monotonic()
                try:
                    status = session.post(url, timeout=10, **kwargs).status_code
                except requests.RequestException:
                    status = 0
                answers.append((kind, status, time.monotonic() - started))

    kinds = sorted(hostile)
    threads = [threading.Thread(target=attack, args=(kinds[i::3],), daemon=True) for i in range(3)]
    for thread in threads:
        thread.start()
    latencies = []
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        started = time.monotonic()
        assert requests.get(server.url("/health"), timeout=5).status_code == 200
        latencies.append(time.monotonic() - started)
        time.sleep(0.05)
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    latencies.sort()
    p95 = latencies[int(len(latencies) * 0.95)]
    print(f"/health p95 {p95 * 1000:.0f} ms over {len(latencies)} probes, {len(answers)} hostile answers")
    assert p95 < 0.25, (p95, latencies[-5:])
    assert len(answers) > len(hostile), answers
    for kind, status, elapsed in answers:
        assert status == EXPECTED[kind][0] and elapsed < 3, (kind, status, elapsed)
    assert front_workers(server) == workers                          # none killed or restarted


def test_oversized_bodies_on_keep_alive_connections_do_not_starve_health(server):
    """gunicorn discards an unread body 1 KiB at a time from a buffer it copies whole each time: three
    keep-alive clients posting 3 MB of JSON held /health off both front workers (every probe timed out
    at 5 s). The app now reads the refused body itself in 1 MiB pieces."""
    body = b'{"text": "' + b"a" * (3 * 1024 * 1024) + b'"}'
    stop = threading.Event()
    statuses: list[int] = []

    def post_oversized() -> None:
        session = requests.Session()                # keep-alive: the unread body must be discarded
        while not stop.is_set():
            try:
                statuses.append(session.post(server.extended_base + "/api/v1/tts", data=body, timeout=10,
                                             headers={"Content-Type": "application/json"}).status_code)
            except requests.RequestException:
                statuses.append(0)
                session = requests.Session()
    threads = [threading.Thread(target=post_oversized, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(1.0)
        waits = []
        for _ in range(10):
            started = time.monotonic()
            assert requests.get(server.url("/health"), timeout=5).status_code == 200
            waits.append(time.monotonic() - started)
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
    assert max(waits) < 2.0, waits
    assert statuses and set(statuses) == {413}, sorted(set(statuses))


def test_concat_mixed_counts_against_the_per_key_stream_limit(tmp_path):
    server = start_server(tmp_path, engine="tone", front_workers="1", model_workers="1", max_streams_per_key="1")
    try:
        slow = threading.Thread(target=requests.post, daemon=True,
                                args=(server.extended_base + "/api/v1/tts",),
                                kwargs={"json": {**CHEAP, "text": "Slow words. [[sleep:4]]"}, "timeout": 30})
        slow.start()
        time.sleep(1.0)
        response = requests.post(server.extended_base + "/api/v1/concat/mixed", timeout=30,
                                 json={"segments": [{"type": "tts", "tts": {**CHEAP, "text": "Hello."}}]})
        assert response.status_code == 429, response.text
        slow.join(timeout=30)
    finally:
        server.stop()


# -- whole-file answers within the proxy's timeout ------------------------------------------------
@pytest.fixture(scope="module")
def short_proxy_server(tmp_path_factory) -> Iterator[Server]:
    """A whole-file limit of 3 s: with the tone engine (0.005 s a character before any is measured)
    a 1,000-character text fits, a 4,000-character one does not."""
    server = start_server(tmp_path_factory.mktemp("whole-file"), engine="tone", front_workers="1",
                          model_workers="1", max_whole_file_seconds="3")
    yield server
    server.stop()


def test_a_whole_file_that_would_outlast_the_proxy_is_refused_before_any_work(short_proxy_server):
    server = short_proxy_server
    long_text = ("Abc def ghi jkl mno pqr. " * 200)[:4000]
    cases = {
        "/v1/audio/speech": (server.url("/v1/audio/speech"), {"input": long_text, "voice": "alloy"}),
        "/api/v1/tts": (f"{server.extended_base}/api/v1/tts",
                        {"text": long_text[:1000], "num_candidates_per_chunk": 2, "max_attempts_per_candidate": 3}),
        "/api/v1/concat/mixed": (f"{server.extended_base}/api/v1/concat/mixed",
                                 {"segments": [{"type": "tts", "tts": {"text": long_text, "bypass_whisper_checking":
                                                                       True}}]}),
    }
    for name, (url, body) in cases.items():
        started = time.monotonic()
        response = requests.post(url, json=body, timeout=30)
        elapsed = time.monotonic() - started
        assert response.status_code == 413, (name, response.status_code, response.text[:300])
        text = message(response)
        assert "CHATTERBOX_MAX_WHOLE_FILE_SECONDS" in text and "stream" in text, (name, text)
        assert elapsed < 3, (name, elapsed)
    # the same text streamed is served: streaming has no such limit
    streamed = requests.post(server.url("/v1/audio/speech/stream"), json={"input": long_text, "voice": "alloy"},
                             timeout=120)
    assert streamed.status_code == 200 and len(streamed.content) > 0
    # and a whole file that fits is served
    fits = requests.post(server.url("/v1/audio/speech"), json={"input": long_text[:300], "voice": "alloy"},
                         timeout=60)
    assert fits.status_code == 200, fits.text[:300]


# -- a voice's stored sound_words_field ------------------------------------------------------------
def test_a_voices_stored_sound_words_are_bounded_when_stored(server):
    """Every later request with the voice applies its defaults: too many rules, or too long a field,
    is a 400 naming the limit when the defaults are stored, on upload and on a metadata change."""
    import io

    import numpy as np
    import soundfile
    buffer = io.BytesIO()
    soundfile.write(buffer, (np.sin(np.arange(24000 * 3) * 0.05) * 0.3).astype(np.float32), 24000, format="WAV")
    ext = server.extended_base
    many = ",".join(f"w{i}=>" for i in range(300))             # 300 rules (limit 200), 1,790 characters
    too_long = "a=>" + "b " * 2100                              # one rule of 4,203 characters
    for words, limit in ((many, "CHATTERBOX_MAX_SOUND_WORDS"), (too_long, "CHATTERBOX_MAX_INPUT_CHARS")):
        defaults = json.dumps({"sound_words_field": words})
        refused = requests.post(ext + "/api/v1/voice", timeout=30, data={"name": "hostile", "default_parameters":
                                                                          defaults},
                                files={"voice_file": ("hostile.wav", buffer.getvalue(), "audio/wav")})
        assert refused.status_code == 400 and limit in message(refused), refused.text[:300]
        assert "sound_words_field" in message(refused)
    ok = requests.post(ext + "/api/v1/voice", timeout=30, data={"name": "fine", "default_parameters":
                                                                 '{"sound_words_field": "um=>, uh=>"}'},
                       files={"voice_file": ("fine.wav", buffer.getvalue(), "audio/wav")})
    assert ok.status_code == 201, ok.text[:300]
    changed = requests.put(ext + "/api/v1/voice/fine.wav/metadata", timeout=30,
                           json={"default_parameters": {"sound_words_field": many}})
    assert changed.status_code == 400 and "CHATTERBOX_MAX_SOUND_WORDS" in message(changed), changed.text[:300]
    listed = requests.get(ext + "/api/v1/voices", timeout=30).json()
    assert "hostile" not in json.dumps(listed)


# -- long-text jobs and voice conversion -----------------------------------------------------------
def test_long_jobs_and_voice_conversion_name_the_field_and_do_no_work(server):
    """A long job over the chunk limit leaves no job behind; an input over the VC limit is refused
    at its decode, before the target voice is even looked up; what fits is served."""
    url, kwargs = hostile_requests(server)["long_chunks"]
    refused = requests.post(url, timeout=30, **kwargs)
    assert refused.status_code == 413 and refused.json()["error"]["param"] == "streaming_chunk_size"
    assert refused.json()["error"]["code"] == "over_budget" and "at least 3000 chunks" in message(refused)
    listed = requests.get(server.url("/v1/audio/speech/long"), timeout=30)
    assert listed.status_code == 200 and listed.json()["total_jobs"] == 0
    fits = requests.post(url, timeout=30, json={"input": "Ab. " * 5_000, "streaming_chunk_size": 50})
    assert fits.status_code == 200 and fits.json()["total_chunks"] == 417, fits.text[:300]
    requests.delete(server.url(f"/v1/audio/speech/long/{fits.json()['job_id']}"), timeout=30)
    url, kwargs = hostile_requests(server)["vc_seconds"]
    refused = requests.post(url, timeout=30, **kwargs)
    assert refused.status_code == 413 and refused.json()["error_code"] == "OVER_BUDGET"
    assert message(refused).startswith(f"input_audio lasts longer than the limit of {VC_LIMIT_SECONDS} s")
    short = requests.post(url, timeout=30, data={"target_voice_source": "anyone"},
                          files={"input_audio": ("short.wav", wav_bytes(2.0))})
    # within the limit, the request goes on to the target voice (none by that name here)
    assert short.status_code in (400, 404) and message(short).startswith("target_voice_source"), short.text[:300]
