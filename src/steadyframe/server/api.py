"""The REST API under ``/v1``: maps routes to ``JobService``/``UploadStore`` calls, nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, File, Header, HTTPException, Query, Request, UploadFile, status
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from steadyframe.errors import InvalidInputError
from steadyframe.jobs.base import JobRecord, JobStatus
from steadyframe.server.context import OUTPUT_FILES, ServerContext
from steadyframe.server.guard import client_key
from steadyframe.server.job_service import IdempotencyConflict, JobRejected, QueueFull
from steadyframe.server.schemas import (
    EstimateView,
    JobAccepted,
    JobCreate,
    JobList,
    JobView,
    ProblemView,
    SystemView,
    UploadView,
    validation_problem,
)
from steadyframe.server.system_info import server_process, swap_and_ram_mb, worker_processes
from steadyframe.server.uploads import UnsupportedMediaType, UploadTooLarge
from steadyframe.server.views import job_view

# How often an SSE stream looks at the store: progress feels live, SQLite barely notices.
SSE_POLL_S = 0.25
_NOT_FOUND = {404: {"model": ProblemView, "description": "no job with this id"}}


def problem(
    status_code: int, detail: str, advice: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An error body with a plain message and what to do about it."""
    body = ProblemView(detail=detail, advice=advice).model_dump(exclude_none=True)
    return JSONResponse(body, status_code=status_code, headers=headers)


