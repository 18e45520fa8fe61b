"""JSON-lines logging for every process: one object per line, to stderr and a rotating file.

Fields: time, level, logger, process, message, and when known job_id, error_id, stage,
traceback. Pass them with ``extra={"job_id": ..., "error_id": ...}`` or use :func:`log_failure`.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOGGER_NAME = "steadyframe"
_FIELDS = ("job_id", "error_id", "stage", "worker_id", "kind", "traceback")
_configured: set[str] = set()
_setup_lock = threading.Lock()


class JsonLineFormatter(logging.Formatter):
    """Formats a record as one JSON object; a logged exception becomes the ``traceback`` text."""

    def __init__(self, process_name: str) -> None:
        super().__init__()
        self.process_name = process_name

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "process": self.process_name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        for name in _FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and "traceback" not in line:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def log_path(logs_dir: Path, process_name: str) -> Path:
    """The file a process writes: one per process, so rotation never races between processes."""
    return Path(logs_dir) / f"{process_name}.log"


def setup_logging(
    logs_dir: Path | None,
    *,
    process_name: str = "server",
    level: str = "INFO",
    to_stderr: bool = True,
    max_bytes: int = 10 * 1024 * 1024,
    backups: int = 5,
) -> logging.Logger:
    """Attach the JSON handlers to the ``steadyframe`` logger once per process; returns it.

    ``logs_dir`` None logs to stderr only. Calling again with the same process name is a no-op.
    """
    logger = logging.getLogger(LOGGER_NAME)
    key = f"{os.getpid()}:{process_name}:{logs_dir}"
    stderr_key = f"{os.getpid()}:stderr"
    with _setup_lock:
        if key in _configured:
            return logger
        formatter = JsonLineFormatter(process_name)
        if to_stderr and stderr_key not in _configured:
            stream = logging.StreamHandler(sys.stderr)
            stream.setFormatter(formatter)
            logger.addHandler(stream)
            _configured.add(stderr_key)
        if logs_dir is not None:
            # Several data dirs in one process (tests): each gets every line; one stderr stream.
            Path(logs_dir).mkdir(parents=True, exist_ok=True)
            rotating = logging.handlers.RotatingFileHandler(
                log_path(Path(logs_dir), process_name), maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
            )
            rotating.setFormatter(formatter)
            logger.addHandler(rotating)
        logger.setLevel(level.upper())
        logger.propagate = False
        _configured.add(key)
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the ``steadyframe`` logger (``steadyframe.<name>``)."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


def log_failure(
    logger: logging.Logger,
    message: str,
    *,
    job_id: str | None,
    error_id: str,
    kind: str,
    stage: str | None,
    traceback: str | None,
    worker_id: str | None = None,
) -> None:
    """The one ERROR line per failed job: its error id next to the full traceback text."""
    logger.error(
        message,
        extra={
            "job_id": job_id,
            "error_id": error_id,
            "kind": kind,
            "stage": stage,
            "traceback": traceback,
            "worker_id": worker_id,
        },
    )


def find_error(logs_dir: Path, error_id: str) -> list[dict[str, Any]]:
    """Every JSON log line under ``logs_dir`` (rotated files included) that carries ``error_id``."""
    found: list[dict[str, Any]] = []
    for path in sorted(Path(logs_dir).glob("*.log*")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for raw in handle:
                if error_id not in raw:
                    continue
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:
                    continue
                if line.get("error_id") == error_id:
                    found.append(line)
    return found
