"""Long-text jobs in the database: creation, leases, chunk progress, listing and retention.

Every state change is one short transaction. A runner owns a job only while its lease is valid:
it claims the job, extends the lease while it works and loses the job to another runner once the
lease expires (or at once when the owner is a dead process on this same host). Lease times come
from the database's clock (db_now), and a chunk is recorded only for the runner holding the lease.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update

from chatterbox_server.store.db import Database, db_now, guard_methods, reading, serialize
from chatterbox_server.store.job_states import ACTIVE, FINISHED, PAUSED, PENDING, PROCESSING
from chatterbox_server.store.tables import long_job_chunks, long_jobs

SORTS = {
    "created_desc": long_jobs.c.created_at.desc(), "created_asc": long_jobs.c.created_at.asc(),
    "completed_desc": long_jobs.c.processing_completed_at.desc(),
    "completed_asc": long_jobs.c.processing_completed_at.asc(),
    "duration_desc": long_jobs.c.output_duration_seconds.desc(),
    "duration_asc": long_jobs.c.output_duration_seconds.asc(),
    "name_asc": long_jobs.c.display_name.asc(), "name_desc": long_jobs.c.display_name.desc(),
    "size_desc": long_jobs.c.output_size_bytes.desc(), "size_asc": long_jobs.c.output_size_bytes.asc(),
}


def _scoped(query, scope: str | None):  # noqa: ANN001, ANN202 - a Select
    """Restrict `query` to one workspace (an owner); None: every workspace (see security.guards.scope)."""
    return query if scope is None else query.where(long_jobs.c.owner == scope)


@guard_methods
class JobStore:
    def __init__(self, engine: Engine, lease_seconds: float, database: Database | None = None) -> None:
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.database = database

    # -- creation and reading ---------------------------------------------------------------------
    def create(self, row: dict[str, Any], chunks: list[str], done: dict[int, dict[str, Any]] | None = None) -> None:
        """A new job; `done` (a retry's reused chunks: idx -> audio_file, samples, synth_ms) is recorded
        in the same transaction, so no runner can claim the job before its chunks are there."""
        now = time.time()
        done = {idx: value for idx, value in (done or {}).items() if 0 <= idx < len(chunks)}
        values = {"created_at": now, "updated_at": now, "completed_chunks": len(done), "tags": "[]",
                  "is_archived": False, "retry_count": 0, "attempts": 0, "total_processing_time_ms": 0,
                  "status": PENDING, "total_chunks": len(chunks), **row}
        with self.engine.begin() as conn:
            conn.execute(insert(long_jobs).values(**values))
            if chunks:
                conn.execute(insert(long_job_chunks), [
                    {"job_id": row["id"], "idx": i, "text": t, "audio_file": None, "samples": None,
                     "synth_ms": None, "completed_at": None,
                     **({**done[i], "completed_at": now} if i in done else {})}
                    for i, t in enumerate(chunks)])

    def get(self, job_id: str, scope: str | None = None) -> dict[str, Any] | None:
        """The job, or None when there is none or it belongs to another workspace than `scope`."""
        with reading(self.engine) as conn:
            row = conn.execute(_scoped(select(long_jobs).where(long_jobs.c.id == job_id), scope)).mappings().first()
        return dict(row) if row else None

    def chunks(self, job_id: str) -> list[dict[str, Any]]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(long_job_chunks).where(long_job_chunks.c.job_id == job_id)
                                .order_by(long_job_chunks.c.idx)).mappings().all()
        return [dict(row) for row in rows]

    def list(self, *, status: str | None = None, session_id: str | None = None, search: str | None = None,
             is_archived: bool | None = None, start: float | None = None, end: float | None = None,
             sort: str = "created_desc", limit: int = 20, offset: int = 0,
             scope: str | None = None) -> list[dict[str, Any]]:
        query = select(*[c for c in long_jobs.c if c.name != "text"],
                       func.substr(long_jobs.c.text, 1, 100).label("text_preview"))
        conditions = []
        if status:
            conditions.append(long_jobs.c.status == status)
        if session_id:
            conditions.append(long_jobs.c.session_id == session_id)
        if search:
            pattern = f"%{search.lower()}%"
            conditions.append(or_(func.lower(long_jobs.c.text).like(pattern),
                                  func.lower(long_jobs.c.display_name).like(pattern)))
        if is_archived is not None:
            conditions.append(long_jobs.c.is_archived == is_archived)
        if start is not None:
            conditions.append(long_jobs.c.created_at >= start)
        if end is not None:
            conditions.append(long_jobs.c.created_at <= end)
        query = _scoped(query.where(and_(*conditions)) if conditions else query, scope)
        query = query.order_by(SORTS[sort], long_jobs.c.created_at.desc()).limit(limit).offset(offset)
        with reading(self.engine) as conn:
            return [dict(row) for row in conn.execute(query).mappings().all()]

    def status_counts(self, scope: str | None = None) -> dict[str, int]:
        with reading(self.engine) as conn:
            rows = conn.execute(_scoped(select(long_jobs.c.status, func.count()), scope)
                                .group_by(long_jobs.c.status)).all()
        return {status: count for status, count in rows}

    def all_rows(self, session_id: str | None = None, scope: str | None = None) -> list[dict[str, Any]]:
        query = select(long_jobs.c.status, long_jobs.c.voice, long_jobs.c.created_at,
                       long_jobs.c.output_duration_seconds, long_jobs.c.output_size_bytes,
                       long_jobs.c.total_processing_time_ms)
        if session_id:
            query = query.where(long_jobs.c.session_id == session_id)
        query = _scoped(query, scope)
        with reading(self.engine) as conn:
            return [dict(row) for row in conn.execute(query).mappings().all()]

    # -- user actions -----------------------------------------------------------------------------
    def transition(self, job_id: str, allowed_from: tuple[str, ...], values: dict[str, Any]) -> bool:
        """Set `values` if the job is in one of `allowed_from`; False when it is not (or is gone)."""
        with self.engine.begin() as conn:
            result = conn.execute(update(long_jobs)
                                  .where(long_jobs.c.id == job_id, long_jobs.c.status.in_(allowed_from))
                                  .values(updated_at=time.time(), **values))
        return result.rowcount == 1

    def update_meta(self, job_id: str, values: dict[str, Any]) -> bool:
        if "tags" in values:
            values = {**values, "tags": json.dumps(values["tags"])}
        with self.engine.begin() as conn:
            result = conn.execute(update(long_jobs).where(long_jobs.c.id == job_id)
                                  .values(**{"updated_at": time.time(), **values}))
        return result.rowcount == 1

    def touch(self, job_id: str) -> None:
        """Record an access; not a change, so the retention clock (updated_at) keeps running."""
        with self.engine.begin() as conn:
            conn.execute(update(long_jobs).where(long_jobs.c.id == job_id).values(last_accessed=time.time()))

    def delete(self, job_id: str) -> bool:
        with self.engine.begin() as conn:
            conn.execute(delete(long_job_chunks).where(long_job_chunks.c.job_id == job_id))
            result = conn.execute(delete(long_jobs).where(long_jobs.c.id == job_id))
        return result.rowcount == 1

    def count_active(self, scope: str | None = None) -> int:
        """Jobs pending, running or paused: every workspace's, or one owner's."""
        with reading(self.engine) as conn:
            return conn.execute(_scoped(select(func.count()).select_from(long_jobs)
                                        .where(long_jobs.c.status.in_(ACTIVE)), scope)).scalar_one()

    # -- the runner's side ------------------------------------------------------------------------
    def claim(self, owner: str, max_running: int, owner_dead: Callable[[str], bool]) -> dict[str, Any] | None:
        """Take the oldest runnable job if fewer than `max_running` jobs hold a valid lease."""
        with self.engine.begin() as conn:
            serialize(conn)
            now = db_now(conn)
            processing = conn.execute(select(long_jobs.c.id, long_jobs.c.lease_owner, long_jobs.c.lease_expires,
                                             long_jobs.c.created_at)
                                      .where(long_jobs.c.status == PROCESSING)).all()
            stale = [row for row in processing
                     if (row.lease_expires or 0) <= now or not row.lease_owner or owner_dead(row.lease_owner)]
            if len(processing) - len(stale) >= max_running:
                return None
            pending = conn.execute(select(long_jobs.c.id, long_jobs.c.created_at)
                                   .where(long_jobs.c.status == PENDING)
                                   .order_by(long_jobs.c.created_at).limit(1)).first()
            candidates = sorted([*stale, *([pending] if pending else [])], key=lambda r: r.created_at)
            if not candidates:
                return None
            job_id = candidates[0].id
            conn.execute(update(long_jobs).where(long_jobs.c.id == job_id).values(
                status=PROCESSING, lease_owner=owner, lease_expires=now + self.lease_seconds, updated_at=now,
                processing_started_at=func.coalesce(long_jobs.c.processing_started_at, now)))
            row = conn.execute(select(long_jobs).where(long_jobs.c.id == job_id)).mappings().first()
        return dict(row)

    def heartbeat(self, job_id: str, owner: str) -> str | None:
        """Extend the lease; returns the job's status, or None when this owner no longer holds it."""
        with self.engine.begin() as conn:
            now = db_now(conn)
            result = conn.execute(update(long_jobs)
                                  .where(long_jobs.c.id == job_id, long_jobs.c.lease_owner == owner,
                                         long_jobs.c.status == PROCESSING)
                                  .values(lease_expires=now + self.lease_seconds))
            if result.rowcount == 1:
                return PROCESSING
            status = conn.execute(select(long_jobs.c.status, long_jobs.c.lease_owner)
                                  .where(long_jobs.c.id == job_id)).first()
        if status is None or status.lease_owner != owner:
            return None
        return status.status

    def chunk_started(self, job_id: str, idx: int) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(update(long_job_chunks).where(long_job_chunks.c.job_id == job_id,
                                                       long_job_chunks.c.idx == idx).values(started_at=now))
            conn.execute(update(long_jobs).where(long_jobs.c.id == job_id).values(current_chunk=idx))

    def chunk_done(self, job_id: str, idx: int, audio_file: str, samples: int, synth_ms: int,
                   owner: str) -> tuple[bool, str | None]:
        """Record chunk `idx` as `audio_file` if `owner` still holds the job's lease.

        Returns (recorded, the file it replaces). A runner that lost its lease records nothing (its
        file is its own, under a name of its own, and it removes it); the holder's file wins even
        over an earlier one, whose file is then no longer the chunk's.
        """
        now = time.time()
        with self.engine.begin() as conn:
            # the job row's lock orders this against a claim that moves the lease (SQLite: BEGIN IMMEDIATE)
            holder = conn.execute(select(long_jobs.c.lease_owner, long_jobs.c.status)
                                  .where(long_jobs.c.id == job_id).with_for_update()).first()
            if holder is None or holder.lease_owner != owner or holder.status != PROCESSING:
                return False, None
            previous = conn.execute(select(long_job_chunks.c.audio_file).where(
                long_job_chunks.c.job_id == job_id, long_job_chunks.c.idx == idx)).scalar_one_or_none()
            conn.execute(update(long_job_chunks)
                         .where(long_job_chunks.c.job_id == job_id, long_job_chunks.c.idx == idx)
                         .values(audio_file=audio_file, samples=samples, completed_at=now, synth_ms=synth_ms))
            conn.execute(update(long_jobs).where(long_jobs.c.id == job_id).values(
                completed_chunks=long_jobs.c.completed_chunks + (0 if previous else 1), updated_at=now,
                current_chunk=idx + 1, total_processing_time_ms=long_jobs.c.total_processing_time_ms + synth_ms))
            # the next chunk is already being synthesized (the model worker runs ahead of us)
            conn.execute(update(long_job_chunks).where(long_job_chunks.c.job_id == job_id,
                                                       long_job_chunks.c.idx == idx + 1,
                                                       long_job_chunks.c.started_at.is_(None)).values(started_at=now))
        return True, previous if previous != audio_file else None

    def release(self, job_id: str, owner: str, values: dict[str, Any],
                only_if: tuple[str, ...] = (PROCESSING,)) -> bool:
        """Give the job up (with new `values`, e.g. a status) if this owner still holds it."""
        with self.engine.begin() as conn:
            result = conn.execute(update(long_jobs)
                                  .where(long_jobs.c.id == job_id, long_jobs.c.lease_owner == owner,
                                         long_jobs.c.status.in_(only_if))
                                  .values(lease_owner=None, lease_expires=None, updated_at=time.time(), **values))
        return result.rowcount == 1

    def drop_lease(self, job_id: str, owner: str) -> None:
        """After a pause or cancel took the job from PROCESSING: forget the lease, keep the status."""
        with self.engine.begin() as conn:
            conn.execute(update(long_jobs).where(long_jobs.c.id == job_id, long_jobs.c.lease_owner == owner)
                         .values(lease_owner=None, lease_expires=None))

    # -- retention --------------------------------------------------------------------------------
    def expired(self, older_than: float) -> list[str]:
        with reading(self.engine) as conn:
            rows = conn.execute(select(long_jobs.c.id).where(
                long_jobs.c.status.in_(FINISHED), long_jobs.c.updated_at < older_than)).all()
        return [row.id for row in rows]


def paused_values() -> dict[str, Any]:
    return {"status": PAUSED, "processing_paused_at": time.time()}
