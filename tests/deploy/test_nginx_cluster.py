"""The shipped cluster site, run for real: nginx on loopback in front of two servers sharing one DATA_DIR.

The tone engine stands in for the model: it clones (so a stored voice is really used) and its
`[[sleep:S]]` marks keep a stream in flight long enough to kill the instance under it.
The tests of this module run in order on one pair of instances; the last ones kill them.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import signal
import socket
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import requests
from nginxkit import Nginx, local_site, locations, requires_nginx, run_nginx
from realtimekit import RealtimeClient, ws_url
from serverkit import ROOT, Server, free_port, start_server

pytestmark = [pytest.mark.server, pytest.mark.slow, requires_nginx]
SITE = ROOT / "config" / "nginx" / "chatterbox-server-cluster.conf"
SINGLE_SITE = ROOT / "config" / "nginx" / "chatterbox-server.conf"
SLOW_TEXT = " ".join(f"Sentence {i} is here. [[sleep:0.25]]" for i in range(40))   # ~10 s of synthesis


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cluster")
    shared = tmp / "shared-data"                  # NFS in production
    settings = {"engine": "tone", "data_dir": str(shared), "trust_proxy": "1", "front_workers": "1",
                "model_workers": "1"}
    servers = []
    try:
        for name in ("a", "b"):
            (tmp / name).mkdir()
            servers.append(start_server(tmp / name, **settings))
        port, tls_port = free_port(), free_port()
        addresses = iter(server.base.removeprefix("http://") for server in servers)
        site = re.sub(r"server 10\.0\.0\.\d+:4123", lambda _: f"server {next(addresses)}", SITE.read_text())
        (tmp / "nginx").mkdir()
        site = local_site(site, tmp / "nginx", port, tls_port)
        with pytest.MonkeyPatch.context() as patch, run_nginx(tmp / "nginx", site, port, tls_port) as nginx:
            patch.setenv("REQUESTS_CA_BUNDLE", str(tmp / "nginx" / "fullchain.pem"))
            yield nginx, servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()


def address(server: Server) -> str:
    return server.base.removeprefix("http://")


def reference_wav(seconds: float = 3.0, rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    samples = (0.3 * np.sin(2 * np.pi * 180 * t) * 32767).astype(np.int16)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return out.getvalue()


def served(nginx: Nginx, method: str, uri: str, count: int = 0) -> list[str]:
    """The `$upstream_addr` of each finished request for `uri` (comma-separated when nginx moved on).

    nginx writes a request's line just after its last byte went out, so a client can be faster than
    the log: wait for at least `count` lines.
    """
    pattern = re.compile(rf"^{method} {re.escape(uri)} \d+ upstreams=(\S.*) statuses=")
    deadline = time.monotonic() + 5
    while True:
        found = [match.group(1) for line in nginx.access_lines() if (match := pattern.match(line))]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def speech(base: str, voice: str, **extra) -> requests.Response:
    return requests.post(base + "/v1/audio/speech", json={"input": "one two three", "voice": voice, "seed": 7,
                                                          "response_format": "wav", **extra}, timeout=30)


def kill_instance(server: Server) -> None:
    """SIGKILL the whole process group: gunicorn master, front workers, pool supervisor, model workers."""
    os.killpg(server.process.pid, signal.SIGKILL)
    server.process.wait(timeout=10)
    deadline = time.monotonic() + 10
    while living_members(server.process.pid):
        assert time.monotonic() < deadline, f"still alive after SIGKILL: {living_members(server.process.pid)}"
        time.sleep(0.05)


def living_members(group: int) -> list[int]:
    """Processes of a process group that are not zombies (a container's init may be slow to reap them)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == group:
            found.append(int(stat.parent.name))
    return found


def in_flight(server: Server) -> int:
    return server.health()["jobs_in_flight"]


def wait_in_flight(server: Server, count: int) -> None:
    server.wait_until(lambda h: h["jobs_in_flight"] == count, timeout=15, interval=0.05)


# -- the site file --------------------------------------------------------------------------------
def location_directives(path: Path, sockets: bool = False) -> dict[str, str]:
    """The proxy settings of the TLS server's `location /` (or, with `sockets`, of its WebSocket location),
    and the server's client_max_body_size."""
    text = path.read_text()
    [directives] = [d for match, d in locations(text)
                    if ("realtime" in match if sockets else match == "/" and "proxy_pass" in d)]
    proxying = {name: "; ".join(values) for name, values in directives.items()
                if name.startswith(("proxy_", "client_"))}
    return proxying | dict(re.findall(r"^\s*(client_max_body_size)\s+([^;]*);", re.sub(r"#.*", "", text), re.M))


def tls_and_redirect(path: Path) -> tuple[str, list[str]]:
    text = re.sub(r"#.*", "", path.read_text())
    port_80 = re.search(r"server \{\s*listen 80;.*?\n\}", text, re.S).group(0)
    return port_80, re.findall(r"^\s*((?:ssl_\w+|listen|add_header)[^;]*);", text, re.M)


def test_cluster_site_keeps_every_proxy_setting_of_the_single_site():
    single, cluster = location_directives(SINGLE_SITE), location_directives(SITE)
    # a change to the single-instance site (timeouts, buffering, upload size) must be made here too
    assert {k: v for k, v in cluster.items() if k in single and k != "proxy_pass"} == \
        {k: v for k, v in single.items() if k != "proxy_pass"}
    assert cluster["proxy_next_upstream"] == "error timeout http_502 http_503"   # never non_idempotent
    # the WebSocket location too: the same as the single site's, plus the same failover (of handshakes only)
    single_sockets, cluster_sockets = location_directives(SINGLE_SITE, True), location_directives(SITE, True)
    own = ("proxy_pass", "proxy_set_header")
    assert {k: v for k, v in cluster_sockets.items() if k in single_sockets and k not in own} == \
        {k: v for k, v in single_sockets.items() if k not in own}
    upgrade = "Connection $chatterbox_cluster_connection_upgrade"     # its own map: no clash with the single site's
    assert cluster_sockets["proxy_set_header"] == single_sockets["proxy_set_header"].replace(
        "Connection $chatterbox_connection_upgrade", upgrade) != single_sockets["proxy_set_header"]
    failover = ("proxy_next_upstream", "proxy_connect")
    assert {k: v for k, v in cluster_sockets.items() if k.startswith(failover)} == \
        {k: v for k, v in cluster.items() if k.startswith(failover)}
    # the same TLS server and port-80 redirect, and a client's X-Forwarded-Prefix dropped the same way
    assert tls_and_redirect(SITE) == tls_and_redirect(SINGLE_SITE)
    assert 'proxy_set_header X-Forwarded-Prefix "";' in SITE.read_text()
    upstream = SITE.read_text()
    assert "least_conn;" in upstream and upstream.count("max_fails=") == 2
    # nginx must drop an idle upstream connection before gunicorn closes it, or a POST can meet the close
    nginx_idle = int(re.search(r"keepalive_timeout (\d+)s;", upstream).group(1))
    gunicorn_idle = int(re.search(r"^keepalive = (\d+)", (ROOT / "gunicorn.conf.py").read_text(), re.M).group(1))
    assert nginx_idle < gunicorn_idle


# -- shared DATA_DIR ---------------------------------------------------------------------------------
def test_a_voice_uploaded_through_one_instance_works_on_the_other(cluster):
    nginx, a, b = cluster
    upload = requests.post(a.url("/v1/voices"), data={"name": "shared_narrator"},
                           files={"voice_file": ("ref.wav", reference_wav(), "application/octet-stream")}, timeout=30)
    assert upload.status_code == 201, upload.text
    assert "shared_narrator" in [v["name"] for v in requests.get(b.url("/v1/voices"), timeout=10).json()["voices"]]
    on_a, on_b = speech(a.base, "shared_narrator"), speech(b.base, "shared_narrator")
    assert on_a.status_code == on_b.status_code == 200, on_b.text
    assert on_a.content == on_b.content != speech(b.base, "default").content   # the same cloned voice
    # through nginx, whichever box answers: least_conn with both idle alternates between them
    replies = [speech(nginx.base, "shared_narrator") for _ in range(4)]
    assert all(reply.content == on_a.content for reply in replies)
    assert set(served(nginx, "POST", "/v1/audio/speech", count=4)) == {address(a), address(b)}
    # deleted through one box: gone on the other
    assert requests.delete(b.url("/v1/voices/shared_narrator"), timeout=10).status_code == 200
    gone = speech(a.base, "shared_narrator")
    assert gone.status_code == 400 and gone.json()["error"]["code"] == "voice_not_found"


def test_outputs_written_by_either_instance_load_through_nginx(cluster):
    nginx, a, b = cluster
    made = {}
    for server in (a, b):
        reply = requests.post(server.url("/api/v1/tts?response_mode=url"),
                              json={"text": f"written by {address(server)}", "export_formats": ["wav"]}, timeout=30)
        assert reply.status_code == 200, reply.text
        made[address(server)] = reply.json()["output_files"][0]["filename"]
    for maker, filename in made.items():
        direct = requests.get(f"http://{maker}/outputs/{filename}", timeout=10).content
        uri = f"/outputs/{filename}"
        for _ in range(4):          # until each box has served the file at least once (alternation: twice)
            fetched = requests.get(nginx.base + uri, timeout=10)
            assert fetched.status_code == 200 and fetched.content == direct and direct[:4] == b"RIFF"
        assert set(served(nginx, "GET", uri, count=4)) == {address(a), address(b)}, (maker, served(nginx, "GET", uri))



# -- WebSockets ---------------------------------------------------------------------------------------
SOCKET_PATH = "/v1/audio/speech/realtime"


def socket_attempts(nginx: Nginx, count: int) -> list[tuple[str, str]]:
    """(`$upstream_addr`, `$upstream_status`) of each finished socket, once `count` have closed (nginx logs a
    socket when it ends)."""
    pattern = re.compile(rf"^GET {re.escape(SOCKET_PATH)} \d+ upstreams=(.+) statuses=(.+)$")
    deadline = time.monotonic() + 5
    while True:
        found = [(m.group(1), m.group(2)) for line in nginx.access_lines() if (m := pattern.match(line))]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def open_socket(nginx: Nginx) -> RealtimeClient:
    return RealtimeClient(ws_url(nginx.base, SOCKET_PATH), ssl=nginx.socket_tls_context())


def test_a_socket_lives_on_one_box_through_the_cluster(cluster):
    nginx, a, b = cluster
    logged = len(socket_attempts(nginx, 0))
    c = open_socket(nginx)
    try:
        assert c.until_type("session.created")["engine"] == "tone"
        for turn in range(3):           # several turns, each word its own message: all on the same box
            for word in f"Turn {turn} of the conversation is here.".split():
                c.send("input_text.append", text=word + " ")
            c.send("input_text.done")
            c.until_type("speech.audio.done")
        assert len(c.received.audio()) > 24000
    finally:
        c.close()
    [(upstream, status)] = socket_attempts(nginx, logged + 1)[logged:]
    assert status == "101" and upstream in (address(a), address(b))    # one box, one attempt


# -- failover policy ---------------------------------------------------------------------------------
class LoadingBox(BaseHTTPRequestHandler):
    """A box whose model is still loading: the server's 503 with Retry-After to everything."""
    protocol_version = "HTTP/1.1"

    def answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = b'{"error": {"message": "the model is still loading", "code": "model_unavailable"}}'
        self.send_response(503)
        self.send_header("Retry-After", "5")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def loading_and_live(cluster, tmp_path):
    """A second nginx from the same site over a loading box and a live one."""
    _, a, _ = cluster
    loading = ThreadingHTTPServer(("127.0.0.1", 0), LoadingBox)
    threading.Thread(target=loading.serve_forever, daemon=True).start()
    port, tls_port = free_port(), free_port()
    boxes = iter([f"127.0.0.1:{loading.server_port}", address(a)])
    site = re.sub(r"server 10\.0\.0\.\d+:4123", lambda _: f"server {next(boxes)}", SITE.read_text())
    site = local_site(site, tmp_path, port, tls_port)
    try:
        with pytest.MonkeyPatch.context() as patch, run_nginx(tmp_path, site, port, tls_port) as nginx:
            patch.setenv("REQUESTS_CA_BUNDLE", str(tmp_path / "fullchain.pem"))
            yield nginx, f"127.0.0.1:{loading.server_port}", a
    finally:
        loading.shutdown()
        loading.server_close()


def test_a_post_is_never_sent_twice_but_a_get_moves_past_a_503(loading_and_live):
    nginx, loading, live = loading_and_live
    # both boxes idle: nginx alternates, so one of two POSTs reaches the loading box and its 503 comes back
    statuses = sorted(speech(nginx.base, "default").status_code for _ in range(2))
    assert statuses == [200, 503]
    served(nginx, "POST", "/v1/audio/speech", count=2)
    refused = [line for line in nginx.access_lines() if line.startswith("POST") and " 503 " in line]
    assert refused == [f"POST /v1/audio/speech 503 upstreams={loading} statuses=503"]
    # a GET that meets the 503 goes on to the live box, and the loading box is skipped after max_fails=2
    for _ in range(6):
        assert requests.get(nginx.base + "/v1/voices", timeout=10).status_code == 200
    tried = served(nginx, "GET", "/v1/voices", count=6)
    assert [attempts.split(", ")[-1] for attempts in tried] == [address(live)] * 6
    assert sum(loading in attempts for attempts in tried) == 2
    assert "upstream server temporarily disabled" in nginx.error_log()



def test_a_socket_handshake_moves_past_a_503(loading_and_live):
    """A handshake answered 503 (a box still loading) goes on to the next box: the client, which sends no
    frame before the 101, gets its socket from the live box."""
    nginx, loading, live = loading_and_live
    first = open_socket(nginx)          # kept open: least_conn sends the next one to the box with none
    second = open_socket(nginx)
    try:
        for c in (first, second):
            assert c.until_type("session.created")["engine"] == "tone"
    finally:
        first.close()
        second.close()
    attempts = socket_attempts(nginx, 2)
    assert [upstreams.split(", ")[-1] for upstreams, _ in attempts] == [address(live)] * 2
    assert [statuses.split(", ")[-1] for _, statuses in attempts] == ["101", "101"]
    assert (f"{loading}, {address(live)}", "503, 101") in attempts


class DyingSocketBox:
    """A box that accepts a WebSocket handshake, sends one event and dies (closes the TCP connection)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                request = b""
                while b"\r\n\r\n" not in request and (chunk := connection.recv(4096)):
                    request += chunk
                key = re.search(rb"(?im)^sec-websocket-key:\s*(\S+)", request)
                if key is None:
                    continue
                self.accepted += 1
                accept = base64.b64encode(hashlib.sha1(key.group(1) + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
                connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                event = json.dumps({"type": "session.created", "engine": "dying"}).encode()
                connection.sendall(bytes([0x81, len(event)]) + event)      # one unmasked text frame

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def dying_and_live(cluster, tmp_path):
    _, a, _ = cluster
    dying = DyingSocketBox()
    port, tls_port = free_port(), free_port()
    boxes = iter([dying.address, address(a)])
    site = re.sub(r"server 10\.0\.0\.\d+:4123", lambda _: f"server {next(boxes)}", SITE.read_text())
    site = local_site(site, tmp_path, port, tls_port)
    try:
        with run_nginx(tmp_path, site, port, tls_port) as nginx:
            yield nginx, dying, a
    finally:
        dying.close()


def test_a_socket_cut_by_its_box_is_never_replayed_on_another(dying_and_live):
    """After the 101 nginx is a tunnel: a box that dies under a socket ends that socket (no close frame:
    the client sees the cut), and nothing of it is sent to the other box."""
    nginx, dying, live = dying_and_live
    sockets = [open_socket(nginx)]
    if sockets[0].until(lambda e: "engine" in e)["engine"] != "dying":     # on the live box: kept open, so
        sockets.append(open_socket(nginx))                                  # least_conn picks the dying one
        assert sockets[1].until(lambda e: "engine" in e)["engine"] == "dying"
    cut = sockets[-1]
    try:
        assert cut.wait_closed() == (None, None)                            # cut, not closed by a close frame
        assert dying.accepted == 1
        assert all(c.connected for c in sockets[:-1])                       # the live box's socket goes on
    finally:
        for c in sockets:
            c.close()
    attempts = socket_attempts(nginx, len(sockets))
    assert (dying.address, "101") in attempts                               # one box, one attempt
    assert all(", " not in upstreams for upstreams, _ in attempts), attempts
    assert [upstreams for upstreams, _ in attempts].count(address(live)) == len(sockets) - 1


# -- one instance dies -------------------------------------------------------------------------------
def test_least_conn_spreads_streams_and_a_killed_instance_cuts_only_its_own(cluster):
    nginx, a, b = cluster
    assert in_flight(a) == in_flight(b) == 0
    logged = len(served(nginx, "POST", "/v1/audio/speech"))
    first = requests.post(nginx.base + "/v1/audio/speech/stream", json={"input": SLOW_TEXT, "streaming_chunk_size": 50},
                          stream=True, timeout=30)
    assert first.status_code == 200 and first.headers["Transfer-Encoding"] == "chunked"
    first_chunks = first.iter_content(None)
    received = len(next(first_chunks))
    busy, idle = (a, b) if in_flight(a) == 1 else (b, a)
    assert in_flight(busy) == 1 and in_flight(idle) == 0
    # least_conn: the next request goes to the box without an open request, not round robin
    second = requests.post(nginx.base + "/v1/audio/speech",
                           json={"input": "Short and complete.", "stream_format": "sse"}, stream=True, timeout=30)
    second_lines = second.iter_lines(decode_unicode=True)
    assert next(line for line in second_lines if line.startswith("data: "))
    kill_instance(busy)

    # the stream on the dead box: nginx closes the connection without the last chunk, which the client sees
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for chunk in first_chunks:
            received += len(chunk)
    assert received > 44
    # the stream on the live box is untouched and ends with its done event
    events = [json.loads(line[6:]) for line in second_lines if line.startswith("data: ")]
    assert events[-1]["type"] == "speech.audio.done"
    assert served(nginx, "POST", "/v1/audio/speech", count=logged + 1)[logged:] == [address(idle)]

    # new requests all reach the live box; passive health stops nginx from trying the dead one each time
    for _ in range(6):
        assert speech(nginx.base, "default").status_code == 200
    tried = served(nginx, "POST", "/v1/audio/speech", count=logged + 7)[logged + 1:]
    assert [attempts.split(", ")[-1] for attempts in tried] == [address(idle)] * 6
    assert 1 <= sum(address(busy) in attempts for attempts in tried) <= 2          # max_fails=2, then skipped
    assert "connect() failed (111: Connection refused)" in nginx.error_log()
    assert "upstream server temporarily disabled" in nginx.error_log()


def test_an_sse_stream_cut_by_a_dying_instance_has_no_done_event(cluster):
    nginx, a, b = cluster
    [survivor] = [server for server in (a, b) if server.process.poll() is None]    # the previous test killed one
    response = requests.post(nginx.base + "/v1/audio/speech", json={"input": SLOW_TEXT, "stream_format": "sse"},
                             stream=True, timeout=30)
    assert response.status_code == 200 and response.headers["Content-Type"].startswith("text/event-stream")
    lines = response.iter_lines(decode_unicode=True)
    events = [json.loads(next(line for line in lines if line.startswith("data: "))[6:])]
    wait_in_flight(survivor, 1)
    kill_instance(survivor)
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in lines:
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    assert events[0]["type"] == "speech.audio.info"
    assert "speech.audio.done" not in [event["type"] for event in events]
    # no box left: nginx answers for itself, and says so
    assert speech(nginx.base, "default").status_code == 502
