"""The file-store endpoints through Flask's test client (no model needed): path confinement of every
path parameter and folder field, paging, metadata beside outputs, and the /v1 voice library."""
from __future__ import annotations

import io
import json
import os
from urllib.parse import quote

import numpy as np
import pytest

from chatterbox_server.app import create_app
from chatterbox_server.audio.encoders import pcm_to_wav
from chatterbox_server.store import outputs_index, paths
from chatterbox_server.store.outputs import OutputStore
from workers.ipc.board import Board

RATE = 24000


def wav(seconds: float = 1.5) -> bytes:
    t = np.arange(int(seconds * RATE)) / RATE
    return pcm_to_wav((np.sin(2 * np.pi * 220 * t) * 8000).astype(np.int16), RATE)


@pytest.fixture()
def env(tmp_path, monkeypatch):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()      # no model worker: none is needed here
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))
    data = tmp_path / "data"
    client = create_app({"data_dir": str(data)}).test_client()
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("secret.wav", "secret.json", "secret.wav.json"):
        (outside / name).write_bytes(wav() if name.endswith("wav") else b"{}")
        (data / name).write_bytes(wav() if name.endswith("wav") else b"{}")
    for store in ("voices", "outputs", "vc_inputs"):
        os.symlink(outside, data / store / "linked")
    return client, data, outside


def upload_voice(client, name="narrator", **form):
    return client.post("/api/v1/voice", data={"voice_file": (io.BytesIO(wav()), f"{name}.wav"), "name": name, **form},
                       content_type="multipart/form-data")


def upload_input(client, filename="talk.wav", **form):
    return client.post("/api/v1/vc_input", data={"vc_input_file": (io.BytesIO(wav()), filename), **form},
                       content_type="multipart/form-data")


BAD_PATHS = ["../secret.wav", "../../secret.wav", "linked/secret.wav", "linked/secret", "a/../../secret.wav",
             "%2e%2e/secret.wav", "..\\secret.wav", "secret.wav%00", "\uff0e\uff0e/secret.wav", ".hidden.wav"]
BAD_FOLDERS = ["..", "../x", "/etc", "a/../..", "a\\b", "a\x00b", "\u2025/x", "a/.git"]


def path_requests(bad: str) -> list[tuple[str, str, dict]]:
    quoted = quote(bad, safe="/%")
    return [
        ("PUT", f"/api/v1/voice/{quoted}/metadata", {"json": {"description": "x"}}),
        ("DELETE", f"/api/v1/voice/{quoted}?confirm=true", {}),
        ("DELETE", f"/api/v1/vc_input/{quoted}?confirm=true", {}),
        ("DELETE", f"/api/v1/output/{quoted}?confirm=true", {}),
        ("GET", f"/outputs/{quoted}", {}),
        ("GET", f"/v1/voices/{quoted}", {}),
        ("GET", f"/v1/voices/{quoted}/download", {}),
        ("PUT", f"/v1/voices/{quoted}", {"data": {"new_name": "fresh"}}),
        ("DELETE", f"/v1/voices/{quoted}", {}),
        ("GET", f"/v1/voices/{quoted}/aliases", {}),
        ("POST", f"/v1/voices/{quoted}/aliases", {"data": {"alias": "nick"}}),
        ("POST", "/v1/voices/default", {"data": {"voice_name": bad}}),
        ("DELETE", f"/api/v1/voices?confirm=true&filenames={quote(bad)}", {}),
        ("DELETE", f"/api/v1/vc_inputs?confirm=true&filenames={quote(bad)}", {}),
        ("DELETE", f"/api/v1/outputs?confirm=true&filenames={quote(bad)}", {}),
    ]


@pytest.mark.parametrize("bad", BAD_PATHS)
def test_no_path_parameter_reaches_outside_its_store(env, bad):
    client, data, outside = env
    upload_voice(client)
    for method, url, kwargs in path_requests(bad):
        response = client.open(url, method=method, **kwargs)
        if response.status_code == 200:          # a bulk delete of a clean name that matches nothing
            assert method == "DELETE" and "filenames=" in url and response.get_json()["deleted_count"] == 0
        else:
            assert response.status_code in (400, 404), (method, url, response.status_code)
    for name in ("secret.wav", "secret.json", "secret.wav.json"):
        assert (outside / name).exists() and (data / name).exists()


