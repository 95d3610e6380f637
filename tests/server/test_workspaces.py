"""Workspaces on a real server (tone engine, two front workers): with two user keys, neither sees
nor touches the other's request text, long jobs, outputs, VC inputs or private voices (another
key's object is "not found", 404, so its existence does not leak); a shared voice works for both
and stays its owner's to change; an admin key sees all; PIDs only for the admin; one key cannot
take every long-job slot."""
from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from serverkit import Server, start_server

from chatterbox_server.audio.encoders import pcm_to_wav

pytestmark = pytest.mark.server
ALICE, BOB, ROOT = "alice-key-0123456789abcdef", "bob-key-0123456789abcdefgh", "root-key-0123456789abcdefg"
LONG = "/v1/audio/speech/long"
SECRET = "Alice's secret plan is in this sentence"
SOURCE = pcm_to_wav((0.4 * np.sin(2 * np.pi * 220 * np.arange(48000) / 16000) * 32767).astype(np.int16), 16000)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workspaces")
    (tmp / "api-keys").write_text(f"alice:{ALICE}\nbob:{BOB}\nroot:{ROOT} admin\n")
    server = start_server(tmp, engine="tone", front_workers="2", graceful_timeout="5",
                          api_keys_file=str(tmp / "api-keys"), longtext_max_active_per_key="2")
    yield server
    server.stop()


def get(server: Server, path: str, key: str, base: str | None = None) -> requests.Response:
    return requests.get((base or server.base) + path, headers=auth(key), timeout=20)


def test_request_history_text_is_the_senders_own(server):
    spoken = requests.post(server.url("/v1/audio/speech"), headers=auth(ALICE), timeout=60,
                           json={"input": SECRET, "response_format": "wav"})
    assert spoken.status_code == 200
    time.sleep(0.5)
    for path in ("/v1/status/history?limit=50", "/v1/status?include_history=true&history_limit=20", "/v1/info"):
        assert SECRET not in get(server, path, BOB).text, path
    assert SECRET in get(server, "/v1/status/history?limit=50", ALICE).text
    assert SECRET in get(server, "/v1/status/history?limit=50", ROOT).text
    cleared = requests.post(server.url("/v1/status/history/clear?confirm=true"), headers=auth(BOB), timeout=10)
    assert cleared.status_code == 200 and cleared.json()["cleared_records"] == 0   # bob clears only his own
    assert SECRET in get(server, "/v1/status/history?limit=50", ALICE).text


def test_pids_are_for_the_admin_key_only(server):
    info = get(server, "/v1/info", BOB).json()
    assert "front_worker" not in info["memory_info"] and "model_workers" not in info["memory_info"]
    assert "pid" not in get(server, "/health", BOB).json()["workers"]["slots"][0]
    assert get(server, "/memory", BOB).status_code == 403
    assert get(server, "/v1/info", ROOT).json()["memory_info"]["front_worker"]["pid"] > 0


def test_long_jobs_are_the_owners_own(server):
    body = {"input": f"{SECRET}. [[sleep:30]] And more.", "response_format": "wav", "streaming_chunk_size": 50}
    created = requests.post(server.url(LONG), json=body, headers=auth(ALICE), timeout=10)
    assert created.status_code == 200, created.text
    job_id = created.json()["job_id"]
    assert get(server, f"{LONG}/{job_id}", ALICE).status_code == 200
    for path in (f"{LONG}/{job_id}", f"{LONG}/jobs/{job_id}", f"{LONG}/{job_id}/details",
                 f"{LONG}/{job_id}/download", f"{LONG}/{job_id}/sse"):
        answer = get(server, path, BOB)
        assert answer.status_code == 404 and answer.json()["error"]["code"] == "job_not_found", path
    for method, path in (("PUT", f"{LONG}/{job_id}/pause"), ("PUT", f"{LONG}/{job_id}/resume"),
                         ("DELETE", f"{LONG}/{job_id}?action=cancel"), ("DELETE", f"{LONG}/{job_id}?action=delete"),
                         ("PATCH", f"{LONG}/{job_id}"), ("POST", f"{LONG}/{job_id}/retry")):
        answer = requests.request(method, server.url(path), headers=auth(BOB), json={"display_name": "x"}, timeout=10)
        assert answer.status_code == 404, (method, path, answer.text)
    bulk = requests.post(server.url(f"{LONG}/bulk"), headers=auth(BOB), timeout=10,
                         json={"job_ids": [job_id], "action": "delete", "confirm": True})
    assert bulk.json()["failed_jobs"] == [job_id]
    for path in (LONG, f"{LONG}/jobs", "/v1/audio/speech/long-history?search=secret",
                 "/v1/audio/speech/long-history/stats"):
        listing = get(server, path, BOB).text
        assert job_id not in listing and SECRET not in listing, path
    assert get(server, "/v1/audio/speech/long-history/stats", BOB).json()["total_jobs"] == 0
    assert job_id in get(server, LONG, ALICE).text and job_id in get(server, LONG, ROOT).text
    assert get(server, f"{LONG}/{job_id}", ALICE).json()["status"] in ("pending", "processing")
    # two active jobs per key: alice's third gets 429 naming the limit, bob still has his own slots
    second = requests.post(server.url(LONG), json=body, headers=auth(ALICE), timeout=10)
    third = requests.post(server.url(LONG), json=body, headers=auth(ALICE), timeout=10)
    assert second.status_code == 200 and third.status_code == 429
    assert "CHATTERBOX_LONGTEXT_MAX_ACTIVE_PER_KEY" in third.json()["error"]["message"]
    assert requests.post(server.url(LONG), json=body, headers=auth(BOB), timeout=10).status_code == 200
    for jid in (job_id, second.json()["job_id"]):
        assert requests.delete(server.url(f"{LONG}/{jid}?action=delete"), headers=auth(ROOT), timeout=10).ok


