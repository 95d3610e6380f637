"""The realtime WebSockets through the shipped nginx site, run for real (HTTPS on a throwaway
self-signed certificate) in front of a real server: the socket location's settings as nginx runs
them, a turn streamed word by word, a long pause, a vendor socket, and no delay added to a frame."""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from nginxkit import Nginx, local_site, locations, requires_nginx, run_nginx
from realtimekit import RealtimeClient, ws_url
from serverkit import ROOT, Server, free_port, start_server

from chatterbox_server.app import _register_blueprints
from chatterbox_server.settings import Settings

pytestmark = [pytest.mark.server, requires_nginx]
SITE = ROOT / "config" / "nginx" / "chatterbox-server.conf"
SITES = (SITE, ROOT / "config" / "nginx" / "chatterbox-server-cluster.conf")
PATH = "/v1/audio/speech/realtime"
TURN = "Hello there, this is a streamed turn. It keeps going for a little while. And then it ends."
# the tone engine takes this long per segment: a frame held back anywhere shows as a later arrival
SLOW_TURN = "A quick first sentence here. [[sleep:0.6]] Then a slower second one. [[sleep:0.6]] And a last one."
PAUSE = 5.0


def served_site(server: Server, directory: Path, read_timeout: str | None = None) -> str:
    """The shipped single-box site on loopback in front of `server`; `read_timeout` replaces the socket
    location's proxy_read_timeout (a control with a short one)."""
    site = SITE.read_text().replace("server 127.0.0.1:4123;", f"server {server.base.removeprefix('http://')};")
    if read_timeout is not None:
        site, replaced = re.subn(r"proxy_read_timeout 3600s;", f"proxy_read_timeout {read_timeout};", site)
        assert replaced == 1
    directory.mkdir()
    return site


