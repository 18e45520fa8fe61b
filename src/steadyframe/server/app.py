"""Builds the one FastAPI app: ``/v1`` API, Gradio UI at ``/ui``, ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import traceback as traceback_module
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi_offline import FastAPIOffline
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from steadyframe import __version__
from steadyframe.catalog import catalog
from steadyframe.jobs.base import JobStore
from steadyframe.logs import get_logger, log_failure
from steadyframe.server.api import build_api_router
from steadyframe.server import data_lock
from steadyframe.server.auth import bind_warnings, ui_login
from steadyframe.server.context import ServerContext
from steadyframe.server.history import MemoryHistory
from steadyframe.server.history_api import build_history_router
from steadyframe.server.job_service import JobService
from steadyframe.server.metrics import metrics_registry, render_metrics
from steadyframe.server.models_api import build_models_router
from steadyframe.server.pulls import PullManager
from steadyframe.server.ui import UI_PATH, OutputStaging, build_ui, ui_css
from steadyframe.server.guard import RequestGuard
from steadyframe.server.schemas import COMMON_RESPONSES, validation_problem
from steadyframe.server.uploads import UploadStore
from steadyframe.settings import Settings
from steadyframe.errors import ErrorKind
from steadyframe.taxonomy import describe, is_disk_full, new_error_id

log = get_logger("server")

API_DESCRIPTION = """Generate videos with CogVideoX: upload inputs, queue jobs, follow their progress
(polling or server-sent events) and download the MP4 and GIF. Every failed job carries a message,
an advice line and an error id that matches a traceback in the server log."""


def create_app(settings: Settings, *, store: JobStore | None = None, dispatcher: Any = None) -> FastAPI:
    """The whole server as an ASGI app.

    ``store`` defaults to the SQLite job table in ``settings.jobs_db``; ``dispatcher`` defaults to a
    ``steadyframe.supervisor.Dispatcher`` that this app starts on startup and stops on shutdown.
    A dispatcher passed in is neither started nor stopped here (its owner does that).
    """
    settings.ensure_dirs()
    warnings = bind_warnings(settings)
    owns_store = store is None
    catalog(settings)  # a bad STEADYFRAME_MODELS stops the server here, with its message
    if store is None:
        from steadyframe.jobs.sqlite import open_job_store

        data_lock.acquire(settings.data_dir, port=settings.port)  # before the job table is touched
        store, damaged = open_job_store(settings.jobs_db)
        if damaged:
            log.warning(damaged)
            warnings.append(damaged)
    owns_dispatcher = dispatcher is None
    if dispatcher is None:
        from steadyframe.supervisor import Dispatcher

        dispatcher = Dispatcher(settings, store)
    uploads = UploadStore(settings)
    staging = OutputStaging()
    pulls = PullManager(settings, store, wake=dispatcher.wake)
    history = MemoryHistory(
        interval_s=settings.history_sample_s, keep_s=settings.history_keep_hours * 3600, workers=dispatcher, store=store
    )
    if hasattr(dispatcher, "subscribe"):  # before the dispatcher starts: the first worker start is on the timeline
        dispatcher.subscribe(history.on_event)
    ctx = ServerContext(
        settings=settings,
        store=store,
        uploads=uploads,
        jobs=JobService(settings, store, uploads, dispatcher, pulls),
        dispatcher=dispatcher,
        warnings=warnings,
        pulls=pulls,
        history=history,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        history.start()
        if owns_dispatcher:
            await run_in_threadpool(dispatcher.start)
        await run_in_threadpool(pulls.resume)  # interrupted pulls continue from the bytes on disk
        try:
            yield
        finally:
            await run_in_threadpool(pulls.stop)
            if owns_dispatcher:
                await run_in_threadpool(dispatcher.stop)
            history.stop()
            staging.cleanup()
            if owns_store:
                store.close()
                data_lock.release(settings.data_dir)

    # FastAPIOffline: /docs and /redoc from bundled Swagger/ReDoc files, no CDN.
    app = FastAPIOffline(
        title="steadyframe",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        responses=COMMON_RESPONSES,
    )
    app.state.ctx = ctx
    app.add_middleware(RequestGuard, settings=settings)
    app.include_router(build_api_router(ctx))
    app.include_router(build_models_router(ctx))
    app.include_router(build_history_router(history))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        """A request that does not fit the schema: 422 with one readable line and the field list."""
        return JSONResponse(validation_problem(exc.errors()), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug in a route: the user gets an error id, the log gets the traceback under that id.
        A full disk is no bug: 507 with what to do (the server keeps serving reads meanwhile)."""
        if is_disk_full(exc):
            log.warning("%s %s: the disk is full (%s)", request.method, request.url.path, exc)
            described = describe(ErrorKind.DISK_FULL)
            return JSONResponse({"detail": described.message, "advice": described.advice}, status_code=507)
        error_id = new_error_id()
        text = "".join(traceback_module.format_exception(exc))
        log_failure(
            log, f"unexpected error in {request.method} {request.url.path}",
            job_id=None, error_id=error_id, kind="internal", stage=None, traceback=text,
        )  # fmt: skip
        return JSONResponse(
            {
                "detail": f"internal server error (error id {error_id})",
                "advice": "Report the error id; the log has details.",
            },
            status_code=500,
        )

    @app.get("/healthz", response_class=PlainTextResponse, tags=["probes"])
    def healthz() -> str:
        """The server process is alive."""
        return "ok"

    @app.get("/readyz", tags=["probes"], responses={503: {"description": "no worker ready yet"}})
    def readyz() -> Response:
        """A worker is ready to run jobs (503 until then)."""
        ready = bool(dispatcher.is_ready())
        return PlainTextResponse("ready" if ready else "starting", status_code=200 if ready else 503)

    registry = metrics_registry(ctx)

    @app.get("/metrics", response_class=PlainTextResponse, tags=["probes"])
    def metrics() -> Response:
        """Prometheus text format: queue, jobs by status and error kind, stage durations, workers, memory."""
        body, content_type = render_metrics(registry)
        return Response(body, media_type=content_type)

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{UI_PATH}/")

    blocks = build_ui(ctx, staging)
    # Outputs reach the UI as per-job copies; the data directory is blocked from Gradio's file route.
    gr.mount_gradio_app(
        app,
        blocks,
        path=UI_PATH,
        auth=ui_login(settings),
        footer_links=["api"],
        blocked_paths=[str(settings.data_dir)],
        max_file_size=int(settings.max_upload_mb * 1024 * 1024),
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
        css=ui_css(),
        theme=gr.themes.Soft(),
    )
    return app
