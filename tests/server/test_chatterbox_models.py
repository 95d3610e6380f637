"""Several models on one server (issue 20) on the real Chatterbox code: random-weight checkpoints of
standard, turbo and multilingual served side by side from one checkpoint root, a model served while
another loads, an idle unload that frees the memory and a reload that speaks as before, and the
worker processes' memory after many requests over the three models and after an unload/reload cycle.

The memory checks measure each model worker's resident set (VmRSS of the pid /health gives a local
caller) on the CPU; scripts/bench_model_memory.py is the same measurement with more requests (and on
a GPU, torch's memory too). Random weights never emit the stop token, so every text chunk runs to
CHATTERBOX_MAX_NEW_TOKENS: the caps are tiny. Servers are started one after the other and never
overlap (three loaded models hold about 13 GB): the two small servers in their own tests, the
three-model one for the class that uses it.
Run with -s to see the measured numbers.
"""
from __future__ import annotations

import io
import json
import os
import threading
import time
import wave
from pathlib import Path

import pytest
import requests
from serverkit import Server, start_server

pytest.importorskip("chatterbox")
pytestmark = [pytest.mark.chatterbox, pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(1200)]

TOKENS = 4                      # CHATTERBOX_MAX_NEW_TOKENS: 160 ms of audio at most per request
STANDARD, TURBO, MULTILINGUAL = "chatterbox-standard", "chatterbox-turbo", "chatterbox-multilingual"
MODELS = (STANDARD, TURBO, MULTILINGUAL)        # CHATTERBOX_MODELS' order: slots 0, 1, 2
LEAK_ROUNDS = 6                 # x 3 models: 18 requests after the warm-up's 6 (more: scripts/bench_model_memory.py)
GB = 10**9
MB = 10**6
SERVER = {"engine": "chatterbox", "device": "cpu", "max_new_tokens": str(TOKENS), "front_workers": "1",
          "queue_timeout": "900", "chunk_timeout": "900", "max_queued_seconds": "0", "ready_timeout": 900}


