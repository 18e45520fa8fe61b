"""Retention: forget finished jobs older than the configured age, and keep outputs under a disk cap."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from steadyframe.jobs.base import JobStore
from steadyframe.logs import get_logger
from steadyframe.settings import Settings

log = get_logger("supervisor.retention")


@dataclass
class RetentionReport:
    jobs_removed: int
    bytes_freed: int


def _dir_bytes(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def apply_retention(store: JobStore, settings: Settings, *, now: float | None = None) -> RetentionReport:
    """Delete finished jobs (rows and their output folders) past ``retention_days``, then the
    oldest finished ones until the outputs folder is under ``retention_max_gb``.

    Queued and running jobs are never touched. Needs a store with ``terminal_jobs_oldest_first``
    and ``delete`` (the SQLite store has both); other stores are left alone.
    """
    oldest_first = getattr(store, "terminal_jobs_oldest_first", None)
    delete = getattr(store, "delete", None)
    if oldest_first is None or delete is None:
        return RetentionReport(0, 0)
    now = time.time() if now is None else now
    outputs = settings.outputs_dir
    removed: list[str] = []
    freed = 0

    def _drop(job_id: str) -> None:
        nonlocal freed
        folder = outputs / job_id
        freed += _dir_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(job_id)

    for record in oldest_first(finished_before=now - settings.retention_days * 86400):
        _drop(record.id)
    cap = settings.retention_max_gb * 1024**3
    total = _dir_bytes(outputs)
    if total - freed > cap:
        total -= freed
        for record in oldest_first():
            if total <= cap:
                break
            if record.id in removed:
                continue
            size = _dir_bytes(outputs / record.id)
            _drop(record.id)
            total -= size
    delete(removed)
    if removed:
        log.info("retention removed %d job(s), freed %.1f MB", len(removed), freed / 2**20)
    return RetentionReport(len(removed), freed)
