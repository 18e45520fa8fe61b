"""Memory figures and the one idempotent cleanup of a worker process (torch only if loaded)."""

from __future__ import annotations

import ctypes
import gc
import platform
import sys
from functools import lru_cache

import psutil

_MB = 1024 * 1024


@lru_cache(maxsize=1)
def _libc_malloc_trim() -> object | None:
    """glibc's malloc_trim, or None elsewhere (musl, macOS, Windows have no such call)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _torch():
    """The torch module if this process already imported it; cleanup never imports it itself."""
    return sys.modules.get("torch")


def cleanup() -> None:
    """Give memory back: gc, CUDA cache and IPC handles when CUDA is up, then malloc_trim(0).

    Safe to call any number of times and in any state; it only releases what nothing references.
    """
    gc.collect()
    _release_freed(("synchronize", "empty_cache", "ipc_collect"))


def trim() -> None:
    """Return what is already freed to the OS between stages: the CUDA cache and malloc_trim(0).
    No gc here: a collection mid-job runs every pending finalizer on the job's thread; in a Ray
    actor a job once stalled inside that gc.collect() until the stall timeout (Ray fault matrix)."""
    _release_freed(("empty_cache",))


def _release_freed(cuda_steps: tuple[str, ...]) -> None:
    """``torch.cuda``'s ``cuda_steps`` in order when CUDA is up, then glibc's malloc_trim(0)."""
    torch = _torch()
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        # After a sticky device error every CUDA call raises again; the worker is recycled
        # anyway, so releasing memory must not turn that into a second failure.
        for step in cuda_steps:
            try:
                getattr(torch.cuda, step)()
            except Exception:
                break
    trim_heap = _libc_malloc_trim()
    if trim_heap is not None:
        trim_heap(0)  # type: ignore[operator]


def rss_mb(pid: int | None = None) -> float:
    """Resident set size of a process (this one by default), MB."""
    return psutil.Process(pid).memory_info().rss / _MB


def vram_mb() -> tuple[float, float]:
    """(allocated, reserved) CUDA memory of this process in MB; zeros when CUDA is not in use."""
    torch = _torch()
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return 0.0, 0.0
    try:
        return torch.cuda.memory_allocated() / _MB, torch.cuda.memory_reserved() / _MB
    except Exception:  # a broken context cannot report; the supervisor still has RSS
        return 0.0, 0.0
