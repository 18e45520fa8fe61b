"""``steadyframe serve``: one uvicorn process for the API, the UI and the metrics."""

from __future__ import annotations

import os

from steadyframe.settings import Settings


def serve(settings: Settings) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM stop the workers, then exit).

    Raises ``UnsafeBindError`` before binding when ``settings.host`` is not loopback and no API
    token is set (unless ``settings.allow_unauthenticated_remote``).
    """
    # Gradio reads these at import time: no analytics calls, ever.
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from steadyframe.server.auth import check_bind

    check_bind(settings)

    import uvicorn

    from steadyframe.logs import get_logger, setup_logging
    from steadyframe.server.app import create_app

    settings.ensure_dirs()
    setup_logging(settings.logs_dir, process_name="server", level=settings.log_level, to_stderr=settings.log_to_stderr)
    app = create_app(settings)
    get_logger("server").info("serving on http://%s:%d/ui/ (API under /v1)", settings.host, settings.port)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        access_log=False,
    )
