"""A real nginx on loopback for deployment tests: runs a shipped site file with its addresses replaced.

The shipped sites serve HTTPS with certbot's certificate paths and redirect port 80; `local_site`
points them at loopback ports, a throwaway self-signed certificate for 127.0.0.1 and a scratch
ACME webroot.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
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


def ipv6_loopback() -> bool:
    """Whether this machine can listen on ::1 (a container or kernel without IPv6 cannot)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


IPV6 = ipv6_loopback()
requires_ipv6 = pytest.mark.skipif(not IPV6, reason="no IPv6 loopback (::1) on this machine")


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


LOCATION = re.compile(r"^\s*location\s+((?:~\*?|=|\^~)\s+)?(\S+)\s*\{([^{}]*)\}", re.M)


def locations(config: str) -> list[tuple[str, dict[str, list[str]]]]:
    """Every `location` block of nginx configuration text (a site file, or `nginx -T`), in order: its
    match (`~ REGEX` for a regex location, else the prefix) and its directives, name -> the value of
    each occurrence (several for `proxy_set_header`)."""
    found = []
    for modifier, match, body in LOCATION.findall(re.sub(r"#.*", "", config)):
        directives: dict[str, list[str]] = {}
        for name, value in re.findall(r"^\s*(\w+)\s+([^;]*);", body, re.M):
            directives.setdefault(name, []).append(value.strip())
        found.append((f"{modifier.strip()} {match}".strip(), directives))
    return found


CERTBOT_LIVE = re.compile(r"/etc/letsencrypt/live/[^/;]+/(fullchain|privkey)\.pem")


@dataclass(frozen=True)
class Nginx:
    base: str                   # https:// when the site has a TLS server
    directory: Path
    http_base: str = ""         # the port-80 server of a TLS site (redirects and ACME challenges)

    def over_ipv6(self, url: str) -> str:
        """The same address on ::1 (the sites listen there too when the machine has IPv6 loopback)."""
        return url.replace("127.0.0.1", "[::1]", 1)

    def access_lines(self) -> list[str]:
        path = self.directory / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")

    def effective_config(self) -> str:
        """`nginx -T` of this instance: the configuration it runs, as nginx itself parsed it."""
        dumped = subprocess.run([nginx_binary(), "-p", str(self.directory), "-c", str(self.directory / "nginx.conf"),
                                 "-T"], capture_output=True, text=True)
        assert dumped.returncode == 0, dumped.stderr
        return dumped.stdout

    def tls_context(self) -> ssl.SSLContext:
        """A client context that trusts this instance's throwaway certificate, and only it."""
        return ssl.create_default_context(cafile=str(self.directory / "fullchain.pem"))

    def socket_tls_context(self) -> ssl.SSLContext:
        """`tls_context` for the `websockets` sync client, at most TLS 1.2. Over TLS 1.3 that client lost
        about one opening handshake in 25 against this site (it timed out; nginx logged the connection
        closed "while waiting for request"), and none in 250 over TLS 1.2, while a single-threaded client
        sending the same handshake over TLS 1.3 lost none in 250: the client writes from one thread while
        its reader thread reads the same SSL socket, and TLS 1.3 sends session tickets after the handshake."""
        context = self.tls_context()
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return context


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key for 127.0.0.1 and ::1 (openssl; valid for a day)."""
    cert, key = directory / "fullchain.pem", directory / "privkey.pem"
    made = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                           "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                           "-addext", "subjectAltName=IP:127.0.0.1,IP:::1",
                           "-keyout", str(key), "-out", str(cert)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return cert, key


def local_site(site: str, directory: Path, http_port: int, https_port: int) -> str:
    """A shipped TLS site on 127.0.0.1: `http_port` for port 80, `https_port` for 443, a self-signed
    certificate in place of certbot's, and `directory`/webroot for the ACME challenges. Its IPv6
    listens (`[::]:80`, `[::]:443`) go to the same ports on ::1, or are dropped on a machine
    without IPv6 loopback."""
    assert "listen 80;" in site and "listen 443 ssl;" in site and CERTBOT_LIVE.search(site), "not a TLS site"
    assert "listen [::]:80;" in site and "listen [::]:443 ssl;" in site, "a listen without its IPv6 twin"
    cert, key = self_signed_certificate(directory)
    (directory / "webroot" / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{https_port} ssl;")
    site = site.replace("listen [::]:80;", f"listen [::1]:{http_port};" if IPV6 else "")
    site = site.replace("listen [::]:443 ssl;", f"listen [::1]:{https_port} ssl;" if IPV6 else "")
    site = CERTBOT_LIVE.sub(lambda match: str(cert if match.group(1) == "fullchain" else key), site)
    return site.replace("root /var/www/html;", f"root {directory / 'webroot'};")


@contextmanager
def run_nginx(directory: Path, site: str, port: int, tls_port: int | None = None) -> Iterator[Nginx]:
    """nginx in the foreground with `site` (already pointing at 127.0.0.1:`port`, and `tls_port` for a
    site from `local_site`) as its only site."""
    (directory / "site.conf").write_text(site)
    # as root, nginx's workers would run as nobody, who cannot read pytest's private tmp (the ACME webroot)
    user = "user root;" if os.geteuid() == 0 else ""
    (directory / "nginx.conf").write_text(f"""
{user}
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
        for listening in (port, tls_port or port):
            while True:
                try:
                    socket.create_connection(("127.0.0.1", listening), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or process.poll() is not None:
                        raise
                    time.sleep(0.1)
        plain = f"http://127.0.0.1:{port}"
        yield Nginx(f"https://127.0.0.1:{tls_port}" if tls_port else plain, directory, plain)
    finally:
        process.terminate()
        process.wait(timeout=10)