def folder_requests(bad: str) -> list[tuple[str, str, dict]]:
    return [
        ("GET", f"/api/v1/voices?folder={quote(bad)}", {}),
        ("GET", f"/api/v1/vc_inputs?folder={quote(bad)}", {}),
        ("GET", f"/api/v1/outputs?folder={quote(bad)}", {}),
        ("GET", f"/api/v1/outputs?project={quote(bad)}", {}),
        ("DELETE", f"/api/v1/voices?confirm=true&folder={quote(bad)}", {}),
        ("DELETE", f"/api/v1/vc_inputs?confirm=true&folder={quote(bad)}", {}),
        ("DELETE", f"/api/v1/outputs?confirm=true&folder={quote(bad)}", {}),
        ("PUT", "/api/v1/voice/narrator/metadata", {"json": {"folder_path": bad}}),
    ]


@pytest.mark.parametrize("bad", BAD_FOLDERS)
def test_no_folder_field_reaches_outside_its_store(env, bad):
    client, data, outside = env
    upload_voice(client)
    for method, url, kwargs in folder_requests(bad):
        response = client.open(url, method=method, **kwargs)
        assert response.status_code == 400, (method, url, response.status_code, response.get_json())
        assert response.get_json()["error_code"] == "INVALID_PATH"
    assert upload_voice(client, "other", folder_path=bad).status_code == 400
    assert upload_input(client, folder_path=bad).status_code == 400
    assert upload_input(client, project=bad).status_code == 400
    assert sorted(os.listdir(outside)) == ["secret.json", "secret.wav", "secret.wav.json"]
    assert client.get("/api/v1/voices").get_json()["total_voices"] == 1


def test_a_symlinked_folder_is_never_written_through_nor_listed(env):
    client, _, outside = env
    upload_voice(client)
    assert upload_voice(client, "other", folder_path="linked").status_code == 400
    assert upload_voice(client, "other", folder_path="linked/deeper").status_code == 400
    assert upload_input(client, folder_path="linked").status_code == 400
    assert client.put("/api/v1/voice/narrator/metadata", json={"folder_path": "linked"}).status_code == 400
    for url in ("/api/v1/voices?folder=linked", "/api/v1/vc_inputs?folder=linked", "/api/v1/outputs?folder=linked"):
        body = client.get(url).get_json()
        assert body["count"] == 0, url
    for url in ("/api/v1/vc_inputs?confirm=true&folder=linked", "/api/v1/outputs?confirm=true&folder=linked",
                "/api/v1/voices?confirm=true&folder=linked"):
        assert client.delete(url).get_json()["deleted_count"] == 0, url
    assert sorted(os.listdir(outside)) == ["secret.json", "secret.wav", "secret.wav.json"]


def test_voice_paging_is_consistent_and_searchable(env):
    client, _, _ = env
    for index in range(7):
        assert upload_voice(client, f"v{index}", folder_path="team" if index % 2 else "",
                            tags="odd" if index % 2 else "even").status_code == 201
    seen = []
    for page in (1, 2, 3):
        body = client.get(f"/api/v1/voices?page={page}&page_size=3").get_json()
        assert body["total_pages"] == 3 and body["has_next"] == (page < 3) and body["has_previous"] == (page > 1)
        seen += [voice["id"] for voice in body["voices"]]
    assert sorted(seen) == sorted(["v0", "team/v1", "v2", "team/v3", "v4", "team/v5", "v6"]) and len(set(seen)) == 7
    assert [v["id"] for v in client.get("/api/v1/voices?folder=team").get_json()["voices"]] == \
        ["team/v1", "team/v3", "team/v5"]
    assert client.get("/api/v1/voices?search=ODD").get_json()["count"] == 3
    assert client.get("/api/v1/voices?page_size=101").status_code == 400
    assert client.get("/api/v1/voices?page=0").status_code == 400
    folders = client.get("/api/v1/voices/folders").get_json()
    assert {"path": "team", "voice_count": 3, "subfolders": []} in folders["folders"]


def test_voice_metadata_and_bulk_delete(env):
    client, _, _ = env
    created = upload_voice(client, "narrator", description="calm", tags="a, b",
                           default_parameters=json.dumps({"exaggeration": 0.8, "speed": 1.1})).get_json()
    entry = created["voice_metadata"]
    assert entry["tags"] == ["a", "b"] and entry["default_parameters"] == {"exaggeration": 0.8, "speed_factor": 1.1}
    assert upload_voice(client, "bad", default_parameters='{"exaggeration": 9}').status_code == 400
    assert upload_voice(client, "bad", default_parameters='{"text": "x"}').status_code == 400
    assert upload_voice(client, "bad", default_parameters="not json").status_code == 400
    assert upload_voice(client, "narrator").status_code == 409
    assert upload_voice(client, "narrator", overwrite="true").status_code == 201
    free_text = upload_voice(client, "Mary's voice (2)").get_json()["voice_metadata"]
    assert free_text["name"] == "Mary's voice (2)" and free_text["id"] == "Mary_s_voice_2"
    updated = client.put("/api/v1/voice/narrator.wav/metadata", json={"name": "Narrator", "folder_path": "books"})
    assert updated.status_code == 200 and updated.get_json()["voice_metadata"]["url"] == "books/narrator.wav"
    assert client.put("/api/v1/voice/nobody/metadata", json={"name": "x"}).status_code == 404
    assert client.put("/api/v1/voice/books/narrator/metadata", json={"colour": "x"}).status_code == 400
    assert client.delete("/api/v1/voice/books/narrator").status_code == 400        # confirm=true is required
    assert client.delete("/api/v1/voices?confirm=true").status_code == 400          # and a criterion
    gone = client.delete("/api/v1/voices?confirm=true&folder=books").get_json()
    assert gone["deleted_count"] == 1 and gone["deleted_files"] == ["books/narrator.wav", "books/narrator.json"]
    assert client.get("/api/v1/voices").get_json()["total_voices"] == 1


