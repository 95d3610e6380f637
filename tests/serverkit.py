"""Real servers for tests: gunicorn with gevent workers and model workers, spoken to over HTTP."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    base: str
    extended_base: str
    process: subprocess.Popen
    log_path: Path
    data_dir: Path

    def url(self, path: str) -> str:
        return self.base + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        return requests.get(self.url("/health"), timeout=5).json()

    def wait_until(self, predicate, timeout: float = 30.0, interval: float = 0.1) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                report = self.health()
                if predicate(report):
                    return report
            except requests.RequestException:
                pass
            time.sleep(interval)
        raise AssertionError(f"condition not met in {timeout} s; last health: {self.health()}\n{self.log()[-3000:]}")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                return self.process.wait(timeout=10)
        return self.process.returncode


def start_server(tmp_path: Path, ready_timeout: float = 120, **settings: str) -> Server:
    port, extended_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHATTERBOX_")}
    env.update({"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                "CHATTERBOX_BIND": f"127.0.0.1:{port} 127.0.0.1:{extended_port}",
                "CHATTERBOX_DATA_DIR": str(tmp_path / "data"), "CHATTERBOX_LOG_LEVEL": "info"})
    env.update({f"CHATTERBOX_{key.upper()}": str(value) for key, value in settings.items()})
    log_path = tmp_path / "server.log"
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                               cwd=ROOT, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{extended_port}", process, log_path,
                    tmp_path / "data")
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url("/health"), timeout=2).status_code == 200:
                return server
        except requests.RequestException:
            pass
        time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not become ready:\n{server.log()}")