def test_outputs_are_the_owners_own(server):
    base = server.extended_base
    made = requests.post(base + "/api/v1/tts?response_mode=url", headers=auth(ALICE), timeout=60,
                         json={"text": SECRET, "export_formats": ["wav"]})
    assert made.status_code == 200, made.text
    name = made.json()["output_files"][0]["filename"]
    assert get(server, f"/outputs/{name}", ALICE, base).status_code == 200
    assert get(server, f"/outputs/{name}", ROOT, base).status_code == 200
    assert get(server, f"/outputs/{name}", BOB, base).status_code == 404
    for path in ("/api/v1/outputs", f"/api/v1/outputs?search={name[:8]}", "/api/v1/outputs/folders"):
        assert name not in get(server, path, BOB, base).text and SECRET not in get(server, path, BOB, base).text
    assert name in get(server, "/api/v1/outputs", ALICE, base).text
    assert SECRET in get(server, "/api/v1/outputs", ALICE, base).text
    joined = requests.post(base + "/api/v1/concat", headers=auth(BOB), json={"files": [name, name]}, timeout=30)
    assert joined.status_code == 404, joined.text                      # bob cannot read it through concat
    deleted = requests.delete(base + f"/api/v1/output/{name}?confirm=true", headers=auth(BOB), timeout=10)
    assert deleted.status_code == 404
    bulk = requests.delete(base + f"/api/v1/outputs?confirm=true&search={name}", headers=auth(BOB), timeout=10)
    assert bulk.json().get("deleted_count", 0) == 0
    assert get(server, f"/outputs/{name}", ALICE, base).status_code == 200       # still there
    own = requests.post(base + "/api/v1/concat", headers=auth(ALICE), json={"files": [name, name]}, timeout=30)
    assert own.status_code == 200, own.text
    joined_name = own.headers["X-Output-Files"].split(",")[0]
    assert get(server, f"/outputs/{joined_name}", BOB, base).status_code == 404  # concat output: alice's too
    assert get(server, f"/outputs/{joined_name}", ALICE, base).status_code == 200


def test_vc_inputs_are_the_owners_own(server):
    base = server.extended_base
    up = requests.post(base + "/api/v1/vc_input", headers=auth(ALICE), timeout=30,
                       files={"vc_input_file": ("talk.wav", SOURCE)}, data={"text": SECRET})
    assert up.status_code == 201, up.text
    assert "talk.wav" in get(server, "/api/v1/vc_inputs", ALICE, base).text
    listing = get(server, "/api/v1/vc_inputs", BOB, base).text
    assert "talk.wav" not in listing and SECRET not in listing
    assert requests.delete(base + "/api/v1/vc_input/talk.wav?confirm=true", headers=auth(BOB),
                           timeout=10).status_code == 404
    taken = requests.post(base + "/api/v1/vc_input", headers=auth(BOB), timeout=30,
                          files={"vc_input_file": ("talk.wav", SOURCE)}, data={"overwrite": "true"})
    assert taken.status_code == 409 and "taken" in taken.json()["detail"]       # no overwrite of alice's file
    converted = requests.post(base + "/api/v1/vc", headers=auth(BOB), timeout=30,
                              json={"input_audio_source": "talk.wav", "target_voice_source": "default"})
    assert converted.status_code == 404, converted.text
    assert SECRET in get(server, "/api/v1/vc_inputs", ROOT, base).text


