"""The SQLite job store: lifecycle, ordering, idempotency, cancel, recovery, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from steadyframe.jobs.base import JobError, JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore


def _error(kind: str = "internal") -> JobError:
    return JobError(kind=kind, message="it broke.", advice="try again.", error_id="err-0000000001", stage="denoise")


@pytest.fixture
def store(tmp_path: Path) -> SqliteJobStore:
    return SqliteJobStore(tmp_path / "jobs.sqlite3")


def test_database_uses_wal_mode(store: SqliteJobStore) -> None:
    mode = store._conn.execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_jobs_are_claimed_oldest_first_and_positions_follow(store: SqliteJobStore) -> None:
    ids = [store.submit({"prompt": f"p{i}"})[0].id for i in range(3)]
    assert [store.position(i) for i in ids] == [0, 1, 2]
    claimed = store.claim_next("w0")
    assert claimed is not None and claimed.id == ids[0]
    assert claimed.status == JobStatus.RUNNING and claimed.worker_id == "w0" and claimed.started_at
    assert store.position(ids[0]) is None
    assert [store.position(i) for i in ids[1:]] == [0, 1]
    assert store.count(JobStatus.QUEUED) == 2 and store.count(JobStatus.RUNNING) == 1
    assert [r.id for r in store.list()] == ids[::-1]
    assert [r.id for r in store.list(status=JobStatus.QUEUED)] == ids[:0:-1]


def test_idempotency_key_returns_the_existing_job(store: SqliteJobStore) -> None:
    first, created = store.submit({"prompt": "a"}, idempotency_key="k1")
    again, created_again = store.submit({"prompt": "other"}, idempotency_key="k1")
    assert created and not created_again
    assert again.id == first.id and again.spec == {"prompt": "a"}
    found = store.find_by_idempotency_key("k1")
    assert found is not None and found.id == first.id
    assert store.find_by_idempotency_key("unknown") is None


def test_progress_result_and_error_round_trip(store: SqliteJobStore) -> None:
    a = store.submit({"prompt": "a"})[0]
    b = store.submit({"prompt": "b"})[0]
    store.claim_next("w0")
    store.update_progress(a.id, "denoise", 3, 10)
    got = store.get(a.id)
    assert got is not None and (got.progress.stage, got.progress.step, got.progress.total) == ("denoise", 3, 10)
    assert got.progress.fraction == pytest.approx(0.3)
    store.finish_succeeded(a.id, {"video_path": "x.mp4", "seed": 1})
    done = store.get(a.id)
    assert done is not None and done.status == JobStatus.SUCCEEDED and done.result == {"video_path": "x.mp4", "seed": 1}
    assert done.finished_at is not None
    store.claim_next("w0")
    store.finish_failed(b.id, _error("out_of_memory"))
    failed = store.get(b.id)
    assert failed is not None and failed.status == JobStatus.FAILED
    assert failed.error == _error("out_of_memory")


def test_cancel_queued_is_immediate_and_running_sets_a_flag(store: SqliteJobStore) -> None:
    running = store.submit({"prompt": "a"})[0]
    queued = store.submit({"prompt": "b"})[0]
    store.claim_next("w0")
    after = store.request_cancel(queued.id)
    assert after is not None and after.status == JobStatus.CANCELLED
    flagged = store.request_cancel(running.id)
    assert flagged is not None and flagged.status == JobStatus.RUNNING and flagged.cancel_requested
    store.finish_cancelled(running.id)
    final = store.get(running.id)
    assert final is not None and final.status == JobStatus.CANCELLED
    assert store.request_cancel("nope") is None
    # a terminal job stays as it is
    assert store.request_cancel(running.id).status == JobStatus.CANCELLED  # type: ignore[union-attr]


def test_finishing_a_job_that_is_no_longer_running_changes_nothing(store: SqliteJobStore) -> None:
    job = store.submit({"prompt": "a"})[0]
    store.request_cancel(job.id)
    store.finish_succeeded(job.id, {"video_path": "late.mp4"})
    got = store.get(job.id)
    assert got is not None and got.status == JobStatus.CANCELLED and got.result is None


def test_interrupted_job_is_requeued_then_failed_past_the_limit(store: SqliteJobStore) -> None:
    job = store.submit({"prompt": "a"})[0]
    store.claim_next("w0")
    assert store.requeue_or_fail(job.id, _error("worker_lost"), max_attempts=2) == JobStatus.QUEUED
    again = store.get(job.id)
    assert again is not None and again.attempt == 1 and again.worker_id is None and again.status == JobStatus.QUEUED
    store.claim_next("w1")
    assert store.requeue_or_fail(job.id, _error("worker_lost"), max_attempts=2) == JobStatus.FAILED
    final = store.get(job.id)
    assert final is not None and final.status == JobStatus.FAILED and final.error is not None
    assert final.error.kind == "worker_lost"


def test_interrupted_job_with_a_cancel_request_ends_cancelled(store: SqliteJobStore) -> None:
    job = store.submit({"prompt": "a"})[0]
    store.claim_next("w0")
    store.request_cancel(job.id)
    assert store.requeue_or_fail(job.id, _error(), max_attempts=5) == JobStatus.CANCELLED


def test_a_clean_stop_puts_a_running_job_back_without_spending_an_attempt(store: SqliteJobStore) -> None:
    job = store.submit({"prompt": "a"})[0]
    store.claim_next("w0")
    store.update_progress(job.id, "denoise", 3, 10)
    for _ in range(3):  # however often the server is restarted cleanly, the job is never failed for it
        assert store.return_to_queue(job.id) == JobStatus.QUEUED
        again = store.get(job.id)
        assert again is not None and again.attempt == 0 and again.worker_id is None and again.progress.step == 0
        store.claim_next("w0")
    store.request_cancel(job.id)
    assert store.return_to_queue(job.id) == JobStatus.CANCELLED
    assert store.return_to_queue(job.id) == JobStatus.CANCELLED


def test_jobs_survive_reopening_and_running_ones_are_recovered(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    first = SqliteJobStore(path)
    running = first.submit({"prompt": "a"})[0]
    queued = first.submit({"prompt": "b"})[0]
    first.claim_next("w0")
    first.close()  # the server "dies" here
    second = SqliteJobStore(path)
    assert second.recover_running(max_attempts=2) == [running.id]
    recovered = second.get(running.id)
    assert recovered is not None and recovered.status == JobStatus.QUEUED and recovered.attempt == 1
    assert second.position(running.id) == 0 and second.position(queued.id) == 1
    second.claim_next("w0")
    assert second.recover_running(max_attempts=2) == [running.id]
    lost = second.get(running.id)
    assert lost is not None and lost.status == JobStatus.FAILED and lost.error is not None
    assert lost.error.kind == "worker_lost" and lost.error.error_id.startswith("err-")


def test_concurrent_claims_never_hand_one_job_to_two_workers(store: SqliteJobStore) -> None:
    ids = {store.submit({"prompt": str(i)})[0].id for i in range(40)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claim_all(worker: str) -> None:
        while (job := store.claim_next(worker)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_delete_only_removes_terminal_jobs(store: SqliteJobStore) -> None:
    done = store.submit({"prompt": "a"})[0]
    queued = store.submit({"prompt": "b"})[0]
    store.request_cancel(done.id)
    assert [r.id for r in store.terminal_jobs_oldest_first()] == [done.id]
    assert store.delete([done.id, queued.id]) == 1
    assert store.get(done.id) is None and store.get(queued.id) is not None