@pytest.fixture(scope="module")
def proxied(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nginx-ws")
    server = start_server(tmp, engine="tone", trust_proxy="1", front_workers="2", model_workers="1")
    try:
        port, tls_port = free_port(), free_port()
        site = local_site(served_site(server, tmp / "nginx"), tmp / "nginx", port, tls_port)
        with run_nginx(tmp / "nginx", site, port, tls_port) as nginx:
            yield server, nginx
    finally:
        server.stop()


def client(base: str, path: str = PATH, nginx: Nginx | None = None) -> RealtimeClient:
    return RealtimeClient(ws_url(base, path), ssl=nginx.socket_tls_context() if nginx else None)


def opened(base: str, nginx: Nginx | None = None) -> RealtimeClient:
    c = client(base, nginx=nginx)
    assert c.until_type("session.created")["engine"] == "tone"
    return c


def stream_words(c: RealtimeClient, text: str) -> None:
    for word in text.split(" "):
        c.send("input_text.append", text=word + " ")


def pcm(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def timed_turn(c: RealtimeClient, text: str) -> tuple[float, float, bytes]:
    """Stream a turn and read it to speech.audio.done: seconds from its last message to the first delta
    and to the done event, and the turn's audio."""
    first_delta = len(c.received.of("speech.audio.delta"))
    already = len(c.received.audio())
    stream_words(c, text)
    c.send("input_text.done")
    sent = time.monotonic()
    c.until_type("speech.audio.delta")
    first = time.monotonic() - sent
    c.until_type("speech.audio.done")
    done = time.monotonic() - sent
    assert len(c.received.of("speech.audio.delta")) > first_delta + 1
    return first, done, c.received.audio()[already:]


def socket_location(config: str) -> dict[str, list[str]]:
    [found] = [directives for match, directives in locations(config) if "realtime" in match]
    return found


def socket_regex(config: str) -> re.Pattern:
    [match] = [match for match, _ in locations(config) if "realtime" in match]
    return re.compile(match.removeprefix("~ "))


def seconds(value: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


# -- the configuration nginx runs ---------------------------------------------------------------------
def test_the_socket_location_nginx_runs_upgrades_and_outlives_the_servers_own_timeouts(proxied):
    _, nginx = proxied
    config = nginx.effective_config()          # nginx -T: what this instance parsed, not the file on disk
    sockets = socket_location(config)
    assert sockets["proxy_http_version"] == ["1.1"] and sockets["proxy_buffering"] == ["off"]
    headers = dict(value.split(" ", 1) for value in sockets["proxy_set_header"])
    assert headers["Upgrade"] == "$http_upgrade"
    variable = headers["Connection"]
    mapped = re.search(r"map \$http_upgrade " + re.escape(variable) + r" \{([^}]*)\}", config)
    assert mapped and re.search(r"default\s+upgrade;", mapped.group(1))
    # the same forwarding as the HTTP location (the server trusts these with CHATTERBOX_TRUST_PROXY)
    [http] = [d for match, d in locations(config) if match == "/" and "proxy_pass" in d]
    assert {k: v for k, v in headers.items() if k.startswith("X-Forwarded") or k == "Host"} == \
        {k: v for k, v in (value.split(" ", 1) for value in http["proxy_set_header"]) if k != "Connection"}
    # an idle socket lives as long as the server wants it to: far above its ping interval and idle timeout
    # (nginx's default proxy_read_timeout, 60 s, is the whole default idle timeout)
    defaults = Settings.from_env({})
    for name in ("proxy_read_timeout", "proxy_send_timeout"):
        [value] = sockets[name]
        assert seconds(value) == 3600 >= 10 * max(defaults.realtime_ping_interval, defaults.realtime_idle_timeout)
    # the HTTP location is as it was
    assert http["proxy_read_timeout"] == ["360s"] and 'Connection ""' in http["proxy_set_header"]


def test_the_socket_location_holds_every_socket_route_and_no_http_route():
    """Every route the app serves as a WebSocket (flask-sock's) is in the socket location of every
    shipped site, and every other route stays in `location /`."""
    app = Flask(__name__)
    _register_blueprints(app)
    sockets, http = set(), set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:\w+:)?\w+>", "some_voice", rule.rule)
        is_socket = app.view_functions[rule.endpoint].__code__.co_name == "websocket_route"    # flask-sock's
        (sockets if is_socket else http).add(path)
    assert {"/v1/audio/speech/realtime", "/audio/speech/realtime", "/v1/speak", "/tts/websocket",
            "/v1/text-to-speech/some_voice/stream-input", "/v1/text-to-speech/some_voice/multi-stream-input"} <= sockets
    for site in SITES:
        regex = socket_regex(site.read_text())
        assert [path for path in sockets if not regex.search(path)] == [], site.name
        assert [path for path in http if regex.search(path)] == [], site.name
        # nor ElevenLabs' HTTP paths beside its sockets, nor a longer path
        for path in ("/v1/text-to-speech/some_voice/stream", "/v1/text-to-speech/some_voice", "/v1/speak/x",
                     "/v1/text-to-speech/a/b/stream-input", "/x/v1/speak"):
            assert not regex.search(path), (site.name, path)


# -- sockets through nginx --------------------------------------------------------------------------
def test_a_turn_streamed_word_by_word_through_nginx_comes_back_as_audio(proxied):
    _, nginx = proxied
    c = opened(nginx.base, nginx)
    try:
        _, _, audio = timed_turn(c, TURN)
        assert len(audio) > 24000 * 2                       # over a second of PCM16 at 24 kHz
        assert np.abs(pcm(audio)).max() > 1000              # not silence
        sequences = [e["sequence"] for e in c.received.of("speech.audio.delta")]
        assert sequences == list(range(len(sequences)))
    finally:
        c.close()
    time.sleep(0.2)                                         # nginx logs a socket once it has closed
    assert [line for line in nginx.access_lines() if line.startswith(f"GET {PATH} 101 ")]


def test_frames_are_not_held_back_by_nginx(proxied):
    """The same slow turn (0.6 s per segment) directly and through nginx: the first delta comes through
    nginx within 0.5 s of when it comes directly, and the last one as late, so frames went on one by one."""
    server, nginx = proxied
    timings = {}
    for name, base, proxy in (("direct", server.base, None), ("nginx", nginx.base, nginx),
                              ("direct again", server.base, None)):
        c = opened(base, proxy)
        try:
            first, done, audio = timed_turn(c, SLOW_TURN)
            assert np.abs(pcm(audio)).max() > 1000
            timings[name] = (first, done)
        finally:
            c.close()
    direct_first = min(timings["direct"][0], timings["direct again"][0])
    nginx_first, nginx_done = timings["nginx"]
    assert nginx_first < direct_first + 0.5, timings
    assert nginx_done - nginx_first > 1.0, timings          # the later segments came as they were made


def test_a_socket_paused_between_messages_is_neither_cut_nor_held(proxied):
    """A pause with nothing on the socket in either direction (the server's first ping is 20 s away), then
    the next turn: it comes back as promptly as the first, on the same socket."""
    _, nginx = proxied
    c = opened(nginx.base, nginx)
    try:
        first_turn, _, _ = timed_turn(c, TURN)
        paused = time.monotonic()
        assert c.next(timeout=PAUSE) is None and c.connected     # nothing arrives, nothing is cut
        assert time.monotonic() - paused >= PAUSE - 0.1
        second_turn, _, audio = timed_turn(c, TURN)
        assert np.abs(pcm(audio)).max() > 1000
        assert second_turn < first_turn + 0.5, (first_turn, second_turn)
        assert c.connected
    finally:
        c.close()


def test_the_pause_test_would_catch_a_short_read_timeout(proxied, tmp_path):
    """Control: the same site with the socket location's proxy_read_timeout at 2 s cuts the paused socket
    (no close frame: nginx drops both connections), so the pause above did test the shipped timeout."""
    server, _ = proxied
    port, tls_port = free_port(), free_port()
    site = local_site(served_site(server, tmp_path / "short", read_timeout="2s"), tmp_path / "short", port, tls_port)
    with run_nginx(tmp_path / "short", site, port, tls_port) as short:
        c = opened(short.base, short)
        try:
            paused = time.monotonic()
            assert c.next(timeout=PAUSE) is None
            assert c.closed == (None, None), c.closed
            assert 1.5 < time.monotonic() - paused < PAUSE
        finally:
            c.close()


def test_deepgrams_speak_socket_through_nginx(proxied):
    _, nginx = proxied
    c = client(nginx.base, "/v1/speak?encoding=linear16&sample_rate=24000", nginx)
    try:
        assert c.until_type("Metadata")["request_id"]
        c.send("Speak", text="Hello there.")
        c.send("Flush")
        flushed = c.until_type("Flushed")
        assert "sequence_id" in flushed
        audio = b"".join(c.received.binary)
        assert len(audio) > 2400 and np.abs(pcm(audio)).max() > 1000     # binary frames, before the Flushed
    finally:
        c.close()