VOICE = pcm_to_wav((0.3 * np.sin(2 * np.pi * 180 * np.arange(66150) / 22050)).astype(np.float32).__mul__(32767)
                   .astype(np.int16), 22050)


def speak(server: Server, key: str, voice: str | None = None) -> requests.Response:
    body = {"input": "same words here", "seed": 3, "response_format": "pcm", **({"voice": voice} if voice else {})}
    return requests.post(server.url("/v1/audio/speech"), headers=auth(key), json=body, timeout=60)


def send(server: Server, method: str, path: str, key: str, base: str | None = None, **kwargs) -> requests.Response:
    return requests.request(method, (base or server.base) + path, headers=auth(key), timeout=30, **kwargs)


def test_private_voices_are_the_owners_own(server):
    base = server.extended_base
    up = send(server, "POST", "/v1/voices", ALICE, data={"name": "alicevoice"},
              files={"voice_file": ("ref.wav", VOICE)})
    assert up.status_code == 201, up.text
    assert up.json()["shared"] is False and up.json()["owner"] == "alice"
    up = send(server, "POST", "/api/v1/voice", ALICE, base, data={"name": "hidden", "folder_path": "alicefolder"},
              files={"voice_file": ("ref.wav", VOICE)})
    assert up.status_code == 201, up.text
    assert send(server, "POST", "/v1/voices/alicevoice/aliases", ALICE, json={"alias": "alicealias"}).ok
    assert get(server, "/v1/voices/alicevoice", ALICE).status_code == 200
    own = speak(server, ALICE, "alicevoice")
    assert own.status_code == 200 and own.content != speak(server, ALICE).content      # her voice, not the default
    for key in (ALICE, ROOT):
        assert "alicevoice" in get(server, "/v1/voices", key).text
        assert "alicefolder/hidden" in get(server, "/api/v1/voices", key, base).text
    # bob: not in any listing
    for path, where in (("/v1/voices", None), ("/v1/voices/all-names", None), ("/api/v1/voices", base),
                        ("/api/v1/voices/folders", base), ("/v1/voices/default", None)):
        listing = get(server, path, BOB, where).text
        assert "alicevoice" not in listing and "alicealias" not in listing and "alicefolder" not in listing, path
    # bob: every route on it answers 404 like a voice that does not exist
    for method, path, where, kwargs in (
            ("GET", "/v1/voices/alicevoice", None, {}), ("GET", "/v1/voices/alicevoice/download", None, {}),
            ("GET", "/v1/voices/alicealias", None, {}),
            ("PUT", "/v1/voices/alicevoice", None, {"json": {"new_name": "bobs"}}),
            ("PATCH", "/v1/voices/alicevoice", None, {"json": {"shared": True}}),
            ("DELETE", "/v1/voices/alicevoice", None, {}),
            ("GET", "/v1/voices/alicevoice/aliases", None, {}),
            ("POST", "/v1/voices/alicevoice/aliases", None, {"json": {"alias": "bobalias"}}),
            ("DELETE", "/v1/voices/alicevoice/aliases/alicealias", None, {}),
            ("POST", "/v1/voices/default", None, {"json": {"voice_name": "alicevoice"}}),
            ("PUT", "/api/v1/voice/alicevoice.wav/metadata", base, {"json": {"shared": True}}),
            ("DELETE", "/api/v1/voice/alicevoice.wav?confirm=true", base, {}),
            ("DELETE", "/api/v1/voice/alicefolder/hidden.wav?confirm=true", base, {})):
        answer = send(server, method, path, BOB, where, **kwargs)
        assert answer.status_code == 404, (method, path, answer.status_code, answer.text)
    bulk = send(server, "DELETE", "/api/v1/voices?confirm=true&search=alice", BOB, base)
    assert bulk.status_code == 200 and bulk.json().get("deleted_count", 0) == 0, bulk.text
    # bob: using it is refused like a voice that does not exist, and the error lists none of hers
    missing, used = speak(server, BOB, "nosuchvoice"), speak(server, BOB, "alicevoice")
    assert used.status_code == missing.status_code == 400 and used.json()["error"]["code"] == "voice_not_found"
    assert "alicevoice" not in used.json()["error"]["message"].split(";")[1] and "alicealias" not in used.text
    assert speak(server, BOB, "alicealias").status_code == 400
    tts = send(server, "POST", "/api/v1/tts", BOB, base, json={"text": "hi there", "reference_audio_filename":
                                                                 "alicevoice.wav"})
    assert tts.status_code == 404 and "no reference audio" in tts.text, tts.text
    long = send(server, "POST", LONG, BOB, json={"input": "hi there", "voice": "alicevoice"})
    assert long.status_code == 400 and long.json()["error"]["code"] == "voice_not_found", long.text
    vc = send(server, "POST", "/api/v1/vc", BOB, base, files={"input_audio": ("in.wav", SOURCE)},
              data={"target_voice_source": "alicevoice"})
    assert vc.status_code == 404, vc.text
    # her name is taken for bob, and no overwrite replaces her voice
    for path, where, data in (("/v1/voices", None, {"name": "alicevoice"}),
                              ("/api/v1/voice", base, {"name": "alicevoice", "overwrite": "true"})):
        taken = send(server, "POST", path, BOB, where, data=data, files={"voice_file": ("ref.wav", VOICE[:60000])})
        assert taken.status_code == 409 and "taken" in taken.text, taken.text
    assert get(server, "/v1/voices/alicevoice/download", ALICE).content == \
        get(server, "/v1/voices/alicevoice/download", ROOT).content
    assert speak(server, ALICE, "alicevoice").content == own.content                  # untouched
    # the default voice is every key's: a private voice cannot be it
    refused = send(server, "POST", "/v1/voices/default", ALICE, json={"voice_name": "alicevoice"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "voice_not_shared"


def test_a_shared_voice_works_for_both_and_stays_its_owners(server):
    base = server.extended_base
    up = send(server, "POST", "/api/v1/voice", ALICE, base, data={"name": "common", "shared": "true"},
              files={"voice_file": ("ref.wav", VOICE)})
    assert up.status_code == 201 and up.json()["voice_metadata"]["shared"] is True, up.text
    listed = {voice["name"]: voice for voice in get(server, "/v1/voices", BOB).json()["voices"]}
    assert listed["common"]["shared"] is True and listed["common"]["owner"] == "alice"
    assert "common" in get(server, "/api/v1/voices", BOB, base).text
    assert get(server, "/v1/voices/common/download", BOB).status_code == 200
    alice_speech, bob_speech = speak(server, ALICE, "common"), speak(server, BOB, "common")
    assert bob_speech.status_code == 200 and bob_speech.content == alice_speech.content      # the same voice
    assert bob_speech.content != speak(server, BOB).content
    tts = send(server, "POST", "/api/v1/tts", BOB, base, json={"text": "hi there",
                                                               "reference_audio_filename": "common.wav"})
    assert tts.status_code == 200, tts.text
    vc = send(server, "POST", "/api/v1/vc", BOB, base, files={"input_audio": ("in.wav", SOURCE)},
              data={"target_voice_source": "common"})
    assert vc.status_code == 200, vc.text
    job = send(server, "POST", LONG, BOB, json={"input": "hi there", "voice": "common"})
    assert job.status_code == 200, job.text
    assert send(server, "DELETE", f"{LONG}/{job.json()['job_id']}?action=delete", BOB).ok
    # bob uses it but cannot change or delete it: 403 naming who may
    for method, path, where, kwargs in (
            ("PATCH", "/v1/voices/common", None, {"json": {"shared": False}}),
            ("PUT", "/v1/voices/common", None, {"json": {"new_name": "bobs"}}),
            ("DELETE", "/v1/voices/common", None, {}),
            ("POST", "/v1/voices/common/aliases", None, {"json": {"alias": "bobalias"}}),
            ("PUT", "/api/v1/voice/common.wav/metadata", base, {"json": {"description": "mine"}}),
            ("DELETE", "/api/v1/voice/common.wav?confirm=true", base, {})):
        answer = send(server, method, path, BOB, where, **kwargs)
        assert answer.status_code == 403 and "owner" in answer.text, (method, path, answer.text)
    assert send(server, "DELETE", "/api/v1/voices?confirm=true&search=common", BOB, base).json()["deleted_count"] == 0
    # a shared voice can be the server-wide default; unshared, bob falls back to the built-in voice
    built_in = speak(server, BOB).content
    try:
        assert send(server, "POST", "/v1/voices/default", ALICE, json={"voice_name": "common"}).ok
        assert speak(server, BOB).content == alice_speech.content
        assert get(server, "/v1/voices/default", BOB).json()["default_voice"] == "common"
        unshared = send(server, "PATCH", "/v1/voices/common", ALICE, json={"shared": False})
        assert unshared.status_code == 200 and unshared.json()["voice"]["shared"] is False
        assert speak(server, BOB).content == built_in
        assert get(server, "/v1/voices/default", BOB).json()["source"] == "built_in"
        assert speak(server, BOB, "common").status_code == 400
        assert speak(server, ALICE).content == alice_speech.content
        bad = send(server, "PATCH", "/v1/voices/common", ALICE, json={"shared": "maybe"})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "shared"
    finally:
        send(server, "DELETE", "/v1/voices/default", ROOT)
    assert send(server, "DELETE", "/v1/voices/common", ALICE).status_code == 200


def test_cleanup_of_every_workspace_is_for_the_admin(server):
    assert send(server, "POST", "/v1/voices/cleanup", BOB).status_code == 403
    assert send(server, "POST", "/v1/voices/cleanup", ROOT).status_code == 200


QUOTA = 200_000          # one 3 s voice (24 kHz WAV, about 144 KB) fits, a second one does not


@pytest.fixture(scope="module")
def quota_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quota")
    (tmp / "api-keys").write_text(f"alice:{ALICE}\nbob:{BOB}\nroot:{ROOT} admin\n")
    server = start_server(tmp, engine="tone", front_workers="1", graceful_timeout="5",
                          api_keys_file=str(tmp / "api-keys"), disk_quota_per_key_bytes=str(QUOTA))
    yield server
    server.stop()


def refused(answer: requests.Response) -> bool:
    return answer.status_code == 507 and "CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES" in answer.text


def test_each_key_is_held_to_its_disk_quota(quota_server):
    server, base = quota_server, quota_server.extended_base
    voice = {"voice_file": ("ref.wav", VOICE)}
    assert send(server, "POST", "/v1/voices", ALICE, data={"name": "first"}, files=voice).status_code == 201
    second = send(server, "POST", "/api/v1/voice", ALICE, base, data={"name": "second"}, files=voice)
    assert refused(second), second.text
    assert get(server, "/v1/voices/second", ALICE).status_code == 404          # nothing half-written
    vc_input = send(server, "POST", "/api/v1/vc_input", ALICE, base, files={"vc_input_file": ("talk.wav", SOURCE)})
    assert refused(vc_input) and "talk.wav" not in get(server, "/api/v1/vc_inputs", ALICE, base).text
    # generations are checked before any synthesis: allowed while below, refused once full, no file made
    for _ in range(10):
        before = get(server, "/api/v1/outputs", ALICE, base).json()["total_files"]
        made = send(server, "POST", "/api/v1/tts", ALICE, base, json={"text": "hello there, this is a test",
                                                                      "export_formats": ["wav"]})
        if made.status_code != 200:
            break
    assert refused(made), made.text
    assert get(server, "/api/v1/outputs", ALICE, base).json()["total_files"] == before
    name = get(server, "/api/v1/outputs", ALICE, base).json()["files"][0]["filename"]
    for path, kwargs in (("/api/v1/concat", {"json": {"files": [name, name]}}),
                         ("/api/v1/concat/mixed", {"json": {"segments": [{"type": "tts",
                                                                          "tts": {"text": "hi there"}}]}}),
                         ("/api/v1/vc", {"files": {"input_audio": ("in.wav", SOURCE)},
                                         "data": {"target_voice_source": "first"}})):
        answer = send(server, "POST", path, ALICE, base, **kwargs)
        assert refused(answer), (path, answer.text)
    # a long job's audio counts too: none is created once the workspace is full
    long_job = send(server, "POST", "/v1/audio/speech/long", ALICE, json={"input": "A long text to speak."})
    assert refused(long_job), long_job.text
    assert get(server, "/v1/audio/speech/long", ALICE).json()["total_jobs"] == 0
    assert speak(server, ALICE, "first").status_code == 200        # speech stores nothing: not held to it
    # another key has its own quota; an admin key is not held to one
    assert send(server, "POST", "/v1/voices", BOB, data={"name": "second"}, files=voice).status_code == 201
    assert send(server, "POST", "/api/v1/tts", BOB, base, json={"text": "hi there"}).status_code == 200
    for name in ("root1", "root2"):
        assert send(server, "POST", "/v1/voices", ROOT, data={"name": name}, files=voice).status_code == 201
    # deleting frees room again
    for entry in get(server, "/api/v1/outputs", ALICE, base).json()["files"]:
        assert send(server, "DELETE", f"/api/v1/output/{entry['path']}?confirm=true", ALICE, base).ok
    assert refused(send(server, "POST", "/api/v1/voice", ALICE, base, data={"name": "third"}, files=voice))
    assert send(server, "DELETE", "/v1/voices/first", ALICE).ok
    assert send(server, "POST", "/api/v1/voice", ALICE, base, data={"name": "third"}, files=voice).status_code == 201
