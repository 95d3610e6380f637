"""A real nginx on loopback for deployment tests: runs a shipped site file with its addresses replaced."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

NGINX_MISSING = shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists()
# CI installs nginx (.ci/run), so there a missing nginx is a failure, not a skip
requires_nginx = pytest.mark.skipif(NGINX_MISSING and not os.environ.get("CI"),
                                    reason="nginx is not installed: apt-get install nginx-light")
# one line per finished request: which upstream(s) nginx tried, and what each answered
ACCESS_FORMAT = "$request_method $uri $status upstreams=$upstream_addr statuses=$upstream_status"


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


@dataclass(frozen=True)
class Nginx:
    base: str
    directory: Path

    def access_lines(self) -> list[str]:
        path = self.directory / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")


@contextmanager
def run_nginx(directory: Path, site: str, port: int) -> Iterator[Nginx]:
    """nginx in the foreground with `site` (already pointing at 127.0.0.1:`port`) as its only site."""
    (directory / "site.conf").write_text(site)
    (directory / "nginx.conf").write_text(f"""
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    log_format upstreams '{ACCESS_FORMAT}';
    access_log {directory}/access.log upstreams;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {directory}/site.conf;
}}
""")
    command = [nginx_binary(), "-p", str(directory), "-c", str(directory / "nginx.conf")]
    check = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    process = subprocess.Popen([*command, "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)
        yield Nginx(f"http://127.0.0.1:{port}", directory)
    finally:
        process.terminate()
        process.wait(timeout=10)
