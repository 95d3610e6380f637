"""The shipped systemd unit: verified by systemd, then its ExecStart run the way systemd would run it."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import requests
from serverkit import ROOT, free_port

UNIT = ROOT / "config" / "systemd" / "chatterbox-server.service"
INSTALL_DIR = "/opt/chatterbox-server"


def unit_entries(key: str) -> list[str]:
    values = []
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{key}="):
            values.append(line.split("=", 1)[1])
    return values


def unit_environment(tmp_path: Path) -> dict[str, str]:
    env = {}
    for entry in unit_entries("Environment"):
        name, value = shlex.split(entry)[0].split("=", 1)
        env[name] = value
    assert env["CHATTERBOX_API_KEYS_FILE"] == "/etc/chatterbox-server/api-keys"
    env["CHATTERBOX_API_KEYS_FILE"] = str(tmp_path / "api-keys")
    env["CHATTERBOX_DATA_DIR"] = str(tmp_path / "state")
    env["CHATTERBOX_RUN_DIR"] = str(tmp_path / "run" / "pool")
    env["HF_HOME"] = str(tmp_path / "state" / "huggingface")
    return env


def test_unit_passes_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "chatterbox-server.service"
    unit.write_text(UNIT.read_text().replace(INSTALL_DIR, str(ROOT)))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True)
    assert result.returncode == 0 and "chatterbox-server.service" not in result.stderr, result.stderr


def test_unit_keeps_the_settings_long_streams_need():
    text = UNIT.read_text()
    assert "KillMode=mixed" in text and "Restart=always" in text
    stop = int(unit_entries("TimeoutStopSec")[0])
    assert stop > 120      # the default CHATTERBOX_GRACEFUL_TIMEOUT lets streams finish first


@pytest.mark.server
def test_exec_start_serves_and_stops_on_sigterm_like_systemd(tmp_path):
    command = shlex.split(unit_entries("ExecStart")[0].replace(INSTALL_DIR, str(ROOT)))
    env = {"PATH": os.environ["PATH"], **unit_environment(tmp_path)}
    port = free_port()
    env.update({"CHATTERBOX_BIND": f"127.0.0.1:{port}", "CHATTERBOX_ENGINE": "tone", "HF_HUB_OFFLINE": "1"})
    # the README's install step: a named key, created with the project's own command
    created = subprocess.run([sys.executable, "-m", "chatterbox_server.security.keys", "create", "ops",
                              "--file", env["CHATTERBOX_API_KEYS_FILE"]], cwd=ROOT, capture_output=True, text=True,
                             check=True)
    key = created.stdout.strip()
    process = subprocess.Popen(command, cwd=unit_entries("WorkingDirectory")[0].replace(INSTALL_DIR, str(ROOT)),
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        else:
            pytest.fail("the unit's ExecStart did not become healthy")
        assert Path(env["CHATTERBOX_RUN_DIR"], "model-worker-0.sock").exists()
        models = f"http://127.0.0.1:{port}/v1/models"
        assert requests.get(models, timeout=5).status_code == 401
        assert requests.get(models, headers={"Authorization": f"Bearer {key}"}, timeout=5).status_code == 200
        assert "pid" not in requests.get(f"http://127.0.0.1:{port}/health", timeout=5).json()["workers"]["slots"][0]
        assert (Path(env["CHATTERBOX_RUN_DIR"]).stat().st_mode & 0o777) == 0o700
        tree = [process.pid] + [p.pid for p in psutil.Process(process.pid).children(recursive=True)]
        process.send_signal(signal.SIGTERM)            # KillMode=mixed: the main process only
        assert process.wait(timeout=30) == 0
        time.sleep(0.5)
        assert [p for p in tree if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"] == []
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_the_unit_refuses_to_start_without_its_keys_file(tmp_path):
    env = {"PATH": os.environ["PATH"], **unit_environment(tmp_path), "CHATTERBOX_ENGINE": "tone"}
    command = shlex.split(unit_entries("ExecStart")[0].replace(INSTALL_DIR, str(ROOT)))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "api-keys" in result.stderr
