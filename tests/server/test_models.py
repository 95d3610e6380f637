"""Several models on one server (issue 20) against real servers on the tone engine, which imitates
each model's features (turbo: tags, no exaggeration, no voice conversion; multilingual: 23 languages)
and takes test knobs for its loads (CHATTERBOX_TONE_WEIGHT_MB, _LOAD_SECONDS, _FAIL_LOAD).

The tone engine's audio differs per voice only, so which model served a request is read from the
server's own counts: each model-worker slot's jobs on /health (the slots follow CHATTERBOX_MODELS).
"""
from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import requests
from realtimekit import RealtimeClient, ws_url
from serverkit import Server, start_server
from test_voice_conversion import recording, wav_bytes
from test_voices import reference_wav, upload
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

pytestmark = pytest.mark.server
THREE = "standard,turbo,multilingual"
TEXT = "Hello there, this is a test."
WORDS = "one two three four"
LONG_CHUNK = f"[[sleep:4]] {WORDS}"          # one chunk that takes 4 s to synthesize, the audio of WORDS
TIMEOUT = 60


# -- helpers -------------------------------------------------------------------------------------------
def auth(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


def speak(server: Server, model: str | None = None, text: str = TEXT, key: str | None = None,
          path: str = "/v1/audio/speech", **fields: Any) -> requests.Response:
    body = {"input": text, "response_format": "pcm", "seed": 5, "streaming_chunk_size": 50, **fields}
    if model is not None:
        body["model"] = model
    return requests.post(server.url(path), json=body, headers=auth(key), timeout=TIMEOUT)


def sse_events(response: requests.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return [json.loads(line[6:]) for line in response.iter_lines(decode_unicode=True) if line.startswith("data: ")]


def models(server: Server, key: str | None = None) -> dict[str, dict]:
    """The served models' entries of /v1/models by short name (standard, turbo, multilingual)."""
    response = requests.get(server.url("/v1/models"), headers=auth(key), timeout=10)
    assert response.status_code == 200, response.text
    return {entry["model"]: entry for entry in response.json()["data"] if "model" in entry}


def states(server: Server, key: str | None = None) -> dict[str, str]:
    return {name: entry["state"] for name, entry in models(server, key).items()}


def wait_for_state(server: Server, model: str, state: str, timeout: float = 10.0, key: str | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entry = models(server, key)[model]
        if entry["state"] == state:
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"{model} is {entry['state']}, not {state}, after {timeout} s: {entry}\n"
                                 f"{server.log()[-3000:]}")
        time.sleep(0.1)


def slot_models(server: Server) -> dict[int, str]:
    return {worker["slot"]: name for name, entry in models(server).items() for worker in entry["workers"]}


def job_counts(server: Server) -> tuple[list[int], int]:
    """Each slot's jobs so far (done or failed), and the jobs in flight."""
    slots = server.health()["workers"]["slots"]
    return [s["jobs_done"] + s["jobs_failed"] for s in slots], sum(s["active_jobs"] for s in slots)


def served_by(server: Server, action: Callable[[], Any], timeout: float = 10.0) -> tuple[Any, list[str]]:
    """What `action` returns and the models whose workers ran jobs for it (from /health's slot counts)."""
    names = slot_models(server)
    before, _ = job_counts(server)
    result = action()
    deadline = time.monotonic() + timeout
    while True:
        after, in_flight = job_counts(server)
        if (sum(after) > sum(before) and in_flight == 0) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return result, sorted({names[slot] for slot, (a, b) in enumerate(zip(after, before, strict=True)) if a != b})


def ok(response: requests.Response) -> requests.Response:
    assert response.status_code == 200, response.text
    return response


def model_action(server: Server, model_id: str, action: str, key: str | None = None,
                 query: str = "") -> requests.Response:
    return requests.post(server.url(f"/v1/models/{model_id}/{action}{query}"), headers=auth(key), timeout=TIMEOUT)


def unload_all(server: Server, key: str | None = None) -> None:
    for name in models(server, key):
        assert model_action(server, f"chatterbox-{name}", "unload", key).status_code == 200
    assert set(states(server, key).values()) == {"unloaded"}


def realtime_turn(server: Server, query: str = "", context: dict | None = None) -> dict:
    """One turn on our socket (a context of its own when `context` gives options); its done event."""
    c = RealtimeClient(ws_url(server.base, "/v1/audio/speech/realtime") + query)
    try:
        c.until_type("session.created")
        context_id = "default"
        if context is not None:
            context_id = "c1"
            c.send("context.create", context_id=context_id, session=context)
            c.until_type("context.created", context_id)
        c.send("input_text.append", context_id=context_id, text=TEXT)
        c.send("input_text.done", context_id=context_id)
        done = c.until_type("speech.audio.done", context_id)
        assert c.received.audio(context_id)
        return done
    finally:
        c.close()


def elevenlabs_turn(server: Server, query: str) -> bytes:
    """One turn on ElevenLabs' stream-input socket; the audio, once the server closed with isFinal."""
    url = ws_url(server.base, "/v1/text-to-speech/alloy/stream-input") + "?output_format=pcm_24000&" + query
    audio, final = b"", False
    with connect(url, open_timeout=10) as ws:
        ws.send(json.dumps({"text": " "}))
        ws.send(json.dumps({"text": TEXT + " "}))
        ws.send(json.dumps({"text": ""}))
        try:
            while True:
                message = json.loads(ws.recv(timeout=30))
                assert "error" not in message, message
                if message.get("audio"):
                    audio += base64.b64decode(message["audio"])
                final = final or bool(message.get("isFinal"))
        except ConnectionClosed:
            pass
    assert final and audio
    return audio


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) * 1024


def in_thread(function: Callable[[], Any]) -> tuple[threading.Thread, dict]:
    """Run `function` in a thread; its result (or error) and end time land in the dict."""
    out: dict = {}

    def run() -> None:
        try:
            out["result"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc
        out["ended"] = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def joined(thread: threading.Thread, out: dict, timeout: float = TIMEOUT) -> Any:
    thread.join(timeout)
    assert not thread.is_alive(), "the request did not finish"
    if "error" in out:
        raise out["error"]
    return out["result"]


# -- three models side by side ---------------------------------------------------------------------------
@pytest.fixture(scope="class")
def three(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("three_models"), engine="tone", models=THREE, front_workers="2",
                          graceful_timeout="3", tone_load_seconds="turbo=2,multilingual=1")
    yield server
    server.stop()


OPENAI_ROUTES = [("chatterbox-turbo", "turbo"), ("turbo", "turbo"), ("tts-1", "turbo"), ("tts-1-hd", "standard"),
                 ("gpt-4o-mini-tts", "standard"), ("chatterbox", "standard"), (None, "standard"),
                 ("tone-multilingual", "multilingual")]


def assert_unknown_model(response: requests.Response, param: str = "model") -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == param
    assert "'nope' is not served here" in error["message"]
    assert "chatterbox-standard, chatterbox-turbo, chatterbox-multilingual" in error["message"]


class TestThreeModels:
    """standard, turbo and multilingual side by side: listing, on-demand loads, routing on every surface."""

    def test_three_models_are_listed_with_their_state_features_and_aliases(self, three):
        response = requests.get(three.url("/v1/models"), timeout=10).json()
        ids = [entry["id"] for entry in response["data"]]
        assert ids[:3] == ["chatterbox-standard", "chatterbox-turbo", "chatterbox-multilingual"]
        assert response["default"] == "chatterbox-standard" and response["memory_budget_bytes"] is None
        served = models(three)
        # the default preload: the default model is loaded, the others wait for their first request
        assert {name: entry["state"] for name, entry in served.items()} == \
            {"standard": "loaded", "turbo": "unloaded", "multilingual": "unloaded"}
        assert served["standard"]["default"] and served["standard"]["preload"] and not served["turbo"]["preload"]
        assert served["standard"]["memory"]["weight_bytes"] == 8 * 2**20
        assert served["turbo"]["memory"]["weight_bytes"] == 0
        assert [w["slot"] for name in THREE.split(",") for w in served[name]["workers"]] == [0, 1, 2]
        # features are known before the load
        turbo, multilingual, standard = served["turbo"]["features"], served["multilingual"]["features"], \
            served["standard"]["features"]
        assert "laugh" in turbo["tags"] and not turbo["exaggeration"] and not turbo["voice_conversion"]
        assert len(multilingual["languages"]) == 23 and "fr" in multilingual["languages"]
        assert standard["languages"] == ["en"] and standard["exaggeration"] and standard["voice_conversion"]
        assert served["turbo"]["names"] == ["chatterbox-turbo", "turbo", "tone-turbo"]
        aliases = {entry["id"]: entry["routes_to"] for entry in response["data"] if "routes_to" in entry}
        assert aliases["tts-1"] == "chatterbox-turbo" and aliases["tts-1-hd"] == "chatterbox-standard"
        assert aliases["gpt-4o-mini-tts"] == "chatterbox-standard" and aliases["chatterbox"] == "chatterbox-standard"
        assert aliases["turbo"] == "chatterbox-turbo" and aliases["multilingual"] == "chatterbox-multilingual"
        one = requests.get(three.url("/v1/models/turbo"), timeout=10)
        assert one.status_code == 200 and one.json()["id"] == "chatterbox-turbo"

        health = three.health()
        assert health["status"] == "ok" and health["ready"]
        assert health["models"]["chatterbox-standard"]["state"] == "loaded"
        assert health["models"]["chatterbox-turbo"]["state"] == "unloaded"
        assert health["models"]["chatterbox-multilingual"]["workers"] == {"total": 1, "loaded": 0}

        metrics = requests.get(three.url("/metrics"), timeout=10).text
        assert 'chatterbox_model_state{model="chatterbox-standard",state="loaded"} 1.0' in metrics
        assert 'chatterbox_model_state{model="chatterbox-turbo",state="unloaded"} 1.0' in metrics
        assert 'chatterbox_model_state{model="chatterbox-turbo",state="loaded"} 0.0' in metrics
        assert 'chatterbox_model_jobs_in_flight{model="chatterbox-multilingual"}' in metrics
        assert 'chatterbox_model_loads{model="chatterbox-standard"} 1.0' in metrics

    @pytest.mark.serial      # asserts latencies: run alone after the parallel part
    def test_an_unloaded_models_first_request_waits_for_its_load_and_says_so_while_others_serve(self, three):
        for name in ("turbo", "multilingual"):       # whatever ran before: both unloaded again
            assert model_action(three, f"chatterbox-{name}", "unload").status_code == 200
        loads = models(three)["turbo"]["loads"]

        def sse_to_turbo() -> tuple[list[dict], list[float], float]:
            started = time.monotonic()
            response = requests.post(three.url("/v1/audio/speech"), stream=True, timeout=TIMEOUT,
                                     json={"input": TEXT, "model": "chatterbox-turbo", "stream_format": "sse"})
            assert response.status_code == 200, response.text
            events, times = [], []
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                    times.append(time.monotonic() - started)
            return events, times, time.monotonic() - started

        thread, out = in_thread(sse_to_turbo)
        deadline = time.monotonic() + 1.8
        progress: dict = {}
        while time.monotonic() < deadline:
            progress = requests.get(three.url("/v1/status/progress"), timeout=5).json()
            if progress.get("status") == "loading_model":
                break
            time.sleep(0.05)
        assert progress.get("status") == "loading_model" and progress["current_step"] == "Loading model", progress
        assert models(three)["turbo"]["state"] == "loading"
        # the loaded model answers meanwhile: its first audio comes well before turbo's 2 s load is over
        asked = time.monotonic()
        with requests.post(three.url("/v1/audio/speech/stream"), json={"input": TEXT, "model": "chatterbox-standard"},
                           stream=True, timeout=TIMEOUT) as beside:
            assert beside.status_code == 200
            first = next(beside.iter_content(chunk_size=None))
            first_audio = time.monotonic() - asked
            assert first and first_audio < 1.2, first_audio
            assert thread.is_alive()                   # turbo's request is still waiting for its load
        events, times, took = joined(thread, out)
        kinds = [event["type"] for event in events]
        assert took >= 2.0
        assert kinds[0] == "speech.audio.info" and kinds[1] == "speech.loading" and kinds[-1] == "speech.audio.done"
        assert events[1]["model"] == "chatterbox-turbo" and events[1]["message"] == "loading model"
        delta = kinds.index("speech.audio.delta")
        assert times[1] < 1.5 <= times[delta]          # told at once, the audio after the load
        entry = models(three)["turbo"]
        assert entry["state"] == "loaded" and entry["loads"] == loads + 1
        # a whole file waits too, and is whole
        started = time.monotonic()
        response, by = served_by(three, lambda: speak(three, "chatterbox-multilingual"))
        assert time.monotonic() - started >= 1.0 and len(ok(response).content) > 0 and by == ["multilingual"]

    @pytest.mark.parametrize("model, expected", OPENAI_ROUTES)
    def test_openai_speech_whole_stream_and_sse_go_to_the_model_asked_for(self, three, model, expected):
        whole, by = served_by(three, lambda: speak(three, model))
        assert ok(whole).headers["Content-Type"] == "audio/pcm" and by == [expected]
        stream, by = served_by(three, lambda: speak(three, model, path="/v1/audio/speech/stream",
                                                    response_format="wav"))
        assert ok(stream).content[:4] == b"RIFF" and by == [expected]
        events, by = served_by(three, lambda: sse_events(speak(three, model, stream_format="sse")))
        assert events[-1]["type"] == "speech.audio.done" and by == [expected]

    def test_a_language_only_multilingual_speaks_goes_there_unless_a_model_was_named(self, three):
        for model in (None, "tts-1", "chatterbox"):
            response, by = served_by(three, lambda model=model: speak(three, model, language="fr"))
            assert ok(response).content and by == ["multilingual"], model
        response, by = served_by(three, lambda: speak(three, None, language="en"))
        assert ok(response) and by == ["standard"]
        # named by our name: the model keeps the request, and says it cannot speak French
        for model in ("chatterbox-standard", "turbo"):
            refused = speak(three, model, language="fr")
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["param"] == "language" and "'fr' is not supported" in error["message"]

    def test_an_unknown_model_is_a_400_listing_the_served_models_on_every_surface(self, three):
        before, _ = job_counts(three)
        assert_unknown_model(speak(three, "nope"))
        assert_unknown_model(speak(three, "nope", path="/v1/audio/speech/stream"))
        sse = speak(three, "nope", stream_format="sse")
        assert sse.headers["Content-Type"].startswith("application/json")
        assert_unknown_model(sse)
        turns = [{"text": "one two.", "voice": "default"}, {"text": "three.", "voice": "default"}]
        assert_unknown_model(requests.post(three.url("/v1/audio/dialogue"), timeout=TIMEOUT,
                                           json={"model": "nope", "inputs": turns}))
        assert_unknown_model(requests.post(three.url("/v1/audio/speech/long"), timeout=TIMEOUT,
                                           json={"input": "One sentence. And another.", "model": "nope"}))
        extended = requests.post(three.extended_base + "/api/v1/tts", timeout=TIMEOUT,
                                 json={"text": TEXT, "model": "nope", "bypass_whisper_checking": True})
        assert extended.status_code == 400, extended.text
        body = extended.json()
        assert set(body) == {"success", "error", "detail", "error_code"} and body["success"] is False
        assert body["error_code"] == "MODEL_NOT_FOUND" and "chatterbox-turbo" in body["detail"]
        assert job_counts(three)[0] == before          # nothing was synthesized for any of them

    def test_dialogue_long_jobs_and_extended_tts_run_on_the_model_asked_for(self, three):
        turns = [{"text": "one two three.", "voice": "default"}, {"text": "four five.", "voice": "default"}]
        response, by = served_by(three, lambda: requests.post(three.url("/v1/audio/dialogue"), timeout=TIMEOUT, json={
            "model": "chatterbox-turbo", "inputs": turns, "response_format": "pcm"}))
        assert ok(response).content and by == ["turbo"]

        def extended(**fields: str) -> requests.Response:
            return requests.post(three.extended_base + "/api/v1/tts", timeout=TIMEOUT,
                                 json={"text": TEXT, "bypass_whisper_checking": True, **fields})
        response, by = served_by(three, lambda: extended(model="turbo"))
        assert ok(response).content[:4] == b"RIFF" and by == ["turbo"]
        response, by = served_by(three, lambda: extended(language="de"))
        assert ok(response) and by == ["multilingual"]

        # a long job's chunks all run on its model's worker
        before, _ = job_counts(three)
        created = requests.post(three.url("/v1/audio/speech/long"), timeout=TIMEOUT, json={
            "input": "The first part of it. A second part follows. And a third one ends it.",
            "model": "chatterbox-turbo", "streaming_chunk_size": 50, "response_format": "wav"})
        assert created.status_code == 200, created.text
        job_id = created.json()["job_id"]
        deadline = time.monotonic() + 30
        while True:
            state = requests.get(three.url(f"/v1/audio/speech/long/{job_id}"), timeout=10).json()
            if state["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert state["status"] == "completed", state
        after, _ = job_counts(three)
        names = slot_models(three)
        assert {names[slot] for slot in range(3) if after[slot] != before[slot]} == {"turbo"}
        download = requests.get(three.url(f"/v1/audio/speech/long/{job_id}/download"), timeout=10)
        assert download.status_code == 200 and download.content[:4] == b"RIFF"

    def test_elevenlabs_dialogue_takes_our_model_ids_and_sends_theirs_to_the_default(self, three):
        def dialogue(model_id: str) -> requests.Response:
            return requests.post(three.url("/v1/text-to-dialogue?output_format=pcm_24000"), timeout=TIMEOUT, json={
                "model_id": model_id, "inputs": [{"text": "one two three.", "voice_id": "alloy"},
                                                 {"text": "four five.", "voice_id": "alloy"}]})
        response, by = served_by(three, lambda: dialogue("chatterbox-turbo"))
        assert ok(response).content and by == ["turbo"]
        response, by = served_by(three, lambda: dialogue("eleven_multilingual_v2"))
        assert ok(response).content and by == ["standard"]

    def test_realtime_sockets_speak_with_the_model_of_the_socket_or_of_the_context(self, three):
        _, by = served_by(three, lambda: realtime_turn(three, "?model=chatterbox-turbo"))
        assert by == ["turbo"]
        _, by = served_by(three, lambda: realtime_turn(three))
        assert by == ["standard"]
        _, by = served_by(three, lambda: realtime_turn(three, context={"model": "chatterbox-multilingual"}))
        assert by == ["multilingual"]
        _, by = served_by(three, lambda: realtime_turn(three, context={"language": "fr"}))
        assert by == ["multilingual"]   # no model named: the language picks the model that speaks it
        _, by = served_by(three, lambda: elevenlabs_turn(three, "model_id=chatterbox-turbo"))
        assert by == ["turbo"]
        _, by = served_by(three, lambda: elevenlabs_turn(three, "model_id=eleven_flash_v2_5"))
        assert by == ["standard"]       # their model ids speak with the default model


# -- idle unload -------------------------------------------------------------------------------------------
WEIGHT_MB = 200


@pytest.fixture(scope="class")
def idle(tmp_path_factory):
    # multilingual's weights (2000 MB) are more than the whole budget (1 GB): it can never load
    server = start_server(tmp_path_factory.mktemp("idle_models"), engine="tone", models=THREE, front_workers="1",
                          graceful_timeout="3", idle_unload_seconds="2", gpu_memory_budget="1GB",
                          tone_weight_mb=f"standard={WEIGHT_MB},turbo={WEIGHT_MB},multilingual=2000")
    yield server
    server.stop()


class TestIdleUnload:
    """CHATTERBOX_IDLE_UNLOAD_SECONDS=2, 200 MB of weights per model, and a model bigger than the 1 GB budget."""

    def test_an_idle_model_is_unloaded_its_memory_freed_and_the_next_request_reloads_it(self, idle):
        codes: list[int] = []
        stop = threading.Event()

        def watch_health() -> None:
            while not stop.is_set():
                codes.append(requests.get(idle.url("/health"), timeout=5).status_code)
                time.sleep(0.2)
        watcher = threading.Thread(target=watch_health, daemon=True)
        watcher.start()
        try:
            response, by = served_by(idle, lambda: speak(idle, "chatterbox-turbo"))
            assert ok(response).content and by == ["turbo"]
            used = time.monotonic()
            entry = models(idle)["turbo"]
            [worker] = entry["workers"]
            loaded_rss = rss_bytes(worker["pid"])
            assert entry["state"] == "loaded" and entry["loads"] == 1
            assert entry["memory"]["weight_bytes"] == worker["weight_bytes"] == WEIGHT_MB * 2**20

            entry = wait_for_state(idle, "turbo", "unloaded", timeout=8)
            assert 1.5 <= time.monotonic() - used <= 5.0
            assert entry["memory"]["weight_bytes"] == 0 and entry["workers"][0]["weight_bytes"] == 0
            assert entry["workers"][0]["pid"] == worker["pid"]          # the process stays, its memory goes
            freed = loaded_rss - rss_bytes(worker["pid"])
            assert freed >= 150 * 10**6, f"only {freed / 1e6:.0f} MB freed"
            # the preloaded default model goes idle too, and the server stays ready
            wait_for_state(idle, "standard", "unloaded", timeout=8)
            assert idle.health()["models"]["chatterbox-standard"]["weight_mb"] == 0

            response, by = served_by(idle, lambda: speak(idle, "turbo"))
            assert ok(response).content and by == ["turbo"]
            entry = models(idle)["turbo"]
            assert entry["loads"] == 2 and entry["memory"]["weight_bytes"] == WEIGHT_MB * 2**20
            assert ok(speak(idle, None)).content               # the default model reloads as well
        finally:
            stop.set()
            watcher.join(10)
        assert len(codes) > 10 and set(codes) == {200}

    def test_a_model_bigger_than_the_whole_budget_is_refused_with_a_503_naming_the_budget(self, idle):
        for _ in range(2):                  # refused at once, every time: the worker stays, unloaded
            started = time.monotonic()
            refused = speak(idle, "chatterbox-multilingual")
            assert refused.status_code == 503, refused.text
            message = refused.json()["error"]["message"]
            assert "multilingual" in message and "CHATTERBOX_GPU_MEMORY_BUDGET" in message
            assert time.monotonic() - started < 5
        assert models(idle)["multilingual"]["state"] == "unloaded"
        assert ok(speak(idle, "chatterbox-standard")).content          # the others serve on


# -- the memory budget ---------------------------------------------------------------------------------------
@pytest.fixture(scope="class")
def budget(tmp_path_factory):
    # each model 40 MiB (42 MB): two fit in 100 MB, three do not
    server = start_server(tmp_path_factory.mktemp("budget_models"), engine="tone", models=THREE, front_workers="2",
                          graceful_timeout="3", gpu_memory_budget="100MB", tone_weight_mb="40")
    yield server
    server.stop()


SUPERVISOR_ROUND = 1.5      # the supervisor notes uses about once a second: uses further apart are ordered


def loaded_models(server: Server) -> set[str]:
    return {name for name, state in states(server).items() if state == "loaded"}


class TestMemoryBudget:
    """Two models fit in CHATTERBOX_GPU_MEMORY_BUDGET, three do not (the order of uses matters: their own server)."""

    def test_the_budget_unloads_the_least_recently_used_idle_model(self, budget):
        unload_all(budget)
        for name in ("turbo", "standard"):
            assert ok(speak(budget, name)).content
            time.sleep(SUPERVISOR_ROUND)
        assert loaded_models(budget) == {"turbo", "standard"}
        assert models(budget)["turbo"]["memory"]["weight_bytes"] == 40 * 2**20
        # turbo was used longest ago (the first slot would be standard: the order is by use, not by slot)
        response, by = served_by(budget, lambda: speak(budget, "multilingual"))
        assert ok(response).content and by == ["multilingual"]
        assert loaded_models(budget) == {"standard", "multilingual"}
        time.sleep(SUPERVISOR_ROUND)
        assert ok(speak(budget, "standard")).content
        time.sleep(SUPERVISOR_ROUND)
        assert ok(speak(budget, "turbo")).content           # now multilingual is the least recently used
        assert loaded_models(budget) == {"standard", "turbo"}
        assert budget.health()["ready"]

    def test_a_model_in_use_is_never_unloaded_even_when_it_was_used_longest_ago(self, budget):
        unload_all(budget)
        assert ok(speak(budget, "standard", WORDS)).content and ok(speak(budget, "turbo", WORDS)).content
        reference = ok(speak(budget, "turbo", WORDS)).content
        time.sleep(SUPERVISOR_ROUND)
        # standard's long request starts first; turbo is used after it started; then multilingual needs room
        long_request, out = in_thread(lambda: speak(budget, "standard", LONG_CHUNK))
        time.sleep(0.5)
        assert ok(speak(budget, "turbo", WORDS)).content
        time.sleep(SUPERVISOR_ROUND)
        response = speak(budget, "multilingual", WORDS)
        assert ok(response).content == reference
        assert long_request.is_alive()              # multilingual did not wait for standard's request: turbo made room
        assert states(budget) == {"standard": "loaded", "turbo": "unloaded", "multilingual": "loaded"}
        assert ok(joined(long_request, out)).content == reference      # whole: nothing was unloaded under it

    def test_when_the_loaded_models_are_busy_a_third_waits_for_one_to_be_idle_then_is_served(self, budget):
        unload_all(budget)
        assert ok(speak(budget, "standard", WORDS)).content and ok(speak(budget, "turbo", WORDS)).content
        reference = ok(speak(budget, "turbo", WORDS)).content
        busy = [in_thread(lambda name=name: speak(budget, name, LONG_CHUNK)) for name in ("standard", "turbo")]
        time.sleep(0.8)
        asked = time.monotonic()
        third, third_out = in_thread(lambda: speak(budget, "multilingual", WORDS))
        time.sleep(1.5)
        waiting = models(budget)
        assert waiting["multilingual"]["state"] == "loading", waiting["multilingual"]
        assert waiting["standard"]["state"] == waiting["turbo"]["state"] == "loaded"
        assert waiting["standard"]["active_jobs"] == waiting["turbo"]["active_jobs"] == 1
        assert third.is_alive()
        response = joined(third, third_out)
        assert ok(response).content == reference
        first_idle = min(joined(thread, out) and out["ended"] for thread, out in busy)
        assert third_out["ended"] >= first_idle - 0.1 and third_out["ended"] - asked >= 2.0
        for thread, out in busy:
            assert ok(joined(thread, out)).content == reference       # both long requests whole
        assert len(loaded_models(budget)) == 2 and "multilingual" in loaded_models(budget)


# -- a model whose load fails; loading and unloading by hand, with API keys ---------------------------------
USER, ADMIN = "user-key-0123456789abcdef", "admin-key-0123456789abcdef"


@pytest.fixture(scope="class")
def managed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("managed_models")
    (tmp / "api-keys").write_text(f"user:{USER}\nroot:{ADMIN} admin\n")
    server = start_server(tmp, engine="tone", models=THREE, front_workers="2", graceful_timeout="3",
                          api_keys_file=str(tmp / "api-keys"), tone_fail_load="multilingual=weights missing")
    yield server
    server.stop()


class TestLoadFailureAndLoadingByHand:
    """multilingual's load fails; models are loaded and unloaded by hand with an admin key."""

    def test_a_model_whose_load_fails_gets_503s_naming_it_while_the_others_serve(self, managed):
        for attempt in range(2):                     # the first load, then again in the replaced worker
            refused = speak(managed, "chatterbox-multilingual", key=USER)
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert "multilingual" in error["message"], (attempt, error)
            assert attempt or "weights missing" in error["message"], error
            assert refused.headers.get("Retry-After")
            assert ok(speak(managed, "chatterbox-standard", key=USER)).content
            assert ok(speak(managed, "chatterbox-turbo", key=USER)).content
        entry = wait_for_state(managed, "multilingual", "failed", key=ADMIN)
        assert "weights missing" in entry["error"]                          # an admin sees why
        public = models(managed, USER)["multilingual"]
        assert public["state"] == "failed" and "weights missing" not in json.dumps(public)
        assert states(managed, ADMIN)["standard"] == "loaded"
        health = requests.get(managed.url("/health"), timeout=10)
        assert health.status_code == 200 and health.json()["models"]["chatterbox-multilingual"]["state"] == "failed"

    def test_a_stream_whose_model_fails_to_load_gets_a_json_503_not_a_cut_body(self, managed):
        """The stream's first audio waits for the load: its failure is still a status (the SSE form, an event)."""
        streamed = requests.post(managed.url("/v1/audio/speech/stream"), timeout=TIMEOUT,
                                 headers={"Authorization": f"Bearer {USER}"},
                                 json={"input": "one two three.", "model": "chatterbox-multilingual"})
        assert streamed.status_code == 503, streamed.text
        assert streamed.json()["error"]["code"] == "model_unavailable"
        events = requests.post(managed.url("/v1/audio/speech"), timeout=TIMEOUT, stream=True,
                               headers={"Authorization": f"Bearer {USER}"},
                               json={"input": "one two three.", "model": "chatterbox-multilingual",
                                     "stream_format": "sse"})
        if events.status_code == 503:       # its worker is being replaced after the failure: refused at once
            assert events.json()["error"]["code"] == "model_unavailable"
            return
        lines = [json.loads(line[6:]) for line in events.iter_lines() if line.startswith(b"data: ")]
        assert events.status_code == 200 and [event["type"] for event in lines][-1] == "error", lines

    def test_models_are_loaded_and_unloaded_by_hand_with_an_admin_key(self, managed):
        assert model_action(managed, "chatterbox-turbo", "load", USER).status_code == 403
        assert model_action(managed, "chatterbox-turbo", "unload", USER).status_code == 403
        assert model_action(managed, "chatterbox-turbo", "load").status_code == 401

        loaded = model_action(managed, "chatterbox-turbo", "load", ADMIN)
        assert loaded.status_code == 200, loaded.text
        assert loaded.json()["state"] == "loaded" and loaded.json()["memory"]["weight_bytes"] > 0
        unloaded = model_action(managed, "turbo", "unload", ADMIN)
        assert unloaded.status_code == 200, unloaded.text
        assert unloaded.json()["state"] == "unloaded" and unloaded.json()["memory"]["weight_bytes"] == 0
        assert states(managed, ADMIN)["turbo"] == "unloaded"

        started = model_action(managed, "chatterbox-turbo", "load", ADMIN, "?wait=false")
        assert started.status_code == 202, started.text
        assert started.json()["state"] in ("loading", "loaded")
        wait_for_state(managed, "turbo", "loaded", key=ADMIN)

        # nothing is unloaded under a request: 409, and the request completes
        three_chunks = " ".join(f"[[sleep:1]] Sentence number {n} goes here." for n in range(3))
        running, out = in_thread(lambda: speak(managed, "chatterbox-turbo", three_chunks, key=USER))
        time.sleep(0.7)
        busy = model_action(managed, "chatterbox-turbo", "unload", ADMIN)
        assert busy.status_code == 409, busy.text
        assert busy.json()["error"]["code"] == "model_in_use"
        assert running.is_alive()
        assert ok(joined(running, out)).content == ok(speak(managed, "turbo", three_chunks.replace("[[sleep:1]]", ""),
                                                            key=USER)).content
        assert model_action(managed, "chatterbox-turbo", "unload", ADMIN).status_code == 200

        for action in ("load", "unload"):
            missing = model_action(managed, "nope", action, ADMIN)
            assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
            assert "chatterbox-standard" in missing.json()["error"]["message"]
        assert requests.get(managed.url("/v1/models/nope"), headers=auth(USER), timeout=10).status_code == 404
        failing = model_action(managed, "chatterbox-multilingual", "load", ADMIN)
        assert failing.status_code == 503 and "multilingual" in failing.json()["error"]["message"]


# -- the default model without voice conversion; admission per model ----------------------------------------
@pytest.fixture(scope="class")
def turbo_first(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("turbo_first"), engine="tone", models="turbo,standard",
                          preload="all", front_workers="2", graceful_timeout="3", max_queued_jobs="2")
    yield server
    server.stop()


class TestDefaultWithoutConversionAndAdmission:
    """CHATTERBOX_MODELS=turbo,standard: the default model has no voice conversion; admission per model."""

    def test_voice_conversion_goes_to_a_model_that_converts(self, turbo_first):
        assert upload(turbo_first, "speaker1", reference_wav()).status_code in (200, 201)
        served = models(turbo_first)
        assert served["turbo"]["default"] and not served["turbo"]["features"]["voice_conversion"]
        assert [w["slot"] for w in served["standard"]["workers"]] == [1]
        response, by = served_by(turbo_first, lambda: requests.post(
            turbo_first.url("/api/v1/vc"), data={"target_voice_source": "speaker1"}, timeout=TIMEOUT,
            files={"input_audio": ("in.wav", wav_bytes(recording(2.0), 16000))}))
        assert ok(response).content[:4] == b"RIFF" and by == ["standard"]

    def test_a_model_enabled_nowhere_is_refused_even_where_vendor_ids_are_taken(self, turbo_first):
        response = requests.post(turbo_first.url("/v1/text-to-dialogue"), timeout=TIMEOUT, json={
            "model_id": "chatterbox-multilingual", "inputs": [{"text": "one two.", "voice_id": "alloy"}]})
        assert response.status_code == 400, response.text
        assert "not enabled" in response.text
        c = RealtimeClient(ws_url(turbo_first.base, "/v1/audio/speech/realtime") + "?model=chatterbox-multilingual")
        error = c.until_type("error")["error"]
        assert error["code"] == "model_not_found" and "not enabled" in error["message"]
        assert c.wait_closed()[0] == 1008
        response, by = served_by(turbo_first, lambda: requests.post(
            turbo_first.url("/v1/text-to-dialogue"), timeout=TIMEOUT,
            json={"model_id": "eleven_v3", "inputs": [{"text": "one two.", "voice_id": "alloy"}]}))
        assert ok(response) and by == ["turbo"]              # a vendor's id still speaks with the default model

    @pytest.mark.serial      # asserts latencies: run alone after the parallel part
    def test_a_flood_on_one_model_is_refused_with_429_while_another_model_serves_at_once(self, turbo_first):
        flood_text = "[[sleep:3]] one two three."
        with ThreadPoolExecutor(5) as pool:
            flood = [pool.submit(speak, turbo_first, "chatterbox-turbo", flood_text) for _ in range(5)]
            deadline = time.monotonic() + 10
            while not any(f.done() and f.result().status_code == 429 for f in flood) and time.monotonic() < deadline:
                time.sleep(0.05)
            refused = [f.result() for f in flood if f.done() and f.result().status_code == 429]
            assert refused, "no 429 for the flooded model"
            assert refused[0].json()["error"]["code"] == "rate_limit_exceeded" and refused[0].headers["Retry-After"]
            asked = time.monotonic()
            assert ok(speak(turbo_first, "chatterbox-standard")).content
            assert time.monotonic() - asked < 2.0
            # a socket for the other model is let in too, and speaks; one for the flooded model is told to retry
            done = realtime_turn(turbo_first, "?model=chatterbox-standard")
            assert done["usage"]["segments"] >= 1
            full = RealtimeClient(ws_url(turbo_first.base, "/v1/audio/speech/realtime") + "?model=chatterbox-turbo")
            assert full.until_type("error")["error"]["status"] == 429
            assert full.wait_closed()[0] == 1013
            results = [f.result(timeout=TIMEOUT) for f in flood]
        assert {r.status_code for r in results} == {200, 429}
        assert sum(r.status_code == 200 for r in results) >= 2