def test_outputs_list_their_generation_parameters_and_delete_with_their_metadata(env):
    client, data, _ = env
    store = OutputStore(str(data / "outputs"), 0, 0)
    for index, (kind, folder) in enumerate([("tts", ""), ("vc", "proj"), ("tts", "proj/ch1")]):
        written = store.store({"wav": wav(), "mp3": b"ID3 fake"}, prefix=kind, folder=folder, now=1_700_000_000 + index)
        outputs_index.record_generation(store, written, kind, {"seed": index}, duration_seconds=1.5)
    body = client.get("/api/v1/outputs?page_size=2").get_json()
    assert body["total_files"] == 6 and body["total_pages"] == 3 and body["count"] == 2
    newest = body["files"][0]
    assert newest["folder_path"] == "proj/ch1" and newest["parameters"] == {"seed": 2}
    assert newest["generation_type"] == "tts" and newest["duration_seconds"] == 1.5
    assert client.get(newest["url"].replace("http://localhost", "")).status_code == 200
    assert client.get("/api/v1/outputs?generation_type=vc").get_json()["total_files"] == 2
    assert client.get("/api/v1/outputs?folder=proj").get_json()["total_files"] == 4
    assert client.get("/api/v1/outputs?folder=pro").get_json()["total_files"] == 0
    name = newest["filename"]
    assert client.get(f"/api/v1/outputs?filenames={name}").get_json()["total_files"] == 1
    first = client.delete(f"/api/v1/output/proj/ch1/{name}?confirm=true").get_json()
    assert first["deleted_files"] == [f"proj/ch1/{name}"]                     # the mp3 still needs the sidecar
    other = name.replace(".wav", ".mp3") if name.endswith(".wav") else name.replace(".mp3", ".wav")
    second = client.delete(f"/api/v1/output/{other}?confirm=true").get_json()  # a bare name, found in its folder
    assert second["deleted_files"] == [f"proj/ch1/{other}", f"proj/ch1/{name.split('.')[0]}.json"]
    bulk = client.delete("/api/v1/outputs?confirm=true&generation_type=vc").get_json()
    assert bulk["deleted_count"] == 2 and not any(n.endswith(".json") for n in os.listdir(data / "outputs" / "proj"))
    folders = client.get("/api/v1/outputs/folders").get_json()
    assert {folder["path"] for folder in folders["folders"]} == {"proj", "proj/ch1"}


def test_an_output_deleted_between_listing_and_stat_is_left_out_not_a_500(env, monkeypatch):
    """Another instance (or retention) deletes a file after the directory was listed."""
    client, data, _ = env
    store = OutputStore(str(data / "outputs"), 0, 0)
    for index in range(3):
        written = store.store({"wav": wav(0.5)}, now=1_700_000_000 + index)
        outputs_index.record_generation(store, written, "tts", {"seed": index})
    listed = sorted(entry for entry in paths.walk_files(store.directory) if entry[1].endswith(".wav"))
    gone = listed[0]

    def listing_then_a_deletion(directory):
        names = list(real_walk(directory))
        os.unlink(os.path.join(directory, *filter(None, gone)))      # after the listing, before the stat
        return iter(names)
    real_walk = paths.walk_files
    monkeypatch.setattr(paths, "walk_files", listing_then_a_deletion)
    response = client.get("/api/v1/outputs")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert sorted(entry["filename"] for entry in response.get_json()["files"]) == \
        sorted(name for _, name in listed[1:])


