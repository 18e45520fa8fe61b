"""The job store interface the dispatcher, the API and the UI depend on; data types included.

Implementations: ``steadyframe.jobs.sqlite.SqliteJobStore``. Every method is safe to call
from several threads of the server process; only the server process touches the store.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass
class JobError:
    kind: str
    message: str
    advice: str
    error_id: str
    stage: str | None = None
    traceback: str | None = None  # kept for the log and the store; never sent to users
    memory_profile: dict[str, Any] | None = None  # the worker's per-stage peaks (worker.profile), when it reported one


@dataclass
class JobProgress:
    stage: str | None = None
    step: int = 0
    total: int = 0

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


@dataclass
class JobRecord:
    id: str
    status: JobStatus
    spec: dict[str, Any]
    attempt: int = 0
    progress: JobProgress = field(default_factory=JobProgress)
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: dict[str, Any] | None = None  # JobResult.to_dict()
    error: JobError | None = None
    idempotency_key: str | None = None
    cancel_requested: bool = False
    worker_id: str | None = None
    waiting_for: str | None = None  # queued, held back until this catalog model's pull finishes
    # The resources estimated at submit (estimate.JobEstimate.to_dict()): kept, not recomputed on
    # each read, so the view shows the figures the job was accepted on and a poll stays cheap.
    estimate: dict[str, Any] | None = None


class JobStore(ABC):
    @abstractmethod
    def submit(
        self,
        spec: dict[str, Any],
        *,
        idempotency_key: str | None = None,
        client: str | None = None,
        waiting_for: str | None = None,
        estimate: dict[str, Any] | None = None,
    ) -> tuple[JobRecord, bool]:
        """Queue a job; with a known ``idempotency_key`` return that job instead. -> (job, created).
        ``client`` (a token hash or an address) is kept for per-client quotas; ``waiting_for`` (a
        catalog model name) holds it back from workers until ``release_waiting``; ``estimate`` is
        kept with the job as it is."""

    @abstractmethod
    def get(self, job_id: str) -> JobRecord | None: ...

    def find_by_idempotency_key(self, key: str) -> JobRecord | None:
        """The job submitted with ``key``, or None. This default scans recent jobs; a store with an
        index on the key should override it."""
        return next((r for r in self.list(limit=100_000) if r.idempotency_key == key), None)

    @abstractmethod
    def list(self, *, status: JobStatus | None = None, limit: int = 50) -> list[JobRecord]:
        """Newest first."""

    @abstractmethod
    def count(self, status: JobStatus, *, client: str | None = None) -> int:
        """Jobs in ``status``, of one ``client`` when given."""

    @abstractmethod
    def position(self, job_id: str) -> int | None:
        """0-based place among queued jobs (0 = next to run); None when not queued."""

    @abstractmethod
    def request_cancel(self, job_id: str) -> JobRecord | None:
        """Queued: cancelled at once. Running: flag set, the dispatcher stops it. Terminal: unchanged."""

    @abstractmethod
    def has_claimable(self) -> bool:
        """Whether ``claim_next`` would find a job now (queued and waiting for nothing, e.g. no download)."""

    @abstractmethod
    def claim_next(self, worker_id: str) -> JobRecord | None:
        """Atomically move the oldest queued job that waits for nothing to running for ``worker_id``."""

    @abstractmethod
    def update_progress(self, job_id: str, stage: str, step: int, total: int) -> None: ...

    @abstractmethod
    def finish_succeeded(self, job_id: str, result: dict[str, Any]) -> None: ...

    @abstractmethod
    def finish_failed(self, job_id: str, error: JobError) -> None: ...

    @abstractmethod
    def finish_cancelled(self, job_id: str) -> None: ...

    @abstractmethod
    def requeue_or_fail(self, job_id: str, error: JobError, *, max_attempts: int) -> JobStatus:
        """A run was interrupted (worker or server death): queued with attempt + 1, or failed past the limit."""

    @abstractmethod
    def return_to_queue(self, job_id: str) -> JobStatus:
        """A clean server stop interrupted the run: queued again, attempt unchanged (not the job's fault).
        A job whose cancel was requested is cancelled instead. -> the job's status afterwards."""

    @abstractmethod
    def terminal_jobs_oldest_first(self, *, finished_before: float | None = None) -> list[JobRecord]:
        """Finished jobs in finishing order, optionally only those finished before a time (retention)."""

    @abstractmethod
    def delete(self, job_ids: list[str]) -> int:
        """Remove terminal jobs; queued or running ones are never deleted. -> rows removed."""

    @abstractmethod
    def waiting_models(self) -> dict[str, list[str]]:
        """Catalog model name -> ids of the queued jobs waiting for its download, oldest first."""

    @abstractmethod
    def release_waiting(self, model: str) -> list[str]:
        """The model is here: its waiting jobs become ordinary queued jobs. -> their ids."""

    @abstractmethod
    def fail_waiting(self, model: str, error: JobError) -> list[str]:
        """The model's pull failed: its waiting jobs fail with ``error``. -> their ids."""

    @abstractmethod
    def recover_running(self, *, max_attempts: int) -> list[str]:
        """On start: requeue (or fail as worker_lost) every job left running. -> their ids."""

    # --- memory levels learned from earlier jobs ---------------------------------------------

    @abstractmethod
    def learned_level(self, key: str) -> int | None:
        """The memory level that last worked for jobs of this shape (``memory_shape_key``), or None."""

    @abstractmethod
    def learn_level(self, key: str, level: int) -> None:
        """Remember that ``level`` worked for jobs of this shape (0 forgets: no saving was needed)."""


def memory_shape_key(spec: dict[str, Any], device: str) -> str:
    """What decides how much memory a job needs: model, device, mode, resolution, frames, factors."""
    fields = ("model", "mode", "width", "height", "num_frames", "upscale", "interpolate")
    return "|".join([device, *(str(spec.get(name)) for name in fields)])
