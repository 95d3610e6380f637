"""Authentication, Host/Origin checks, per-key stream limits and what callers may see, through
Flask's test client (no model needed: an empty board)."""
from __future__ import annotations

import json
import os
import socket
import stat

import pytest

from chatterbox_server.app import create_app
from chatterbox_server.runtime.progress import REQUEST_OWNER
from chatterbox_server.security import keys as keys_cli
from chatterbox_server.security.keys import KeysFileError, parse_keys
from chatterbox_server.security.origin import allowed_host_names, cross_site, host_allowed, loopback_bind
from chatterbox_server.security.stream_limits import StreamLimits, TooManyStreams
from workers.ipc.board import Board

ALICE, BOB = "alice-key-0123456789abcdef", "bob-key-0123456789abcdefgh"


@pytest.fixture()
def keys_file(tmp_path):
    path = tmp_path / "api-keys"
    path.write_text(f"# team keys\nalice:{ALICE}\nbob:{BOB}  # the other one\n")
    return str(path)


@pytest.fixture()
def make_app(tmp_path, monkeypatch):
    pool_dir = tmp_path / "pool"
    pool_dir.mkdir()
    Board(str(pool_dir / "board"), 1, create=True).close()      # an empty board: no worker, none needed
    monkeypatch.setenv("CHATTERBOX_POOL_DIR", str(pool_dir))

    def make(**config):
        return create_app({"data_dir": str(tmp_path / "data"), **config})
    return make


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# -- keys -----------------------------------------------------------------------------------------
def test_named_keys_from_the_keys_file(make_app, keys_file):
    client = make_app(api_keys_file=keys_file).test_client()
    assert client.get("/v1/models").status_code == 401
    assert client.get("/v1/models", headers=bearer(ALICE)).status_code == 200
    assert client.get("/v1/models", headers={"X-API-Key": BOB}).status_code == 200
    assert client.get("/v1/models", headers=bearer(ALICE[:-1])).status_code == 401


