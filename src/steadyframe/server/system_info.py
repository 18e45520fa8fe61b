"""Memory and worker facts for /v1/system, /v1/models and /metrics, read fresh on each call."""

from __future__ import annotations

import os
import socket
from typing import Any, Protocol
from collections.abc import Sequence

import psutil

from steadyframe.server.schemas import ProcessView

_MB = 1024 * 1024


class WorkerSource(Protocol):
    """What the server reads from the dispatcher (``steadyframe.supervisor.Dispatcher``)."""

    def is_ready(self) -> bool: ...

    def workers(self) -> Sequence[Any]: ...


def model_label(key: str) -> str:
    """A worker's loaded-model key without machine paths: each path part shortened to its folder name."""
    parts = key.split(":")
    return ":".join(p.rstrip("/").rsplit("/", 1)[-1] if "/" in p else p for p in parts)


def server_process() -> ProcessView:
    rss = psutil.Process(os.getpid()).memory_info().rss
    return ProcessView(
        role="server", id="server", pid=os.getpid(), state="serving", rss_mb=round(rss / _MB, 1), node=socket.gethostname()
    )


def worker_processes(dispatcher: WorkerSource | None) -> list[ProcessView]:
    """One view per worker the dispatcher knows (its WorkerInfo dataclasses)."""
    if dispatcher is None:
        return []
    views = []
    for info in dispatcher.workers():
        views.append(
            ProcessView(
                role="worker",
                id=str(info.id),
                pid=info.pid,
                state=str(info.state),
                rss_mb=round(info.rss_mb, 1),
                vram_allocated_mb=round(info.vram_allocated_mb, 1),
                vram_reserved_mb=round(info.vram_reserved_mb, 1),
                jobs_done=info.jobs_done,
                restarts=info.restarts,
                loaded_models=[model_label(str(m)) for m in info.loaded_models],
                node=str(getattr(info, "node", "") or "") or None,
                device=str(getattr(info, "device", "") or "") or None,
            )
        )
    return views


def swap_and_ram_mb() -> tuple[float, float, float]:
    """(swap used, swap total, RAM available) in MB."""
    swap = psutil.swap_memory()
    return swap.used / _MB, swap.total / _MB, psutil.virtual_memory().available / _MB