# -- fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_root(tmp_path_factory, chatterbox_checkpoint, chatterbox_turbo_checkpoint):
    """CHATTERBOX_CHECKPOINT_DIR with one subdirectory per model. standard/ and multilingual/ are the
    same directory (build_random_checkpoint(multilingual=True) writes both models' files, which have
    different names), turbo/ its own (its tokenizer.json differs)."""
    root = tmp_path_factory.mktemp("model-root")
    for name, target in (("standard", chatterbox_checkpoint), ("turbo", chatterbox_turbo_checkpoint),
                         ("multilingual", chatterbox_checkpoint)):
        (root / name).symlink_to(target, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def voice_files(tmp_path_factory) -> dict[str, bytes]:
    """WAV files to clone: turbo's reference must be over 5 s; the others take 3 s (cheaper)."""
    import chatterbox_checkpoint as checkpoints

    directory = tmp_path_factory.mktemp("voices")

    def wav(name: str, seconds: float, f0: float, seed: int) -> bytes:
        path = checkpoints.write_wav(directory / f"{name}.wav", checkpoints.synthetic_voice(seconds, f0=f0, seed=seed))
        return path.read_bytes()

    return {"short-0": wav("short-0", 3.0, 180.0, 1), "short-1": wav("short-1", 3.0, 220.0, 2),
            "short-2": wav("short-2", 3.0, 150.0, 3), "long-0": wav("long-0", 5.5, 200.0, 4),
            "long-1": wav("long-1", 5.5, 240.0, 5), "long-2": wav("long-2", 5.5, 130.0, 6)}


def voice_for(model: str, index: int) -> str:
    """Voice file `index` for the model: 0 is the library voice's, 1 and 2 are one-off uploads."""
    return f"{'long' if model == TURBO else 'short'}-{index}"


def library_voice(model: str) -> str:
    return "leak-long" if model == TURBO else "leak-short"


def served(server: Server) -> dict[str, dict]:
    """/v1/models' served models by id (the aliases, which have no state, left out)."""
    answer = requests.get(server.url("/v1/models"), timeout=10)
    assert answer.status_code == 200, answer.text
    return {entry["id"]: entry for entry in answer.json()["data"] if "state" in entry}


def slots(server: Server) -> list[dict]:
    return server.health()["workers"]["slots"]


def jobs_done(server: Server) -> list[int]:
    return [slot["jobs_done"] for slot in slots(server)]


def jobs_done_once_more(server: Server, before: list[int], expected: int) -> list[int]:
    """The slots' jobs_done once `expected` more are done (a worker counts a job just after its answer)."""
    deadline = time.monotonic() + 5
    while sum(now := jobs_done(server)) - sum(before) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return now


def pids(server: Server) -> list[int]:
    found = [slot["pid"] for slot in slots(server)]
    assert all(isinstance(pid, int) and pid > 0 for pid in found), found     # a local caller sees them
    return found


def rss(pid: int) -> int:
    """A process's resident set in bytes (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def wait_for_state(server: Server, model: str, state: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        entry = served(server)[model]
        if entry["state"] == state:
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"{model} is {entry['state']}, not {state}, after {timeout} s: {entry}\n"
                                 f"{server.log()[-3000:]}")
        time.sleep(0.1)


def speak(server: Server, model: str | None = None, *, seed: int = 1, voice_file: bytes | None = None,
          **fields) -> requests.Response:
    body = {"input": "Hello there.", "seed": seed, **fields}
    if model is not None:
        body["model"] = model
    if voice_file is None:
        response = requests.post(server.url("/v1/audio/speech"), json=body, timeout=600)
    else:
        response = requests.post(server.url("/v1/audio/speech/upload"), data={k: str(v) for k, v in body.items()},
                                 files={"voice_file": ("voice.wav", voice_file)}, timeout=600)
    assert response.status_code == 200, response.text
    return response


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as source:
        assert source.getframerate() == 24000 and source.getnchannels() == 1
        return source.getnframes() / source.getframerate()


def within(value: int, reference: int, floor: int, share: float) -> bool:
    return abs(value - reference) <= max(floor, share * reference)


def gb(value: int) -> float:
    return round(value / GB, 3)


# -- a model is served while another loads ------------------------------------------------------------

LOAD_GATE = Path(__file__).resolve().parent.parent / "load_gate"     # its sitecustomize holds one model's load


def test_turbo_is_served_while_standard_loads(tmp_path, model_root, monkeypatch):
    """standard's weight read waits on a gate file (tests/load_gate) until turbo's answer is in, so
    "still loading" does not depend on how long a load takes on this machine. A turbo answer that
    waited behind standard's load would come only after the gate's 120 s and find standard loaded."""
    gate = tmp_path / "standard-may-load"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(LOAD_GATE), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("LOAD_GATE_MODEL", "standard")
    monkeypatch.setenv("LOAD_GATE_FILE", str(gate))
    monkeypatch.setenv("LOAD_GATE_SECONDS", "120")      # a turbo answer stuck behind the load fails in 2 min
    server = start_server(tmp_path, checkpoint_dir=str(model_root), models="standard,turbo", preload="turbo",
                          **SERVER)
    try:
        before = served(server)
        assert (before[STANDARD]["state"], before[STANDARD]["loads"]) == ("unloaded", 0)
        assert before[TURBO]["state"] == "loaded"
        events: list[tuple[float, str]] = []
        outcome: dict = {}

        def standard_request() -> None:       # SSE: speech.loading comes before the audio (after the info)
            try:
                with requests.post(server.url("/v1/audio/speech"), stream=True, timeout=600,
                                   json={"input": "Hello there.", "model": STANDARD, "seed": 3,
                                         "stream_format": "sse"}) as response:
                    outcome["status"] = response.status_code
                    for line in response.iter_lines():
                        if line.startswith(b"data: "):
                            events.append((time.monotonic(), json.loads(line[6:])["type"]))
            except Exception as exc:  # noqa: BLE001 - reported by the test
                outcome["error"] = exc

        thread = threading.Thread(target=standard_request, daemon=True)
        started = time.monotonic()
        thread.start()
        wait_for_state(server, STANDARD, "loading", timeout=30)
        wait_for_log(server, "chatterbox-standard's load waits for", timeout=30)
        turbo_started = time.monotonic()
        turbo = speak(server, TURBO, seed=4)
        turbo_ended = time.monotonic()
        assert served(server)[STANDARD]["state"] == "loading"
        assert [kind for _, kind in events] == ["speech.audio.info", "speech.loading"]
        assert turbo.content[:4] == b"RIFF" and wav_seconds(turbo.content) > 0
        gate.touch()

        thread.join(timeout=600)
        assert "error" not in outcome and outcome.get("status") == 200, (outcome, server.log()[-3000:])
        kinds = [kind for _, kind in events]
        assert kinds[:3] == ["speech.audio.info", "speech.loading", "speech.audio.delta"], kinds
        assert kinds[-1] == "speech.audio.done"
        first_standard_audio = next(t for t, kind in events if kind == "speech.audio.delta")
        assert first_standard_audio > turbo_ended
        after = served(server)
        assert after[STANDARD]["state"] == "loaded" and after[STANDARD]["loads"] == 1
        assert after[TURBO]["loads"] == 1            # turbo was not reloaded meanwhile
        print(f"\nturbo served while standard loaded: turbo's answer {turbo_ended - turbo_started:.1f} s, "
              f"ended {turbo_ended - started:.1f} s after standard's request; standard's first audio after "
              f"{first_standard_audio - started:.1f} s (its load {after[STANDARD]['workers'][0]['load_seconds']} s, "
              f"held until turbo's answer was in)")
    finally:
        server.stop()


def wait_for_log(server: Server, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in server.log():
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} not in the server's log after {timeout} s:\n{server.log()[-3000:]}")
        time.sleep(0.1)


# -- idle unload -------------------------------------------------------------------------------------

def test_idle_unload_frees_the_memory_and_the_next_request_reloads(tmp_path, model_root):
    server = start_server(tmp_path, checkpoint_dir=str(model_root), models="standard", idle_unload_seconds="3",
                          **SERVER)
    try:
        [pid] = pids(server)
        first = speak(server, STANDARD, seed=21).content
        loaded_rss = rss(pid)                 # within the 3 s: still loaded
        entry = wait_for_state(server, STANDARD, "unloaded", timeout=30)
        unloaded_rss = rss(pid)
        assert entry["memory"]["weight_bytes"] == 0 and entry["workers"][0]["weight_bytes"] == 0
        assert entry["workers"][0]["pid"] == pid and pids(server) == [pid]      # the process stays
        assert loaded_rss - unloaded_rss >= 2 * GB, (gb(loaded_rss), gb(unloaded_rss))
        report = server.health()
        assert report["ready"] and report["models"][STANDARD]["state"] == "unloaded"

        reload_started = time.monotonic()
        second = speak(server, STANDARD, seed=21).content
        reload_answer = time.monotonic() - reload_started
        reloaded_rss = rss(pid)
        entry = served(server)[STANDARD]
        assert entry["loads"] == 2 and pids(server) == [pid]
        assert second == first                # the same checkpoint, text and seed: the same audio
        assert reloaded_rss - unloaded_rss >= 2 * GB, (gb(unloaded_rss), gb(reloaded_rss))
        print(f"\nidle unload (standard): RSS loaded {gb(loaded_rss)} GB, unloaded {gb(unloaded_rss)} GB, "
              f"reloaded {gb(reloaded_rss)} GB; answer with the reload {reload_answer:.1f} s "
              f"(load {entry['workers'][0]['load_seconds']} s)")
    finally:
        server.stop()


# -- three models on one server -----------------------------------------------------------------------

@pytest.fixture(scope="class")
def three(tmp_path_factory, model_root):
    """The three models preloaded on one server; class scope: stopped once TestThreeModels is done."""
    started = time.monotonic()
    server = start_server(tmp_path_factory.mktemp("three-models"), checkpoint_dir=str(model_root),
                          models="standard,turbo,multilingual", preload="all", **SERVER)
    server.ready_seconds = time.monotonic() - started
    yield server
    server.stop()


class TestThreeModels:
    """One server for these tests (the two small servers above have stopped by then)."""

    def test_all_three_are_loaded_with_their_features(self, three):
        entries = served(three)
        assert list(entries) == list(MODELS)
        assert [entry["default"] for entry in entries.values()] == [True, False, False]
        for slot, entry in enumerate(entries.values()):
            assert entry["state"] == "loaded" and entry["loads"] == 1 and entry["device"] == "cpu", entry
            [worker] = entry["workers"]
            assert worker["slot"] == slot and worker["loaded"] and worker["state"] == "ready"
            assert worker["weight_bytes"] > GB and entry["memory"]["weight_bytes"] == worker["weight_bytes"]
            assert worker["load_seconds"] > 0 and worker["pid"] == slots(three)[slot]["pid"]
        standard, turbo, multilingual = (entries[m]["features"] for m in MODELS)
        assert standard["exaggeration"] and standard["tags"] == [] and standard["languages"] == ["en"]
        assert turbo["exaggeration"] is False and turbo["voice_conversion"] is False
        assert {"laugh", "sigh", "clear throat"} <= set(turbo["tags"])
        assert {"en", "fr", "de", "ja"} <= set(multilingual["languages"]) and multilingual["exaggeration"]
        listed = requests.get(three.url("/v1/models"), timeout=10).json()["data"]
        aliases = {entry["id"]: entry.get("routes_to") for entry in listed}
        assert aliases["tts-1"] == TURBO and aliases["tts-1-hd"] == STANDARD
        print(f"\nthree models preloaded: server ready in {three.ready_seconds:.0f} s; "
              + "; ".join(f"{m}: weights {gb(e['memory']['weight_bytes'])} GB, load {e['workers'][0]['load_seconds']} s"
                          for m, e in entries.items()))

    @pytest.mark.parametrize(("fields", "slot"), [
        ({"model": STANDARD}, 0), ({"model": TURBO}, 1), ({"model": MULTILINGUAL}, 2),
        ({"model": "tts-1"}, 1), ({"model": "tts-1-hd"}, 0),
        ({"language": "fr", "input": "Bonjour à tous."}, 2),        # no model named: multilingual speaks French
    ], ids=["standard", "turbo", "multilingual", "tts-1", "tts-1-hd", "fr"])
    def test_each_request_runs_on_its_model_s_slot(self, three, fields, slot):
        before = jobs_done(three)
        started = time.monotonic()
        answer = speak(three, seed=7, **fields)
        seconds = time.monotonic() - started
        assert answer.content[:4] == b"RIFF" and wav_seconds(answer.content) > 0
        after = jobs_done_once_more(three, before, 1)
        assert [b - a for a, b in zip(before, after, strict=True)] == [int(i == slot) for i in range(3)]
        print(f"\n{fields} -> slot {slot}: {wav_seconds(answer.content):.2f} s of audio in {seconds:.1f} s")

    def test_memory_returns_to_its_idle_level(self, three, voice_files):
        """Many small requests over the three models (built-in voice, a library voice, one-off uploads,
        different seeds), then an unload/reload cycle of standard: each worker's RSS stays near the level
        it had after a warm-up round, and each model's conditionals cache within its capacity."""
        for name, kind in (("leak-short", "short"), ("leak-long", "long")):
            answer = requests.post(three.url("/v1/voices"), data={"name": name},
                                   files={"voice_file": (f"{name}.wav", voice_files[f"{kind}-0"])})
            assert answer.status_code == 201, answer.text
        worker_pids = pids(three)
        started = time.monotonic()
        # warm-up: every path the load takes once per model (the conditionals of two voices computed);
        # the built-in voice spoke in the model's warm-up at its load
        for model in MODELS:
            speak(three, model, seed=101, voice=library_voice(model))
            speak(three, model, seed=102, voice_file=voice_files[voice_for(model, 1)])
        warm = [rss(pid) for pid in worker_pids]
        warm_seconds = time.monotonic() - started
        requests_made = 0
        started = time.monotonic()
        for round_ in range(LEAK_ROUNDS):
            for model in MODELS:
                if round_ == LEAK_ROUNDS // 2:
                    speak(three, model, seed=round_, voice_file=voice_files[voice_for(model, 2)])
                else:
                    speak(three, model, seed=round_, voice=library_voice(model) if round_ % 2 else None)
                requests_made += 1
        after = [rss(pid) for pid in worker_pids]
        load_seconds = time.monotonic() - started
        memory = requests.get(three.url("/memory"), timeout=10).json()["memory_info"]
        caches = {w["slot"]: w["caches"]["conditionals"] for w in memory["model_workers"]}

        # an unload/reload cycle of standard
        before_cycle = rss(worker_pids[0])
        answer = requests.post(three.url(f"/v1/models/{STANDARD}/unload"), timeout=60)
        assert answer.status_code == 200 and answer.json()["state"] == "unloaded", answer.text
        unloaded = rss(worker_pids[0])
        cycle_started = time.monotonic()
        answer = requests.post(three.url(f"/v1/models/{STANDARD}/load"), timeout=600)
        assert answer.status_code == 200 and answer.json()["state"] == "loaded", answer.text
        reload_seconds = time.monotonic() - cycle_started
        reloaded = rss(worker_pids[0])
        speak(three, STANDARD, seed=5)
        reloaded_spoken = rss(worker_pids[0])

        print(f"\nleak check: warm-up {warm_seconds:.0f} s, then {requests_made} requests in {load_seconds:.0f} s")
        for slot, model in enumerate(MODELS):
            print(f"  {model}: RSS warm {gb(warm[slot])} GB, after the requests {gb(after[slot])} GB "
                  f"({(after[slot] - warm[slot]) / MB:+.0f} MB); conditionals cache {caches[slot]['entries']}/"
                  f"{caches[slot]['capacity']} ({caches[slot]['bytes'] / MB:.2f} MB)")
        print(f"  {STANDARD} unload/reload: RSS before {gb(before_cycle)} GB, unloaded {gb(unloaded)} GB, reloaded "
              f"{gb(reloaded)} GB ({(reloaded - before_cycle) / MB:+.0f} MB) in {reload_seconds:.1f} s, after a "
              f"request {gb(reloaded_spoken)} GB ({(reloaded_spoken - before_cycle) / MB:+.0f} MB)")

        for slot, model in enumerate(MODELS):
            assert within(after[slot], warm[slot], 150 * MB, 0.05), (model, gb(warm[slot]), gb(after[slot]))
            cache = caches[slot]
            # the library voice (computed once, then cached) and the two uploads (each upload is a file of its
            # own: an entry of its own). The hit count is left alone: a worker publishes it once the
            # connection is closed, which may come just after the answer.
            assert cache["entries"] == cache["misses"] == 3 <= cache["capacity"] == 16, (model, cache)
        assert memory["voice_cache"]["entries"] == 9 and memory["voice_cache"]["capacity"] == 48
        assert before_cycle - unloaded >= 2 * GB
        assert within(reloaded, before_cycle, 200 * MB, 0.06), (gb(before_cycle), gb(reloaded))
        assert within(reloaded_spoken, before_cycle, 200 * MB, 0.06), (gb(before_cycle), gb(reloaded_spoken))
        entry = served(three)[STANDARD]
        assert entry["loads"] == 2 and entry["memory"]["weight_bytes"] > GB
