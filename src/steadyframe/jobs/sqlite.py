"""SQLite implementation of the job store: WAL mode, one connection guarded by a lock.

The server process is the only one that touches the database; every method may be called
from any of its threads. Spec, result and error are stored as JSON text.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from steadyframe.errors import ErrorKind
from steadyframe.jobs.base import JobError, JobProgress, JobRecord, JobStatus, JobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    stage TEXT,
    step INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    result TEXT,
    error TEXT,
    idempotency_key TEXT UNIQUE,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker_id TEXT,
    client TEXT,
    waiting_for TEXT,
    estimate TEXT
);
CREATE INDEX IF NOT EXISTS jobs_status_seq ON jobs (status, seq);
CREATE TABLE IF NOT EXISTS learned_levels (
    shape TEXT PRIMARY KEY,
    level INTEGER NOT NULL,
    learned_at REAL NOT NULL
);
"""

_COLUMNS = (
    "id, status, spec, attempt, stage, step, total, created_at, started_at, finished_at, "
    "result, error, idempotency_key, cancel_requested, worker_id, waiting_for, estimate"
)

_TERMINAL = tuple(s.value for s in JobStatus if s.terminal)
_WAITING = "SELECT id FROM jobs WHERE status = ? AND waiting_for = ? ORDER BY seq"
# The next job a worker may take: queued and not waiting for its model's download.
_READY = "SELECT id FROM jobs WHERE status = ? AND waiting_for IS NULL ORDER BY seq LIMIT 1"


def new_job_id() -> str:
    """A short random job id (12 hex characters): unguessable enough for URLs, easy to read."""
    return uuid.uuid4().hex[:12]


def _row_to_record(row: sqlite3.Row) -> JobRecord:
    error = json.loads(row["error"]) if row["error"] else None
    return JobRecord(
        id=row["id"],
        status=JobStatus(row["status"]),
        spec=json.loads(row["spec"]),
        attempt=row["attempt"],
        progress=JobProgress(stage=row["stage"], step=row["step"], total=row["total"]),
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        result=json.loads(row["result"]) if row["result"] else None,
        error=JobError(**error) if error else None,
        idempotency_key=row["idempotency_key"],
        cancel_requested=bool(row["cancel_requested"]),
        worker_id=row["worker_id"],
        waiting_for=row["waiting_for"],
        estimate=json.loads(row["estimate"]) if row["estimate"] else None,
    )


