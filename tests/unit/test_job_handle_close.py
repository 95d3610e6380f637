"""Closing job handles while their readers wait: the reader dies before its descriptor closes.

Closing first left the waiting reader to wake on a closed descriptor (it then read through a
Connection whose handle was gone, a TypeError), and libev with a watcher on a closed or reused
descriptor (EBADF in epoll_ctl, which aborts the front worker: seen with 200 socket turns refused
at once). Run in a child process, since that failure is an abort."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import os, socket
    import gevent
    from chatterbox_server.runtime.pool_client import CooperativeConnection, JobHandle

    handles, peers = [], []
    for _ in range(300):
        ours, theirs = socket.socketpair()
        fd = ours.detach()
        os.set_blocking(fd, False)
        peers.append(theirs)
        handles.append(JobHandle(CooperativeConnection(fd), 0, 0, 0, heartbeat=lambda: 0.0))
    gevent.sleep(0.05)                      # every reader waits on its descriptor now
    for handle in handles:
        handle.close()
    reused = [socket.socketpair() for _ in range(100)]     # the numbers come back at once
    gevent.sleep(0.2)
    assert all(handle.reader.dead for handle in handles)
    print("survived")
""")


def test_closing_many_handles_while_their_readers_wait_is_clean():
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "survived" in done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