def test_a_missing_or_empty_keys_file_stops_the_start(make_app, tmp_path):
    with pytest.raises(KeysFileError, match="cannot read"):
        make_app(api_keys_file=str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("# nothing yet\n")
    with pytest.raises(KeysFileError, match="holds no key"):
        make_app(api_keys_file=str(tmp_path / "empty"))


@pytest.mark.parametrize("line", ["alice", "alice:short", ":0123456789abcdef0", "a b:0123456789abcdef0"])
def test_bad_lines_name_their_line_number(line):
    with pytest.raises(KeysFileError, match="line 2"):
        parse_keys(f"ok:0123456789abcdef0\n{line}\n")


def test_the_key_command_creates_a_private_file_and_refuses_a_duplicate(tmp_path, capsys, make_app):
    path = str(tmp_path / "keys")
    assert keys_cli.main(["create", "ci", "--file", path]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("cbx-") and len(key) > 40
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert keys_cli.main(["create", "ci", "--file", path]) == 1
    client = make_app(api_keys_file=path).test_client()
    assert client.get("/v1/models", headers=bearer(key)).status_code == 200


# -- what callers see -----------------------------------------------------------------------------
ROOT_KEY = "root-key-0123456789abcdefgh"


def test_health_shows_pids_and_errors_only_to_an_admin_key(make_app, keys_file):
    with open(keys_file, "a") as f:
        f.write(f"root:{ROOT_KEY} admin\n")
    client = make_app(api_keys_file=keys_file).test_client()
    slot = client.get("/health").get_json()["workers"]["slots"][0]
    assert "pid" not in slot and "last_error" not in slot and "state" in slot
    slot = client.get("/health", headers=bearer(ALICE)).get_json()["workers"]["slots"][0]
    assert "pid" not in slot and "last_error" not in slot          # a user's key: no PIDs, no error texts
    slot = client.get("/health", headers=bearer(ROOT_KEY)).get_json()["workers"]["slots"][0]
    assert "pid" in slot and "last_error" in slot
    remote = make_app().test_client().get("/health", environ_base={"REMOTE_ADDR": "203.0.113.9"})
    assert "pid" not in remote.get_json()["workers"]["slots"][0]       # no keys: only local callers
    assert make_app().test_client().get("/memory", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 403
    assert make_app().test_client().get("/memory").status_code == 200   # no keys, on this machine
    assert client.get("/memory", headers=bearer(ALICE)).status_code == 403
    assert client.get("/memory", headers=bearer(ROOT_KEY)).status_code == 200


def test_info_shows_pids_only_to_an_admin_key(make_app, keys_file):
    with open(keys_file, "a") as f:
        f.write(f"root:{ROOT_KEY} admin\n")
    client = make_app(api_keys_file=keys_file).test_client()
    memory = client.get("/v1/info", headers=bearer(ALICE)).get_json()["memory_info"]
    assert "cpu_memory_mb" in memory and not {"front_worker", "model_workers", "system"} & set(memory)
    memory = client.get("/v1/status?include_memory=true", headers=bearer(BOB)).get_json()["memory_info"]
    assert "front_worker" not in memory
    memory = client.get("/v1/info", headers=bearer(ROOT_KEY)).get_json()["memory_info"]
    assert memory["front_worker"]["pid"] == os.getpid()


@pytest.mark.parametrize("line, admin", [("carol:0123456789abcdef0 admin", True),
                                         ("carol:0123456789abcdef0", False),
                                         ("carol:0123456789abcdef0   admin  # ops", True)])
def test_the_word_admin_after_a_key_marks_an_admin_key(line, admin):
    entry = parse_keys(line)[0]
    assert (entry.name, entry.secret, entry.admin) == ("carol", b"0123456789abcdef0", admin)


@pytest.mark.parametrize("line", ["carol:0123456789abcdef0 root", "carol:0123456789abcdef0 admin admin",
                                  "carol:0123456789abcdef0 and-more"])
def test_anything_else_after_a_key_stops_the_start(line):
    with pytest.raises(KeysFileError, match="line 1: after the key only the word `admin`"):
        parse_keys(line)


def test_the_key_command_marks_an_admin_key_and_the_single_key_is_one(tmp_path, capsys):
    path = str(tmp_path / "keys")
    assert keys_cli.main(["create", "ops", "--admin", "--file", path]) == 0
    assert keys_cli.main(["create", "user", "--file", path]) == 0
    loaded = keys_cli.ApiKeys.load("single-key-0123456789", path)
    assert loaded.admins == {"ops", "default"} and loaded.is_admin("ops") and not loaded.is_admin("user")


def test_outputs_need_a_key(make_app, keys_file, tmp_path):
    client = make_app(api_keys_file=keys_file).test_client()
    (tmp_path / "data" / "outputs").mkdir(parents=True, exist_ok=True)
    (tmp_path / "data" / "outputs" / "tts_2026-01-01_000000_000_0123456789abcdef.wav").write_bytes(b"RIFF")
    path = "/outputs/tts_2026-01-01_000000_000_0123456789abcdef.wav"
    assert client.get(path).status_code == 401
    assert client.get(path, headers=bearer(BOB)).status_code == 404      # no owner recorded: an admin's only
    (tmp_path / "data" / "outputs" / "tts_2026-01-01_000000_000_0123456789abcdef.json").write_text(
        '{"generation_type": "tts", "owner": "bob"}')
    assert client.get(path, headers=bearer(BOB)).status_code == 200
    assert client.get(path, headers=bearer(ALICE)).status_code == 404    # bob's: not found, not forbidden


def test_status_shows_a_text_preview_only_to_the_key_that_sent_it(make_app, keys_file):
    app = make_app(api_keys_file=keys_file)
    progress = app.extensions["chatterbox"].progress
    token = REQUEST_OWNER.set("alice")
    try:
        progress.begin("req-1", 3, "alice's private text")
    finally:
        REQUEST_OWNER.reset(token)
    client = app.test_client()
    assert client.get("/v1/status", headers=bearer(ALICE)).get_json()["requests"][0]["text_preview"] == \
        "alice's private text"
    assert client.get("/v1/status", headers=bearer(BOB)).get_json()["requests"][0]["text_preview"] is None
    assert client.get("/v1/status/progress", headers=bearer(BOB)).get_json()["text_preview"] is None
    progress.end("req-1")


# -- Host and Origin ------------------------------------------------------------------------------
def test_dns_rebinding_hosts_are_refused_on_the_default_bind(make_app):
    client = make_app().test_client()
    assert client.get("/v1/models", headers={"Host": "localhost:4123"}).status_code == 200
    assert client.get("/v1/models", headers={"Host": "127.0.0.1:7860"}).status_code == 200
    refused = client.get("/v1/models", headers={"Host": "attacker.example:4123"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "host_not_allowed"
    opened = make_app(allowed_hosts="tts.example.org").test_client()
    assert opened.get("/v1/models", headers={"Host": "tts.example.org"}).status_code == 200


def test_a_network_bind_without_keys_still_refuses_rebinding_hosts(make_app):
    """Reachable from the network and no key to guess: a hostile name resolving to this box must
    not make a browser treat the server as that page's origin."""
    for config in ({"bind": "0.0.0.0:4123"}, {"bind": "127.0.0.1:4123", "trust_proxy": 1}):
        client = make_app(**config).test_client()
        refused = client.get("/v1/models", headers={"Host": "rebind.attacker.example"})
        assert refused.status_code == 403, config
        assert "CHATTERBOX_ALLOWED_HOSTS" in refused.get_json()["error"]["message"]
        for host in ("10.0.0.5:4123", "[fd00::5]:4123", "localhost:4123", "127.0.0.1"):
            assert client.get("/v1/models", headers={"Host": host}).status_code == 200, (config, host)
    wildcard = make_app(bind="0.0.0.0:4123").test_client()
    assert wildcard.get("/v1/models", headers={"Host": socket.gethostname() + ":4123"}).status_code == 200
    named = make_app(bind="0.0.0.0:4123", allowed_hosts="tts.example.org").test_client()
    assert named.get("/v1/models", headers={"Host": "tts.example.org"}).status_code == 200
    assert named.get("/v1/models", headers={"Host": "10.0.0.5"}).status_code == 403     # the list is the list
    keyed = make_app(bind="0.0.0.0:4123", api_key=ALICE).test_client()     # a rebinding page has no key
    assert keyed.get("/v1/models", headers={"Host": "any.example", **bearer(ALICE)}).status_code == 200


def test_cross_site_form_posts_are_refused(make_app):
    client = make_app().test_client()
    form = {"input": "hello", "voice": "default"}
    refused = client.post("/v1/audio/speech/upload", data=form, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.get_json()["error"]["code"] == "cross_site_request"
    assert client.post("/v1/voices", data={"name": "x"}, headers={"Sec-Fetch-Site": "cross-site"}).status_code == 403
    same_site = client.post("/v1/audio/speech/upload", data=form, headers={"Origin": "http://localhost"})
    assert same_site.status_code == 503                 # through the guard; no model worker here
    allowed = make_app(cors_origins="https://app.example").test_client().post(
        "/v1/audio/speech/upload", data=form, headers={"Origin": "https://app.example"})
    assert allowed.status_code == 503


def test_origin_rules():
    assert loopback_bind(["127.0.0.1:4123", "[::1]:80", "localhost:1", "unix:/run/x.sock"])
    assert not loopback_bind(["0.0.0.0:4123"])
    assert allowed_host_names("", ["127.0.0.1:1"], behind_proxy=True, keys_enabled=True) is None
    assert allowed_host_names("", ["0.0.0.0:1"], behind_proxy=False, keys_enabled=True) is None
    assert allowed_host_names("*", ["0.0.0.0:1"], behind_proxy=False) is None
    keyless = allowed_host_names("", ["0.0.0.0:1", "tts-box.lan:2", "unix:/run/x.sock"], behind_proxy=False)
    assert host_allowed("tts-box.lan:2", keyless) and host_allowed("10.0.0.5:1", keyless)
    assert host_allowed("[fd00::5]:1", keyless) and host_allowed("localhost", keyless)
    assert not host_allowed("rebind.attacker.example", keyless)
    assert host_allowed("[::1]:4123", allowed_host_names("", ["127.0.0.1:1"], False))
    assert host_allowed("a.example.com", (".example.com",)) and not host_allowed("example.com.evil", (".example.com",))
    assert not cross_site("GET", "https://evil.example", None, "localhost", ())
    assert cross_site("POST", "null", None, "localhost", ())
    assert not cross_site("POST", None, None, "localhost", ())     # curl, SDKs: no Origin


# -- streams per key ------------------------------------------------------------------------------
def test_stream_limits_count_across_processes_and_forget_dead_ones(tmp_path):
    limits = StreamLimits(str(tmp_path), limit=1)
    token = limits.acquire("alice")
    with pytest.raises(TooManyStreams):
        limits.acquire("alice")
    assert limits.acquire("bob") is not None
    limits.release(token)
    dead = os.path.join(os.path.dirname(token), "999999999-deadbeef")     # its front worker was killed
    open(dead, "w").close()
    assert limits.acquire("alice") is not None and not os.path.exists(dead)


def test_over_the_limit_is_a_429_shaped_like_openais(make_app, keys_file, tmp_path):
    app = make_app(api_keys_file=keys_file, max_streams_per_key=1)
    run_dir = os.environ["CHATTERBOX_POOL_DIR"]
    held = StreamLimits(os.path.join(run_dir, "streams"), 1).acquire("alice")     # a stream in flight
    client = app.test_client()
    body = {"input": "hello"}
    response = client.post("/v1/audio/speech", json=body, headers=bearer(ALICE))
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    error = response.get_json()["error"]
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded" and "limit is 1" in error["message"]
    for _ in range(2):      # bob is free, and a finished response gives its slot back
        with client.post("/v1/audio/speech", json=body, headers=bearer(BOB)) as response:
            assert response.status_code == 503
    StreamLimits.release(held)
    assert client.post("/v1/audio/speech", json=body, headers=bearer(ALICE)).status_code == 503


# -- bodies ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/v1/audio/speech", "/api/v1/tts"])
def test_deeply_nested_json_is_a_400(make_app, path):
    client = make_app().test_client()
    response = client.post(path, data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 400


# -- /api/v1/health: open, so nothing private, and cheap ----------------------------------------
def test_extended_health_shows_no_sizes_memory_or_error_texts_without_an_admin_key(make_app, keys_file):
    from chatterbox_server.api.extended import ops
    with open(keys_file, "a") as f:
        f.write(f"root:{ROOT_KEY} admin\n")
    app = make_app(api_keys_file=keys_file)
    client = app.test_client()
    with app.test_request_context():
        ops.error_log(app.extensions["chatterbox"]).record(
            404, "voice_not_found", "POST /api/v1/tts", "no voice 'alice-private-voice'", owner="alice")
    ops._cache.clear()
    for headers in ({}, bearer(ALICE)):
        body = client.get("/api/v1/health", headers=headers).get_json()
        assert {"status", "workers", "metrics", "system_info", "resource_status", "warnings",
                "error_summary"} <= set(body)                                   # the peer's shape stays
        assert "directories" not in body["resource_status"] and "memory" not in body["resource_status"]
        assert set(body["system_info"]) == {"cpu_count"}
        assert body["error_summary"]["total_errors"] == 1
        assert "alice-private-voice" not in json.dumps(body)
    body = client.get("/api/v1/health", headers=bearer(ROOT_KEY)).get_json()
    assert "outputs" in body["resource_status"]["directories"] and "memory_percent" in body["system_info"]
    assert "alice-private-voice" in json.dumps(body["error_summary"])


def test_extended_health_walks_data_dir_at_most_once_per_interval(make_app, keys_file, monkeypatch):
    from chatterbox_server.api.extended import ops
    with open(keys_file, "a") as f:
        f.write(f"root:{ROOT_KEY} admin\n")
    client = make_app(api_keys_file=keys_file).test_client()
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(ops.os, "walk", lambda path, *a, **k: walks.append(path) or real_walk(path, *a, **k))
    ops._cache.clear()
    for _ in range(5):
        assert client.get("/api/v1/health").status_code in (200, 503)
    assert walks == []                                  # an open probe never walks
    for _ in range(5):
        client.get("/api/v1/health", headers=bearer(ROOT_KEY))
    first = len(walks)
    assert first > 0 and len(walks) == first            # once, then the cached answer for the interval
    monkeypatch.setattr(ops, "HEALTH_CACHE_SECONDS", 0.0)
    client.get("/api/v1/health", headers=bearer(ROOT_KEY))
    assert len(walks) == 2 * first                      # past the interval it measures again


def test_a_directory_walk_is_bounded(tmp_path):
    from chatterbox_server.api.extended.ops import directory_usage
    for i in range(10):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)
    assert directory_usage(str(tmp_path)) == (100, 10)
    assert directory_usage(str(tmp_path), max_files=4) == (40, 4)