class SqliteJobStore(JobStore):
    """The job table in one SQLite file (WAL, so readers never block the dispatcher's writes)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One shared connection + a lock: simple, and SQLite serialises writers anyway.
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30.0)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.executescript(_SCHEMA)
            columns = {row["name"] for row in self._conn.execute("PRAGMA table_info(jobs)")}
            if "client" not in columns:  # a table from before per-client quotas
                self._conn.execute("ALTER TABLE jobs ADD COLUMN client TEXT")
            if "waiting_for" not in columns:  # a table from before model pulls
                self._conn.execute("ALTER TABLE jobs ADD COLUMN waiting_for TEXT")
            if "estimate" not in columns:  # a table from before submit-time estimates
                self._conn.execute("ALTER TABLE jobs ADD COLUMN estimate TEXT")

    # --- plumbing -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """An IMMEDIATE transaction under the lock: read-modify-write steps are atomic."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _fetch(self, conn: sqlite3.Connection, job_id: str) -> JobRecord | None:
        row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _row_to_record(row) if row else None

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- JobStore -------------------------------------------------------------------------

    def submit(
        self,
        spec: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        client: str | None = None,
        waiting_for: str | None = None,
        estimate: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        with self._transaction() as conn:
            if idempotency_key is not None:
                row = conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
                ).fetchone()
                if row:
                    return _row_to_record(row), False
            job_id = new_job_id()
            conn.execute(
                "INSERT INTO jobs (id, status, spec, created_at, idempotency_key, client, waiting_for, estimate) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job_id, JobStatus.QUEUED.value, json.dumps(spec), time.time(), idempotency_key, client,
                    waiting_for, json.dumps(estimate) if estimate is not None else None,
                ),  # fmt: skip
            )
            record = self._fetch(conn, job_id)
        assert record is not None
        return record, True

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._fetch(self._conn, job_id)

    def find_by_idempotency_key(self, key: str) -> JobRecord | None:
        with self._lock:  # the key column is UNIQUE, so indexed
            row = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE idempotency_key = ?", (key,)).fetchone()
            return _row_to_record(row) if row else None

    def list(self, *, status: JobStatus | None = None, limit: int = 50) -> list[JobRecord]:
        with self._lock:
            if status is None:
                rows = self._conn.execute(f"SELECT {_COLUMNS} FROM jobs ORDER BY seq DESC LIMIT ?", (limit,))
            else:
                rows = self._conn.execute(
                    f"SELECT {_COLUMNS} FROM jobs WHERE status = ? ORDER BY seq DESC LIMIT ?",
                    (JobStatus(status).value, limit),
                )
            return [_row_to_record(r) for r in rows.fetchall()]

    def count(self, status: JobStatus, *, client: str | None = None) -> int:
        with self._lock:
            if client is None:
                row = self._conn.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus(status).value,))
            else:
                row = self._conn.execute(
                    "SELECT COUNT(*) FROM jobs WHERE status = ? AND client = ?", (JobStatus(status).value, client)
                )
            return int(row.fetchone()[0])

    def position(self, job_id: str) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT seq, status FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or row["status"] != JobStatus.QUEUED.value:
                return None
            ahead = self._conn.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = ? AND seq < ?", (JobStatus.QUEUED.value, row["seq"])
            ).fetchone()
            return int(ahead[0])

    def request_cancel(self, job_id: str) -> JobRecord | None:
        with self._transaction() as conn:
            record = self._fetch(conn, job_id)
            if record is None:
                return None
            if record.status == JobStatus.QUEUED:
                conn.execute(
                    "UPDATE jobs SET status = ?, cancel_requested = 1, finished_at = ? WHERE id = ?",
                    (JobStatus.CANCELLED.value, time.time(), job_id),
                )
            elif record.status == JobStatus.RUNNING:
                conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return self._fetch(conn, job_id)

    def has_claimable(self) -> bool:
        with self._lock:
            return self._conn.execute(_READY, (JobStatus.QUEUED.value,)).fetchone() is not None

    def claim_next(self, worker_id: str) -> JobRecord | None:
        if not self.has_claimable():  # cheap look first: the dispatcher asks often, and mostly nothing waits
            return None
        with self._transaction() as conn:
            row = conn.execute(_READY, (JobStatus.QUEUED.value,)).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET status = ?, worker_id = ?, started_at = ?, stage = NULL, step = 0, total = 0 "
                "WHERE id = ?",
                (JobStatus.RUNNING.value, worker_id, time.time(), row["id"]),
            )
            return self._fetch(conn, row["id"])

    def update_progress(self, job_id: str, stage: str, step: int, total: int) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET stage = ?, step = ?, total = ? WHERE id = ? AND status = ?",
                (stage, step, total, job_id, JobStatus.RUNNING.value),
            )

    def finish_succeeded(self, job_id: str, result: dict[str, Any]) -> None:
        self._finish(job_id, JobStatus.SUCCEEDED, result=json.dumps(result))

    def finish_failed(self, job_id: str, error: JobError) -> None:
        self._finish(job_id, JobStatus.FAILED, error=json.dumps(asdict(error)))

    def finish_cancelled(self, job_id: str) -> None:
        self._finish(job_id, JobStatus.CANCELLED)

    def _finish(self, job_id: str, status: JobStatus, *, result: str | None = None, error: str | None = None) -> None:
        """End a running job; a job already terminal (e.g. cancelled while queued) is left as it is."""
        with self._lock:
            self._conn.execute(
                "UPDATE jobs SET status = ?, result = ?, error = ?, finished_at = ? WHERE id = ? AND status = ?",
                (status.value, result, error, time.time(), job_id, JobStatus.RUNNING.value),
            )

    def requeue_or_fail(self, job_id: str, error: JobError, *, max_attempts: int) -> JobStatus:
        with self._transaction() as conn:
            return self._requeue_or_fail(conn, job_id, error, max_attempts)

    def _requeue_or_fail(self, conn: sqlite3.Connection, job_id: str, error: JobError, max_attempts: int) -> JobStatus:
        record = self._fetch(conn, job_id)
        if record is None:
            raise KeyError(job_id)
        if record.status != JobStatus.RUNNING:
            return record.status
        now = time.time()
        if record.cancel_requested:
            # The user asked to stop it; running it again would go against that.
            conn.execute(
                "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?", (JobStatus.CANCELLED.value, now, job_id)
            )
            return JobStatus.CANCELLED
        attempt = record.attempt + 1
        if attempt >= max_attempts:
            conn.execute(
                "UPDATE jobs SET status = ?, attempt = ?, error = ?, finished_at = ? WHERE id = ?",
                (JobStatus.FAILED.value, attempt, json.dumps(asdict(error)), now, job_id),
            )
            return JobStatus.FAILED
        conn.execute(
            "UPDATE jobs SET status = ?, attempt = ?, worker_id = NULL, started_at = NULL, "
            "stage = NULL, step = 0, total = 0 WHERE id = ?",
            (JobStatus.QUEUED.value, attempt, job_id),
        )
        return JobStatus.QUEUED

    def return_to_queue(self, job_id: str) -> JobStatus:
        with self._transaction() as conn:
            record = self._fetch(conn, job_id)
            if record is None:
                raise KeyError(job_id)
            if record.status != JobStatus.RUNNING:
                return record.status
            if record.cancel_requested:
                conn.execute(
                    "UPDATE jobs SET status = ?, finished_at = ? WHERE id = ?",
                    (JobStatus.CANCELLED.value, time.time(), job_id),
                )
                return JobStatus.CANCELLED
            conn.execute(
                "UPDATE jobs SET status = ?, worker_id = NULL, started_at = NULL, stage = NULL, step = 0, total = 0 "
                "WHERE id = ?",
                (JobStatus.QUEUED.value, job_id),
            )
            return JobStatus.QUEUED

    def recover_running(self, *, max_attempts: int) -> list[str]:
        from steadyframe.taxonomy import describe, new_error_id  # lazy: taxonomy is heavier than the store

        with self._transaction() as conn:
            ids = [r["id"] for r in conn.execute("SELECT id FROM jobs WHERE status = ?", (JobStatus.RUNNING.value,))]
            for job_id in ids:
                described = describe(ErrorKind.WORKER_LOST)
                error = JobError(
                    kind=described.kind.value,
                    message=described.message,
                    advice=described.advice,
                    error_id=new_error_id(),
                    traceback="the server stopped while this job was running",
                )
                self._requeue_or_fail(conn, job_id, error, max_attempts)
            return ids

    # --- jobs waiting for a model download (used by steadyframe.server.pulls) ----------------

    def waiting_models(self) -> dict[str, list[str]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT id, waiting_for FROM jobs WHERE status = ? AND waiting_for IS NOT NULL ORDER BY seq",
                (JobStatus.QUEUED.value,),
            ).fetchall()
        waiting: dict[str, list[str]] = {}
        for row in rows:
            waiting.setdefault(row["waiting_for"], []).append(row["id"])
        return waiting

    def release_waiting(self, model: str) -> list[str]:
        with self._transaction() as conn:
            ids = [r["id"] for r in conn.execute(_WAITING, (JobStatus.QUEUED.value, model))]
            conn.execute(
                "UPDATE jobs SET waiting_for = NULL WHERE status = ? AND waiting_for = ?", (JobStatus.QUEUED.value, model)
            )
            return ids

    def fail_waiting(self, model: str, error: JobError) -> list[str]:
        with self._transaction() as conn:
            ids = [r["id"] for r in conn.execute(_WAITING, (JobStatus.QUEUED.value, model))]
            conn.execute(
                "UPDATE jobs SET status = ?, error = ?, finished_at = ?, waiting_for = NULL "
                "WHERE status = ? AND waiting_for = ?",
                (JobStatus.FAILED.value, json.dumps(asdict(error)), time.time(), JobStatus.QUEUED.value, model),
            )
            return ids

    # --- retention (used by steadyframe.supervisor.retention) ------------------------------

    def terminal_jobs_oldest_first(self, *, finished_before: float | None = None) -> list[JobRecord]:
        """Terminal jobs in finishing order, optionally only those finished before a time."""
        placeholders = ", ".join("?" for _ in _TERMINAL)
        query = f"SELECT {_COLUMNS} FROM jobs WHERE status IN ({placeholders})"
        params: list[Any] = list(_TERMINAL)
        if finished_before is not None:
            query += " AND finished_at < ?"
            params.append(finished_before)
        query += " ORDER BY finished_at, seq"
        with self._lock:
            return [_row_to_record(r) for r in self._conn.execute(query, params).fetchall()]

    def delete(self, job_ids: list[str]) -> int:
        """Remove terminal jobs from the table; running or queued ones are never deleted. -> rows gone."""
        if not job_ids:
            return 0
        placeholders = ", ".join("?" for _ in _TERMINAL)
        with self._transaction() as conn:
            gone = 0
            for job_id in job_ids:
                cur = conn.execute(f"DELETE FROM jobs WHERE id = ? AND status IN ({placeholders})", (job_id, *_TERMINAL))
                gone += cur.rowcount
            return gone

    # --- learned memory levels -------------------------------------------------------------

    def learned_level(self, key: str) -> int | None:
        with self._lock:
            row = self._conn.execute("SELECT level FROM learned_levels WHERE shape = ?", (key,)).fetchone()
        return int(row[0]) if row else None

    def learn_level(self, key: str, level: int) -> None:
        with self._transaction() as conn:
            if level <= 0:
                conn.execute("DELETE FROM learned_levels WHERE shape = ?", (key,))
            else:
                conn.execute(
                    "INSERT INTO learned_levels (shape, level, learned_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(shape) DO UPDATE SET level = excluded.level, learned_at = excluded.learned_at",
                    (key, level, time.time()),
                )

