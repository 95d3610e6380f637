"""A throwaway PostgreSQL cluster from Debian's packages, for the job store's PostgreSQL tests.

initdb refuses to run as root, so under root the cluster belongs to the `postgres` user
(runuser); it listens only on a Unix socket in its own temporary directory.
"""
from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass
class Cluster:
    directory: str
    socket_dir: str
    port: int

    def new_database(self) -> str:
        import psycopg
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql://postgres@/{name}?host={self.socket_dir}&port={self.port}"


def _bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else None


def start_cluster() -> Cluster:
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    if not initdb or not pg_ctl:
        # CI installs it (.ci/run), so there a missing PostgreSQL is a failure, not a skip
        missing = "PostgreSQL is not installed (apt-get install postgresql; .ci/run does)"
        pytest.fail(missing) if os.environ.get("CI") else pytest.skip(missing)
    directory = tempfile.mkdtemp(prefix="chatterbox-pg-")
    os.chmod(directory, 0o755)
    as_user: list[str] = []
    if os.getuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(directory, "data")
    subprocess.run([*as_user, initdb, "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
                   check=True, capture_output=True)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = f"-p {port} -k {directory} -c listen_addresses='' -c fsync=off -c max_connections=200"
    subprocess.run([*as_user, pg_ctl, "-D", data, "-o", options, "-l", os.path.join(directory, "log"), "-w",
                    "start"], check=True, capture_output=True)
    return Cluster(directory, directory, port)


def stop_cluster(cluster: Cluster) -> None:
    as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    subprocess.run([*as_user, _bin("pg_ctl"), "-D", os.path.join(cluster.directory, "data"), "-m", "immediate",
                    "stop"], capture_output=True)
    shutil.rmtree(cluster.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)
