"""The public view of a job's memory profile (``worker.profile``), in its result and in its error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class StagePeakView(BaseModel):
    """One stage of a job as its worker measured it: exact peaks, not samples."""

    stage: str
    memory_level: int
    started_at: float
    ended_at: float
    peak_rss_mb: float
    peak_vram_allocated_mb: float
    peak_vram_reserved_mb: float


class AfterCleanupView(BaseModel):
    at: float
    rss_mb: float
    baseline_rss_mb: float = Field(description="the worker's RSS when empty, measured after its imports")
    vram_allocated_mb: float
    vram_reserved_mb: float


class MemoryProfileView(BaseModel):
    """A job's memory: peak per stage (a stage rerun by the OOM ladder appears once per level) and the
    worker's level once the job ended and cleanup ran."""

    stages: list[StagePeakView]
    peak_rss_mb: float
    peak_vram_allocated_mb: float
    peak_vram_reserved_mb: float
    after_cleanup: AfterCleanupView | None = None


def memory_profile_view(profile: dict[str, Any] | None) -> MemoryProfileView | None:
    """A stored profile as its view; None when absent or from a version this one cannot read."""
    if not profile:
        return None
    try:
        return MemoryProfileView.model_validate(profile)
    except ValueError:
        return None