# --- opening the table at server start ----------------------------------------------------------


class CorruptJobTable(Exception):
    """The jobs database cannot be read as SQLite or fails its integrity check."""


def check_integrity(path: Path) -> None:
    """Raise ``CorruptJobTable`` unless ``path`` (if it exists) opens and passes ``PRAGMA quick_check``."""
    if not path.exists():
        return
    try:
        conn = sqlite3.connect(path, timeout=30.0)
        try:
            verdict = conn.execute("PRAGMA quick_check").fetchone()
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise CorruptJobTable(str(exc)) from exc
    if not verdict or verdict[0] != "ok":
        raise CorruptJobTable(str(verdict[0] if verdict else "no answer to quick_check"))


def open_job_store(path: Path) -> tuple[SqliteJobStore, str | None]:
    """The job table at ``path``; a damaged one is moved aside (kept for inspection) and a new one started.

    -> (store, warning): the warning names the file it was moved to, or is None when all was well.
    Starting beats refusing: the table holds the queue and the history, while outputs stay on disk,
    so a fresh table loses no video, and refusing would leave the operator to do this same move by hand.
    """
    path = Path(path)
    try:
        check_integrity(path)
        return SqliteJobStore(path), None
    except (CorruptJobTable, sqlite3.DatabaseError) as exc:
        reason = str(exc) or type(exc).__name__
    kept = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%d-%H%M%S')}")
    path.replace(kept)
    for suffix in ("-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(kept.with_name(kept.name + suffix))
    warning = (
        f"the jobs database was damaged ({reason}); it was moved to {kept.name} in the data folder and a new, "
        "empty job table was started (outputs on disk are untouched)"
    )
    return SqliteJobStore(path), warning
