"""``GET /v1/system/history``: the memory timeline as JSON."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from steadyframe.server.history import HistorySnapshot, MemoryHistory
from steadyframe.server.profile_views import StagePeakView


class WorkerSampleView(BaseModel):
    id: str
    node: str = Field(description="the worker's machine (a Ray node on a cluster); empty for this machine")
    device: str = Field(description="cpu, cuda, cuda:N — one worker per GPU, so its VRAM is that GPU's")
    state: str
    pid: int | None
    rss_mb: float | None = Field(description="None while the worker has no live process")
    vram_allocated_mb: float | None
    vram_reserved_mb: float | None
    baseline_rss_mb: float | None = Field(None, description="the worker's RSS when empty (after its imports)")


class SampleView(BaseModel):
    at: float = Field(description="unix seconds")
    server_rss_mb: float
    swap_used_mb: float
    workers: list[WorkerSampleView]


class TimelineEventView(BaseModel):
    at: float = Field(description="unix seconds")
    kind: str = Field(
        description="job_started, job_stage, job_succeeded, job_failed, job_requeued, job_cancelled, worker_started, "
        "worker_ready, worker_recycled, worker_restarted, worker_ended, model_loaded, model_unloaded"
    )
    worker_id: str
    job_id: str | None = None
    stage: str | None = None
    error_kind: str | None = Field(None, description="the failure's kind (job_failed, job_requeued)")
    error_id: str | None = Field(None, description="matches the log line holding the traceback")
    detail: str | None = None


class JobStagePeakView(StagePeakView):
    job_id: str
    worker_id: str


class SamplingCostView(BaseModel):
    cpu_s: float = Field(description="CPU time the sampling thread used")
    running_s: float = Field(description="how long it has run")
    cpu_ms_per_minute: float


class HistoryView(BaseModel):
    now: float
    interval_s: float = Field(description="seconds between samples (more right after a job ends)")
    keep_s: float = Field(description="how far back samples and events reach; older samples are thinned to one a minute")
    samples: list[SampleView]
    events: list[TimelineEventView]
    stage_peaks: list[JobStagePeakView] = Field(description="per-stage peaks of the jobs that ended in this window")
    sampling: SamplingCostView


def history_view(snapshot: HistorySnapshot) -> HistoryView:
    minutes = snapshot.sampler_running_s / 60.0
    return HistoryView(
        now=snapshot.now,
        interval_s=snapshot.interval_s,
        keep_s=snapshot.keep_s,
        samples=[SampleView.model_validate(s, from_attributes=True) for s in snapshot.samples],
        events=[TimelineEventView.model_validate(e, from_attributes=True) for e in snapshot.events],
        stage_peaks=[JobStagePeakView.model_validate(p, from_attributes=True) for p in snapshot.stage_peaks],
        sampling=SamplingCostView(
            cpu_s=round(snapshot.sampler_cpu_s, 4),
            running_s=round(snapshot.sampler_running_s, 1),
            cpu_ms_per_minute=round(snapshot.sampler_cpu_s * 1000 / minutes, 2) if minutes > 0 else 0.0,
        ),
    )


def build_history_router(history: MemoryHistory) -> APIRouter:
    router = APIRouter(prefix="/v1")

    @router.get("/system/history", response_model=HistoryView, tags=["system"])
    def system_history(
        since: Annotated[
            float | None, Query(ge=0, description="unix seconds: only what happened at or after it; default all kept")
        ] = None,
    ) -> HistoryView:
        """Memory over time (server RSS, each worker's RSS and VRAM, swap), lifecycle events on the same
        time axis (jobs, stages, failures with kind and error id, worker starts/recycles/restarts, model
        loads) and each ended job's per-stage peaks. Poll with ``since`` = the last ``now`` for new points."""
        return history_view(history.snapshot(since))

    return router