def test_x_forwarded_prefix_is_trusted_only_when_configured(env, tmp_path):
    """A client that reaches gunicorn directly must not choose the path of the URLs the server builds."""
    _, data, _ = env
    store = OutputStore(str(data / "outputs"), 0, 0)
    outputs_index.record_generation(store, store.store({"wav": wav(0.5)}), "tts", {})
    header = {"X-Forwarded-Prefix": "/evil", "X-Forwarded-Host": "tts.example.org"}
    for trusted, prefix in ((False, ""), (True, "/evil")):
        app = create_app({"data_dir": str(data), "trust_proxy": 1, "trust_proxy_prefix": trusted,
                          "allowed_hosts": "tts.example.org"})
        url = app.test_client().get("/api/v1/outputs", headers=header).get_json()["files"][0]["url"]
        assert url.startswith(f"http://tts.example.org{prefix}/outputs/"), (trusted, url)


def test_vc_inputs_upload_list_and_delete(env):
    client, data, _ = env
    first = upload_input(client, "My talk (1).wav", text="hello there", folder_path="ep1")
    assert first.status_code == 201 and first.get_json()["path"] == "ep1/My_talk_1.wav"
    assert upload_input(client, "My talk (1).wav", folder_path="ep1").status_code == 409
    assert upload_input(client, "My talk (1).wav", folder_path="ep1", overwrite="true").status_code == 201
    assert upload_input(client, "x.wav", text="t", bogus="1").status_code == 400
    bad = client.post("/api/v1/vc_input", data={"vc_input_file": (io.BytesIO(b"not audio"), "x.wav")},
                      content_type="multipart/form-data")
    assert bad.status_code == 400
    upload_input(client, "second.wav", project="ep2")
    listing = client.get("/api/v1/vc_inputs?search=talk").get_json()
    assert listing["total_files"] == 1 and listing["files"][0]["duration_seconds"] == 1.5
    assert listing["files"][0]["text"] is None or listing["files"][0]["text"] == "hello there"
    assert client.get("/api/v1/vc_inputs?folder=ep2").get_json()["files"][0]["filename"] == "second.wav"
    assert client.delete("/api/v1/vc_inputs?confirm=true&folder=ep2").get_json()["deleted_count"] == 1
    assert client.delete("/api/v1/vc_input/My_talk_1.wav?confirm=true").get_json()["deleted_count"] == 1
    assert client.get("/api/v1/vc_inputs").get_json()["total_files"] == 0


def test_v1_voice_library_parity(env):
    client, data, _ = env
    assert client.post("/v1/voices", data={"voice_name": "narrator", "voice_file": (io.BytesIO(wav()), "n.wav")},
                       content_type="multipart/form-data").status_code == 201
    assert client.get("/v1/voices/default").get_json()["default_voice"] is None
    assert client.post("/v1/voices/default", data={"voice_name": "nobody"}).status_code == 404
    assert client.post("/v1/voices/default", data={"voice_name": "narrator"}).get_json()["default_voice"] == "narrator"
    assert client.post("/v1/voices/narrator/aliases", data={"alias": "nick"}).status_code == 201
    assert client.post("/voices/narrator/aliases", json={"alias": "nick"}).status_code == 409       # root alias path
    assert client.get("/v1/voices/nick").get_json()["voice"]["name"] == "narrator"
    renamed = client.put("/v1/voices/narrator", data={"new_name": "reader"}).get_json()
    assert renamed["new_name"] == "reader"
    assert client.get("/v1/voices/reader/aliases").get_json()["aliases"] == ["nick"]
    assert client.get("/v1/voices/default").get_json()["default_voice"] == "reader"
    assert client.get("/v1/voices/all-names").get_json()["voice_names"] == ["nick", "reader"]
    download = client.get("/v1/voices/nick/download")
    assert download.status_code == 200 and download.data[:4] == b"RIFF"
    assert client.delete("/v1/voices/reader/aliases/nick").get_json()["aliases"] == []
    assert client.delete("/v1/voices/reader/aliases/nick").status_code == 404
    assert client.delete("/v1/voices/default").get_json()["default_voice"] is None
    os.unlink(data / "voices" / "reader.wav")
    assert client.post("/v1/voices/cleanup").get_json()["removed_voices"] == ["reader.json"]
    assert client.get("/v1/voices").get_json()["count"] == 0


def test_openapi_covers_every_store_endpoint(env):
    client, _, _ = env
    spec = client.get("/openapi.json").get_json()["paths"]
    app = client.application
    blueprints = ("extended_voices", "extended_files", "extended_vc", "voice_library")
    rules = [rule for rule in app.url_map.iter_rules() if rule.endpoint.split(".")[0] in blueprints]
    assert len(rules) >= 30
    for rule in rules:
        path = rule.rule.replace("<path:", "{").replace("<", "{").replace(">", "}")
        assert path in spec, path
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec[path], (method, path)