def build_api_router(ctx: ServerContext) -> APIRouter:
    """All ``/v1`` routes bound to ``ctx``; the caller adds authentication as a router dependency."""
    router = APIRouter(prefix="/v1")

    def existing_job(job_id: str) -> JobRecord:
        record = ctx.store.get(job_id)
        if record is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no job with id {job_id!r}")
        return record

    # A plain default (not a local Annotated alias): postponed annotations cannot see local names.
    job_dependency = Depends(existing_job)

    @router.post(
        "/uploads",
        status_code=status.HTTP_201_CREATED,
        response_model=UploadView,
        responses={413: {"model": ProblemView}, 415: {"model": ProblemView}, 422: {"model": ProblemView}},
        tags=["uploads"],
    )
    def create_upload(request: Request, file: Annotated[UploadFile, File(description="an image or a video")]):
        """Store an input image (i2v) or video (v2v); its type is read from its content and it must decode."""
        try:
            return ctx.uploads.save(file.file)
        except UploadTooLarge as exc:
            return problem(413, str(exc), f"Send a file under {ctx.settings.max_upload_mb:g} MB.")
        except UnsupportedMediaType as exc:
            return problem(415, str(exc), "Convert it to PNG/JPEG or MP4 (H.264) and upload it again.")
        except InvalidInputError as exc:
            return problem(422, exc.message, exc.advice or "Check the file opens in an image viewer or video player.")

    @router.post(
        "/jobs",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=JobAccepted,
        responses={409: {"model": ProblemView}, 429: {"model": ProblemView}},
        tags=["jobs"],
    )
    def create_job(
        request: Request,
        body: JobCreate,
        idempotency_key: Annotated[str | None, Header(max_length=200, description="same key, same job")] = None,
    ):
        """Queue a generation job. With an ``Idempotency-Key`` a retried request returns the first job.
        429 when the queue is full, or this client (token, else address) has its quota of queued jobs."""
        try:
            record, created = ctx.jobs.submit(body, idempotency_key=idempotency_key, client=client_key(request.scope))
        except JobRejected as exc:
            return JSONResponse(validation_problem(exc.errors, exc.advice), status_code=exc.status)
        except QueueFull as exc:
            return problem(
                429, str(exc), f"Try again in {exc.retry_after_s} s.", headers={"Retry-After": str(exc.retry_after_s)}
            )
        except IdempotencyConflict as exc:
            return problem(409, str(exc), "Use a new Idempotency-Key for a different job.")
        estimate = EstimateView.model_validate(record.estimate) if record.estimate else None
        accepted = JobAccepted(
            id=record.id, status=record.status.value, position=ctx.jobs.position(record.id), estimate=estimate
        )
        headers = {"Location": f"/v1/jobs/{record.id}"}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(accepted.model_dump(), status_code=202, headers=headers)

    @router.post(
        "/jobs/estimate",
        response_model=EstimateView,
        responses={
            422: {"model": ProblemView, "description": "invalid, or cannot fit this machine"},
            507: {"model": ProblemView, "description": "its frames do not fit the free disk now"},
        },
        tags=["jobs"],
    )
    def estimate_job(body: JobCreate):
        """What the job would need (RAM, GPU memory, disk), without queueing it. 422 as ``POST /v1/jobs``
        would answer: an invalid job, or one that cannot fit this machine even at the highest memory level."""
        try:
            prepared = ctx.jobs.prepare(body)
        except JobRejected as exc:
            return JSONResponse(validation_problem(exc.errors, exc.advice), status_code=exc.status)
        return EstimateView.model_validate(prepared.estimate.to_dict())

    @router.get("/jobs", response_model=JobList, tags=["jobs"])
    def list_jobs(
        status_filter: Annotated[JobStatus | None, Query(alias="status")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> JobList:
        """Job history, newest first, optionally of one status."""
        records = ctx.store.list(status=status_filter, limit=limit)
        return JobList(jobs=[job_view(r, ctx.uploads, pulls=ctx.pulls) for r in records])

    @router.get("/jobs/{job_id}", response_model=JobView, responses=_NOT_FOUND, tags=["jobs"])
    def get_job(record: JobRecord = job_dependency) -> JobView:
        """A job's status, progress, result (when succeeded) or error (when failed)."""
        return job_view(record, ctx.uploads, position=ctx.store.position(record.id), pulls=ctx.pulls)

    @router.get(
        "/jobs/{job_id}/events",
        response_class=EventSourceResponse,
        responses={**_NOT_FOUND, 429: {"model": ProblemView, "description": "too many open event streams"}},
        tags=["jobs"],
    )
    async def job_events(request: Request, record: JobRecord = job_dependency) -> AsyncIterator[ServerSentEvent]:
        """Server-sent events: ``progress`` whenever status or progress changes, then one terminal
        event named after the final status (``succeeded``, ``failed`` or ``cancelled``). Data is the job."""
        last: tuple[object, ...] | None = None
        sequence = 0
        current: JobRecord | None = record
        while current is not None:
            view = job_view(current, ctx.uploads, pulls=ctx.pulls)
            if current.status.terminal:
                yield ServerSentEvent(event=current.status.value, data=view.model_dump(), id=str(sequence))
                return
            state = (view.status, view.progress.stage, view.progress.step, view.progress.total)  # a download too
            if state != last:
                last = state
                yield ServerSentEvent(event="progress", data=view.model_dump(), id=str(sequence))
                sequence += 1
            if await request.is_disconnected():
                return
            await asyncio.sleep(SSE_POLL_S)
            current = await run_in_threadpool(ctx.store.get, record.id)

    @router.post("/jobs/{job_id}/cancel", status_code=202, response_model=JobView, responses=_NOT_FOUND, tags=["jobs"])
    def cancel_job(record: JobRecord = job_dependency) -> JobView:
        """Cancel: a queued job at once, a running one at its next step. A finished job is left as it is."""
        updated = ctx.jobs.cancel(record.id) or record
        return job_view(updated, ctx.uploads, pulls=ctx.pulls)

    def output_route(which: str):
        media_type = OUTPUT_FILES[which][2]
        suffix = OUTPUT_FILES[which][1].rsplit(".", 1)[1]

        def serve_output(record: JobRecord = job_dependency, download: bool = False) -> FileResponse:
            path = ctx.output_file(record, which)
            if path is None:
                raise HTTPException(404, detail=f"job {record.id} has no {which} (yet): it is {record.status.value}")
            return FileResponse(
                path,
                media_type=media_type,
                filename=f"steadyframe-{record.id}.{suffix}",
                content_disposition_type="attachment" if download else "inline",
            )

        serve_output.__doc__ = f"The finished job's {which} file (``?download=1`` to save it); 404 until it exists."
        return serve_output

    for which in ("video", "gif"):
        router.add_api_route(
            f"/jobs/{{job_id}}/{which}",
            output_route(which),
            methods=["GET"],
            response_class=FileResponse,
            responses={200: {"content": {OUTPUT_FILES[which][2]: {}}}, **_NOT_FOUND},
            tags=["jobs"],
            name=f"job_{which}",
        )

    @router.get("/system", response_model=SystemView, tags=["system"])
    def system() -> SystemView:
        """Memory per process (server and workers), swap, VRAM per worker GPU, worker states."""
        swap_used, swap_total, available = swap_and_ram_mb()
        return SystemView(
            processes=[server_process(), *worker_processes(ctx.dispatcher)],
            swap_used_mb=round(swap_used, 1),
            swap_total_mb=round(swap_total, 1),
            ram_available_mb=round(available, 1),
            queue_depth=ctx.store.count(JobStatus.QUEUED),
            ready=bool(ctx.dispatcher is not None and ctx.dispatcher.is_ready()),
            warnings=list(ctx.warnings),
        )

    return router
