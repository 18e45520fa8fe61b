"""``steadyframe serve``: one uvicorn process for the API, the UI and the metrics."""

from __future__ import annotations

import os

from steadyframe.settings import Settings


def serve(settings: Settings) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM stop the workers, then exit).

    Raises ``UnsafeBindError`` before binding when ``settings.host`` is not loopback and no API
    token is set (unless ``settings.allow_unauthenticated_remote``), and ``DataFolderBusy`` at once
    when another server holds the data folder.
    """
    # Gradio reads these at import time: no analytics calls, ever.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from steadyframe.server import data_lock
    from steadyframe.server.auth import bind_warnings, check_bind

    check_bind(settings)
    data_lock.acquire(settings.data_dir, port=settings.port)  # first: before imports, logs, workers, the job table

    import uvicorn

    from steadyframe.logs import get_logger, setup_logging
    from steadyframe.server.app import create_app
    from steadyframe.server.http_protocol import protocol_with_timeout

    settings.ensure_dirs()
    setup_logging(settings.logs_dir, process_name="server", level=settings.log_level, to_stderr=settings.log_to_stderr)
    log = get_logger("server")
    for warning in bind_warnings(settings):
        log.warning(warning)
    app = create_app(settings)
    log.info("serving on http://%s:%d/ui/ (API under /v1)", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        access_log=False,
        http=protocol_with_timeout(settings.request_timeout_s),
        h11_max_incomplete_event_size=64 * 1024,  # request line + headers
    )
