"""The job store's hold for jobs waiting on a model download: skipped by workers, released, failed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from steadyframe.jobs.base import JobError, JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore


def test_a_waiting_job_is_never_claimed_until_its_model_is_released(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    waiting, _ = store.submit({"prompt": "first"}, waiting_for="hub-tiny")
    ready, _ = store.submit({"prompt": "second"})
    assert store.claim_next("w0").id == ready.id  # the later job runs; the waiting one is held back
    assert store.claim_next("w0") is None and not store.has_claimable()  # nothing wakes a parked worker
    assert store.waiting_models() == {"hub-tiny": [waiting.id]}
    assert store.get(waiting.id).waiting_for == "hub-tiny" and store.position(waiting.id) == 0
    assert store.release_waiting("hub-tiny") == [waiting.id]
    assert store.has_claimable()
    assert store.claim_next("w0").id == waiting.id
    store.close()


def test_a_failed_pull_fails_exactly_its_waiting_jobs(tmp_path: Path) -> None:
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    a, _ = store.submit({"prompt": "a"}, waiting_for="m1")
    b, _ = store.submit({"prompt": "b"}, waiting_for="m2")
    error = JobError(kind="model_unavailable", message="The download stopped.", advice="Run `steadyframe pull m1`.", error_id="e1")
    assert store.fail_waiting("m1", error) == [a.id]
    failed = store.get(a.id)
    assert failed.status == JobStatus.FAILED and failed.error.advice == "Run `steadyframe pull m1`." and failed.finished_at
    assert store.get(b.id).status == JobStatus.QUEUED
    store.request_cancel(b.id)  # a waiting job can be cancelled like any queued one
    assert store.get(b.id).status == JobStatus.CANCELLED and store.waiting_models() == {}
    store.close()


def test_a_table_from_before_pulls_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, status TEXT NOT NULL, "
        "spec TEXT NOT NULL, attempt INTEGER NOT NULL DEFAULT 0, stage TEXT, step INTEGER NOT NULL DEFAULT 0, "
        "total INTEGER NOT NULL DEFAULT 0, created_at REAL NOT NULL, started_at REAL, finished_at REAL, result TEXT, "
        "error TEXT, idempotency_key TEXT UNIQUE, cancel_requested INTEGER NOT NULL DEFAULT 0, worker_id TEXT)"
    )
    old.execute("INSERT INTO jobs (id, status, spec, created_at) VALUES ('old1', 'queued', '{}', 1.0)")
    old.commit()
    old.close()
    store = SqliteJobStore(path)
    assert store.get("old1").waiting_for is None
    assert store.claim_next("w0").id == "old1"
    store.close()
