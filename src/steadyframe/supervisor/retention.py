"""Retention: forget finished jobs older than the configured age, and keep outputs under a disk cap."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from steadyframe.disk_usage import bytes_under
from steadyframe.jobs.base import JobStatus, JobStore
from steadyframe.logs import get_logger
from steadyframe.settings import Settings

log = get_logger("supervisor.retention")


@dataclass
class RetentionReport:
    jobs_removed: int
    bytes_freed: int


def apply_retention(store: JobStore, settings: Settings, *, now: float | None = None) -> RetentionReport:
    """Delete finished jobs (rows and their output folders) past ``retention_days``, then the
    oldest finished ones until the outputs folder is under ``retention_max_gb``; and uploads older
    than ``retention_days`` that no queued or running job still needs.

    Queued and running jobs are never touched.
    """
    oldest_first = store.terminal_jobs_oldest_first
    delete = store.delete
    now = time.time() if now is None else now
    freed_uploads = _expire_uploads(store, settings, now)
    outputs = settings.outputs_dir
    removed: list[str] = []
    freed = 0

    def _drop(job_id: str) -> None:
        nonlocal freed
        folder = outputs / job_id
        freed += bytes_under(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(job_id)

    for record in oldest_first(finished_before=now - settings.retention_days * 86400):
        _drop(record.id)
    cap = settings.retention_max_gb * 1024**3
    total = bytes_under(outputs)
    if total - freed > cap:
        total -= freed
        for record in oldest_first():
            if total <= cap:
                break
            if record.id in removed:
                continue
            size = bytes_under(outputs / record.id)
            _drop(record.id)
            total -= size
    delete(removed)
    if removed:
        log.info("retention removed %d job(s), freed %.1f MB", len(removed), freed / 2**20)
    return RetentionReport(len(removed), freed + freed_uploads)


def _expire_uploads(store: JobStore, settings: Settings, now: float) -> int:
    """Delete upload folders older than ``retention_days`` unless a queued/running job uses them. -> bytes."""
    root = settings.uploads_dir
    if not root.is_dir():
        return 0
    in_use = {
        Path(path).resolve().parent
        for status in (JobStatus.QUEUED, JobStatus.RUNNING)
        for record in store.list(status=status, limit=1_000_000)
        for path in (record.spec.get("image_path"), record.spec.get("video_path"))
        if path
    }
    cutoff = now - settings.retention_days * 86400
    freed = 0
    for folder in root.iterdir():
        if folder.stat().st_mtime < cutoff and folder.resolve() not in in_use:
            freed += bytes_under(folder) if folder.is_dir() else folder.stat().st_size
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
            else:
                folder.unlink(missing_ok=True)
    return freed
