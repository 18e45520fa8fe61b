"""Builds the one FastAPI app: ``/v1`` API, Gradio UI at ``/ui``, ``/metrics``, ``/healthz``, ``/readyz``."""

from __future__ import annotations

import traceback as traceback_module
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import gradio as gr
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from steadyframe import __version__
from steadyframe.jobs.base import JobStore
from steadyframe.logs import get_logger, log_failure
from steadyframe.server.api import build_api_router
from steadyframe.server.auth import bearer_guard, ui_login
from steadyframe.server.context import ServerContext
from steadyframe.server.history import MemoryHistory
from steadyframe.server.history_api import build_history_router
from steadyframe.server.job_service import JobService
from steadyframe.server.metrics import metrics_registry, render_metrics
from steadyframe.server.ui import UI_PATH, OutputStaging, build_ui, ui_css
from steadyframe.server.uploads import UploadSizeGuard, UploadStore
from steadyframe.settings import Settings
from steadyframe.taxonomy import new_error_id

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
    if store is None:
        from steadyframe.jobs.sqlite import SqliteJobStore

        store = SqliteJobStore(settings.jobs_db)
    owns_dispatcher = dispatcher is None
    if dispatcher is None:
        from steadyframe.supervisor import Dispatcher

        dispatcher = Dispatcher(settings, store)
    uploads = UploadStore(settings)
    staging = OutputStaging()
    history = MemoryHistory(
        interval_s=settings.history_sample_s, keep_s=settings.history_keep_hours * 3600, workers=dispatcher, store=store
    )
    if hasattr(dispatcher, "subscribe"):  # before the dispatcher starts: the first worker start is on the timeline
        dispatcher.subscribe(history.on_event)
    ctx = ServerContext(
        settings=settings,
        store=store,
        uploads=uploads,
        jobs=JobService(settings, store, uploads, dispatcher),
        dispatcher=dispatcher,
        history=history,
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        history.start()
        if owns_dispatcher:
            await run_in_threadpool(dispatcher.start)
        try:
            yield
        finally:
            if owns_dispatcher:
                await run_in_threadpool(dispatcher.stop)
            history.stop()
            staging.cleanup()

    app = FastAPI(
        title="steadyframe",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.add_middleware(UploadSizeGuard, path="/v1/uploads", max_bytes=uploads.max_bytes)
    guard = Depends(bearer_guard(settings))
    app.include_router(build_api_router(ctx), dependencies=[guard])
    app.include_router(build_history_router(history), dependencies=[guard])

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        """A bug in a route: the user gets an error id, the log gets the traceback under that id."""
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

    @app.get("/metrics", response_class=PlainTextResponse, dependencies=[guard], tags=["probes"])
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
