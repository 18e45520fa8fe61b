"""One server per data folder: an exclusive lock on ``DATA_DIR/server.lock`` held for the server's life.

Taken before anything reads or writes the job table, so a second server on the same folder exits at
once (naming the holder's pid and port) instead of "recovering" the first one's running jobs. The lock
is ``flock``: the kernel drops it when its holder dies however it dies, so a stale lock file left by a
killed server is simply taken over, and the pid/port written in it are only words for the message.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import IO

from steadyframe.errors import ErrorKind, SteadyframeError

LOCK_NAME = "server.lock"

_held: dict[Path, IO[str]] = {}  # this process's locks (flock conflicts even within one process)
_held_guard = threading.Lock()


class DataFolderBusy(SteadyframeError):
    """Another live server holds the data folder."""

    kind = ErrorKind.INVALID_INPUT


def _holder_words(handle: IO[str]) -> str:
    handle.seek(0)
    try:
        info = json.loads(handle.read() or "{}")
    except ValueError:
        info = {}
    pid, port = info.get("pid", "unknown"), info.get("port", "unknown")
    return f"pid {pid}, port {port}"


def acquire(data_dir: Path, *, port: int | None) -> Path:
    """Hold ``data_dir``'s server lock (idempotent within this process). -> the lock file.

    Raises ``DataFolderBusy`` at once, without waiting, when another process holds it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    path = (data_dir / LOCK_NAME).resolve()
    with _held_guard:
        if path in _held:
            return path
        handle = path.open("a+", encoding="utf-8")  # a+: never truncate the holder's words before we hold it
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_words(handle)
            handle.close()
            raise DataFolderBusy(
                f"Another steadyframe server ({holder}) is using the data folder {data_dir}.",
                advice="Stop that server first, or give this one its own folder with STEADYFRAME_DATA_DIR.",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "port": port, "since": time.time()}))
        handle.flush()
        _held[path] = handle
        return path


def release(data_dir: Path) -> None:
    """Give the lock up (tests; a server keeps it until it exits)."""
    path = (data_dir / LOCK_NAME).resolve()
    with _held_guard:
        handle = _held.pop(path, None)
    if handle is not None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()
