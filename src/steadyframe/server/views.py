"""Turns internal job records into the public ``JobView``: URLs instead of paths, no tracebacks."""

from __future__ import annotations

from typing import Any

from steadyframe.jobs.base import JobRecord, JobStatus
from steadyframe.server.profile_views import memory_profile_view
from steadyframe.server.pulls import PullManager
from steadyframe.server.schemas import (
    DownloadView,
    ErrorView,
    EstimateView,
    JobView,
    ProgressView,
    ResultView,
    WaitingView,
)
from steadyframe.server.uploads import UploadStore

# Spec fields that hold machine paths: replaced by upload ids or dropped before leaving the server.
_PATH_FIELDS = {"image_path": "image_upload", "video_path": "video_upload"}
_HIDDEN_FIELDS = ("upscale_model", "rife_model")


def public_spec(spec: dict[str, Any], uploads: UploadStore) -> dict[str, Any]:
    """``spec`` with every path replaced by its upload id (or removed)."""
    shown = {k: v for k, v in spec.items() if k not in _PATH_FIELDS and k not in _HIDDEN_FIELDS}
    for path_field, id_field in _PATH_FIELDS.items():
        if spec.get(path_field):
            shown[id_field] = uploads.id_of(spec[path_field])
    return shown


def waiting_view(record: JobRecord, pulls: PullManager | None) -> WaitingView | None:
    """For a job held back by its model's pull: the model and the pull's live byte progress."""
    if record.waiting_for is None or record.status != JobStatus.QUEUED:
        return None
    status = pulls.status(record.waiting_for) if pulls is not None else None
    download = None
    if status is not None:
        download = DownloadView(bytes_done=status.bytes_done, bytes_total=status.bytes_total, fraction=status.fraction)
    return WaitingView(model=record.waiting_for, download=download)


def job_view(
    record: JobRecord, uploads: UploadStore, *, position: int | None = None, pulls: PullManager | None = None
) -> JobView:
    """The API's view of ``record``; ``position`` is its queue place when the caller looked it up.
    A job waiting for its model's download shows the download as its progress (stage ``download``)."""
    waiting = waiting_view(record, pulls)
    progress = ProgressView(
        stage=record.progress.stage,
        step=record.progress.step,
        total=record.progress.total,
        fraction=record.progress.fraction,
    )
    if waiting is not None and waiting.download is not None:
        done, total = waiting.download.bytes_done, waiting.download.bytes_total or 0
        progress = ProgressView(stage="download", step=done, total=total, fraction=waiting.download.fraction)
    result = None
    if record.status == JobStatus.SUCCEEDED and record.result:
        data = record.result
        result = ResultView(
            video_url=f"/v1/jobs/{record.id}/video",
            gif_url=f"/v1/jobs/{record.id}/gif",
            seed=int(data["seed"]),
            frames=int(data["frames"]),
            fps=float(data["fps"]),
            width=int(data["width"]),
            height=int(data["height"]),
            duration_s=float(data["duration_s"]),
            memory_level=int(data.get("memory_level", 0)),
            test_noise=bool(data.get("test_noise", False)),
            learned_start_level=int(data.get("learned_start_level", 0) or 0),
            resumed_from=data.get("resumed_from"),
            stage_recoveries=dict(data.get("stage_recoveries") or {}),
            timings={str(k): float(v) for k, v in (data.get("timings") or {}).items()},
            speed=data.get("speed") or None,
            memory_profile=memory_profile_view(data.get("memory_profile")),
        )
    error = None
    if record.error is not None:
        error = ErrorView(
            kind=record.error.kind,
            message=record.error.message,
            advice=record.error.advice,
            error_id=record.error.error_id,
            stage=record.error.stage,
            memory_profile=memory_profile_view(record.error.memory_profile),
        )
    return JobView(
        id=record.id,
        status=record.status.value,
        attempt=record.attempt,
        position=position,
        progress=progress,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        spec=public_spec(record.spec, uploads),
        result=result,
        error=error,
        waiting=waiting,
        estimate=EstimateView.model_validate(record.estimate) if record.estimate else None,
    )
