"""Retention: old finished jobs and their files go; the disk cap removes the oldest first."""

from __future__ import annotations

import os
import time
from pathlib import Path

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings
from steadyframe.supervisor.retention import apply_retention


def _finished_job(store: SqliteJobStore, settings: Settings, size: int) -> str:
    job = store.submit({"prompt": "x"})[0]
    store.claim_next("w0")
    folder = settings.outputs_dir / job.id
    folder.mkdir(parents=True)
    (folder / "video.mp4").write_bytes(b"\0" * size)
    store.finish_succeeded(job.id, {"video_path": str(folder / "video.mp4")})
    return job.id


def test_jobs_past_the_age_limit_are_removed_with_their_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention_days=1)
    settings.ensure_dirs()
    store = SqliteJobStore(settings.jobs_db)
    old = _finished_job(store, settings, 1000)
    queued = store.submit({"prompt": "waiting"})[0].id
    report = apply_retention(store, settings, now=time.time() + 2 * 86400)
    assert report.jobs_removed == 1 and report.bytes_freed == 1000
    assert store.get(old) is None and not (settings.outputs_dir / old).exists()
    assert store.get(queued) is not None  # queued work is never touched


def test_the_disk_cap_removes_the_oldest_finished_jobs_first(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention_max_gb=2500 / 1024**3)  # a 2500-byte cap
    settings.ensure_dirs()
    store = SqliteJobStore(settings.jobs_db)
    ids = [_finished_job(store, settings, 1000) for _ in range(4)]
    report = apply_retention(store, settings)
    assert report.jobs_removed == 2
    assert [store.get(i) is None for i in ids] == [True, True, False, False]
    assert all((settings.outputs_dir / i).exists() for i in ids[2:])


def test_old_uploads_go_unless_a_waiting_job_still_needs_them(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, retention_days=1)
    settings.ensure_dirs()
    store = SqliteJobStore(settings.jobs_db)
    uploads = {}
    for name in ("old", "needed", "fresh"):
        folder = settings.uploads_dir / name
        folder.mkdir()
        (folder / "input.png").write_bytes(b"\0" * 100)
        uploads[name] = folder
    later = time.time() + 2 * 86400
    store.submit({"prompt": "x", "mode": "i2v", "image_path": str(uploads["needed"] / "input.png")})
    os.utime(uploads["fresh"], (later, later))  # uploaded "just now" from the point of view of ``later``
    report = apply_retention(store, settings, now=later)
    assert not uploads["old"].exists() and uploads["needed"].exists() and uploads["fresh"].exists()
    assert report.bytes_freed == 100
