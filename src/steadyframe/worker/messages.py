"""Every message that crosses the supervisor <-> worker boundary, as small picklable dataclasses.

Grouped by direction. No torch here: the supervisor imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MemoryFigures:
    """A worker's memory as it reports it (MB). ``baseline_rss_mb`` is its RSS when empty."""

    rss_mb: float
    baseline_rss_mb: float
    models_mb: float = 0.0
    vram_allocated_mb: float = 0.0
    vram_reserved_mb: float = 0.0
    loaded_models: tuple[str, ...] = ()

    @property
    def excess_mb(self) -> float:
        """RSS above the empty baseline that loaded models do not explain."""
        return self.rss_mb - self.baseline_rss_mb - self.models_mb


# --- supervisor -> worker ----------------------------------------------------------------------


@dataclass(frozen=True)
class RunJob:
    job_id: str
    spec: dict[str, Any]
    attempt: int = 0
    start_level: int = 0  # the memory level that worked for jobs of this shape before (learned)


@dataclass(frozen=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True)
class Shutdown:
    """Finish nothing more: unload, clean up and exit 0."""


ToWorker = RunJob | CancelJob | Shutdown


# --- worker -> supervisor ----------------------------------------------------------------------


@dataclass(frozen=True)
class Ready:
    worker_id: str
    pid: int
    device: str
    memory: MemoryFigures
    max_memory_level: int = 0
    # the kernel's OOM-kill counters as this worker saw them at start (oom_kill.oom_kill_counts):
    # a Ray head's baseline for the node, which it cannot read itself
    oom_kills: dict[str, int] | None = None


@dataclass(frozen=True)
class Heartbeat:
    memory: MemoryFigures
    busy_job_id: str | None = None


@dataclass(frozen=True)
class Progress:
    job_id: str
    stage: str
    step: int
    total: int


@dataclass(frozen=True)
class JobDone:
    job_id: str
    result: dict[str, Any]
    memory: MemoryFigures
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobFailed:
    """A job ended with an exception the worker caught; text only, the exception is gone."""

    job_id: str
    kind: str
    message: str
    advice: str
    error_id: str
    stage: str | None
    traceback: str
    memory: MemoryFigures
    recycle: bool = False  # the worker is unsafe to reuse (sticky device error)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    memory_profile: dict[str, Any] | None = None  # worker.profile.MemoryProfile.to_dict()


FromWorker = Ready | Heartbeat | Progress | JobDone | JobFailed
