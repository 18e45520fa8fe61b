"""How many workers to run and on which GPU, decided without importing torch."""

from __future__ import annotations

import os

from steadyframe.settings import Settings
from steadyframe.supervisor.pool import WorkerSlot


def visible_gpu_count() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES if set, else NVML's count, else 0."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        import pynvml  # nvidia-ml-py: asks the driver directly, no CUDA context, no torch

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver, no library, no GPU: all mean "CPU only"
        return 0


def default_slots(settings: Settings) -> list[WorkerSlot]:
    """One worker per visible GPU (each pinned to its GPU), one on CPU; ``settings.workers`` overrides."""
    if settings.device == "cpu" or settings.device.startswith("cuda:") or settings.device == "mps":
        count = settings.workers or 1
        return [WorkerSlot(f"w{i}") for i in range(count)]
    gpus = visible_gpu_count() if settings.device in ("auto", "cuda") else 0
    if gpus == 0:
        return [WorkerSlot(f"w{i}") for i in range(settings.workers or 1)]
    count = settings.workers or gpus
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [d.strip() for d in visible.split(",")] if visible else [str(i) for i in range(gpus)]
    # Pin worker i to GPU i (round robin when more workers than GPUs are asked for).
    return [WorkerSlot(f"w{i}", gpu_index=int(ids[i % gpus]) if ids[i % gpus].isdigit() else None) for i in range(count)]
