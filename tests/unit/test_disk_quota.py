"""The per-key disk quota's accounting (store/quota.py): what a workspace holds in outputs, VC
inputs and voices, counted from the owner each records, and the check a write must pass."""
from __future__ import annotations

import json
import threading
import time

import pytest

from chatterbox_server.errors import ApiError
from chatterbox_server.store import quota


def put(path, size: int, meta: dict | None = None, meta_path=None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    if meta is not None:
        (meta_path or path.with_name(path.name + ".json")).write_text(json.dumps(meta))


def test_a_workspace_counts_only_what_it_owns(tmp_path):
    outputs, vc, voices = tmp_path / "outputs", tmp_path / "vc_inputs", tmp_path / "voices"
    put(outputs / "tts_1.wav", 1000, {"owner": "alice"}, outputs / "tts_1.json")
    put(outputs / "tts_1.mp3", 300)                                   # same base name: alice's too
    put(outputs / "proj" / "tts_2.wav", 5000, {"owner": "bob"}, outputs / "proj" / "tts_2.json")
    put(outputs / "tts_3.wav", 7000)                                  # no metadata: nobody's
    put(vc / "talk.wav", 2000, {"owner": "alice"})
    put(vc / "other.wav", 9000, {"owner": None})
    put(voices / "team" / "narrator.wav", 4000, {"owner": "alice"}, voices / "team" / "narrator.json")
    put(voices / "bobs.wav", 8000, {"owner": "bob", "shared": True}, voices / "bobs.json")
    sidecars = {path: path.stat().st_size for path in tmp_path.rglob("*.json")}
    alice = sum(size for path, size in sidecars.items() if '"alice"' in path.read_text())
    assert quota.workspace_bytes(str(outputs), str(vc), str(voices), "alice") == 1000 + 300 + 2000 + 4000 + alice
    assert quota.output_bytes(str(outputs), "bob") == 5000 + sidecars[outputs / "proj" / "tts_2.json"]
    assert quota.sidecar_bytes(str(voices), "bob", ".wav") == 8000 + sidecars[voices / "bobs.json"]
    assert quota.workspace_bytes(str(outputs), str(vc), str(voices), "carol") == 0
    assert quota.workspace_bytes(str(tmp_path / "none"), str(vc), str(voices), "carol") == 0


def test_a_write_past_the_quota_is_refused_naming_the_setting():
    quota.check(900, 100, 1000)                 # exactly full: allowed
    quota.check(999, None, 1000)                # a generation while below: allowed (it may pass by one)
    quota.check(5000, -10, 1000)                # a smaller replacement frees room: allowed
    quota.check(10**12, 10**9, 0)               # 0: no quota
    for used, adding in ((900, 101), (1000, None), (2000, 1)):
        with pytest.raises(ApiError) as caught:
            quota.check(used, adding, 1000)
        assert caught.value.status == 507 and "CHATTERBOX_DISK_QUOTA_PER_KEY_BYTES" in caught.value.message
        assert caught.value.code == "quota_exceeded"


# -- check-and-reserve ----------------------------------------------------------------------------
def concurrent_uploads(tmp_path, reserve, writers: int = 2, size: int = 600) -> list[str]:
    """`writers` threads of one key each check an upload of `size` bytes (quota 1000), take a moment
    to decode it, and store it as a VC input; the check each makes is `reserve(n, count)`, which
    returns what releases its reservation."""
    vc = tmp_path / "vc_inputs"
    vc.mkdir(exist_ok=True)
    barrier = threading.Barrier(writers)
    results: list[str] = []

    def count() -> int:
        used = quota.workspace_bytes(str(tmp_path / "outputs"), str(vc), str(tmp_path / "voices"), "alice")
        time.sleep(0.02)               # a walk takes a while: the other writer checks meanwhile
        return used

    def upload(n: int) -> None:
        barrier.wait()
        try:
            release = reserve(n, count)
        except ApiError as exc:
            results.append(str(exc.status))
            return
        time.sleep(0.05)                        # decoding the upload
        put(vc / f"in{n}.wav", size, {"owner": "alice"})
        release()
        results.append("stored")

    threads = [threading.Thread(target=upload, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results)


def test_two_concurrent_writes_by_one_key_cannot_both_pass_the_check(tmp_path):
    ledger = quota.Reservations()
    results = concurrent_uploads(tmp_path, lambda n, count: ledger.reserve("alice", 600, 1000, count).release)
    assert results == ["507", "stored"]
    assert quota.sidecar_bytes(str(tmp_path / "vc_inputs"), "alice") <= 1000 + 100   # one upload and its metadata
    assert ledger.held("alice") == 0            # every reservation released


def test_writes_that_fit_together_all_pass_and_other_keys_do_not_wait(tmp_path):
    ledger = quota.Reservations()
    assert concurrent_uploads(tmp_path, lambda n, count: ledger.reserve("alice", 200, 1000, count).release,
                              writers=4, size=200) == ["stored"] * 4
    held = ledger.reserve("alice", 300, 10_000, lambda: 0)
    assert ledger.held("alice") == 300
    ledger.reserve("bob", 900, 1000, lambda: 0).release()      # bob's quota knows nothing of alice's writes
    held.release()
    held.release()                                               # idempotent
    assert ledger.held("alice") == 0 and ledger.held("bob") == 0


def test_a_generation_is_refused_while_reservations_fill_the_workspace():
    ledger = quota.Reservations()
    upload = ledger.reserve("alice", 1000, 1000, lambda: 0)
    with pytest.raises(ApiError) as caught:
        ledger.reserve("alice", None, 1000, lambda: 0)          # unknown size, workspace full with writes in flight
    assert caught.value.status == 507 and "in progress" in caught.value.message
    upload.release()
    ledger.reserve("alice", None, 1000, lambda: 0).release()


def test_the_routes_reserve_until_the_request_ends(tmp_path, monkeypatch):
    """require_room in two concurrent requests of one key: one 507, and the reservation of the
    other lasts until its request is torn down."""
    from flask import Flask

    from chatterbox_server.api import disk_quota
    from chatterbox_server.security import guards
    from chatterbox_server.settings import Settings

    app = Flask(__name__)
    app.config["SETTINGS"] = Settings(disk_quota_per_key_bytes=1000)
    monkeypatch.setattr(guards, "workspace", lambda: "alice")
    monkeypatch.setattr(guards, "sees_all", lambda: False)
    monkeypatch.setattr(disk_quota, "RESERVATIONS", quota.Reservations())
    vc = tmp_path / "vc_inputs"
    vc.mkdir()

    def slow_count(owner):  # noqa: ANN001, ANN202
        def count() -> int:
            time.sleep(0.02)
            return quota.sidecar_bytes(str(vc), owner)
        return count

    monkeypatch.setattr(disk_quota, "_counter", slow_count)

    def reserve(n, count):  # noqa: ANN001, ANN202 - the route's check inside its own request
        context = app.test_request_context("/api/v1/vc_input", method="POST")
        context.push()
        try:
            disk_quota.require_room(600)
        except BaseException:
            context.pop()
            raise
        assert disk_quota.RESERVATIONS.held("alice") == 600
        return context.pop                       # the request ends once its file is written

    assert concurrent_uploads(tmp_path, reserve) == ["507", "stored"]
    assert disk_quota.RESERVATIONS.held("alice") == 0


# -- long-text jobs -------------------------------------------------------------------------------
def test_a_keys_long_job_audio_counts_once_per_file(tmp_path):
    """The chunks a failed or cancelled job keeps for a retry, and a job's final file, count in its
    owner's workspace; a retry's chunks are hard links of the first job's, counted once."""
    import os

    from chatterbox_server.synthesis.longjobs import files as job_files

    root = tmp_path / "longtext"
    empty = str(tmp_path / "none")
    job_files.mark_owner(str(root), "cancelled", "alice")
    first = job_files.chunk_path(str(root), "cancelled", 0)
    job_files.write_atomically(first, b"\0" * 4800)
    job_files.write_atomically(job_files.chunk_path(str(root), "cancelled", 1), b"\0" * 4800)
    job_files.mark_owner(str(root), "retry", "alice")
    job_files.link_or_copy(first, job_files.chunk_path(str(root), "retry", 0))          # reused: no new bytes
    job_files.mark_owner(str(root), "bobs", "bob")
    job_files.write_atomically(job_files.output_path(str(root), "bobs", "mp3"), b"\0" * 700)
    job_files.write_atomically(job_files.chunk_path(str(root), "keyless", 0), b"\0" * 999)   # no owner: nobody's
    def marker(job_id: str) -> int:
        return os.path.getsize(os.path.join(root, job_id, quota.LONGTEXT_OWNER_FILE))

    alice = 2 * 4800 + marker("cancelled") + marker("retry")
    assert quota.longtext_bytes(str(root), "alice") == alice
    assert quota.longtext_bytes(str(root), "bob") == 700 + marker("bobs")
    assert quota.workspace_bytes(empty, empty, empty, "alice") == 0         # not asked to count long jobs
    assert quota.workspace_bytes(empty, empty, empty, "alice", longtext_dir=str(root)) == alice
    assert quota.longtext_bytes(empty, "alice") == 0
    job_files.mark_owner(str(root), "cancelled", "mallory")                  # the first owner stays
    assert quota.longtext_bytes(str(root), "mallory") == 0
