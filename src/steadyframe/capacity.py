"""What this machine can give one job: host RAM, GPU memory and free disk, read without torch.

- host RAM: the machine's total (psutil), or the memory cgroup's limit when one is set and lower
  (a container's ``--memory``; read by :mod:`steadyframe.oom_kill`, v2 ``memory.max`` up the tree,
  v1 ``memory.limit_in_bytes``);
- GPU memory: the largest GPU's total, asked of the driver through NVML (nvidia-ml-py); None
  without a driver or a GPU;
- disk: the free space of the file system holding the outputs folder (where a job's frames stream).

``STEADYFRAME_JOB_RAM_LIMIT_MB`` / ``_JOB_VRAM_LIMIT_MB`` / ``_JOB_DISK_LIMIT_MB`` cap each figure
(0 = the machine's). With Ray the workers run on other machines, so only those caps are known.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import psutil

from steadyframe.oom_kill import CGROUP_ROOT, PROC, memory_cgroup
from steadyframe.settings import Settings

_MB = 2**20
DeviceType = Literal["cpu", "cuda", "mps"]
Source = Literal["machine", "cgroup", "setting"]


@dataclass(frozen=True)
class Figure:
    """One capacity in MB and where it came from (for the words of a refusal)."""

    mb: float
    source: Source


@dataclass(frozen=True)
class Capacity:
    """What one job may use; None = not known (nothing is checked against it)."""

    device_type: DeviceType
    ram: Figure | None
    vram: Figure | None
    disk: Figure | None


def host_ram_bytes(
    *, root: Path = CGROUP_ROOT, proc: Path = PROC, total: int | None = None
) -> tuple[int, Literal["machine", "cgroup"]]:
    """The RAM this server's processes may use: min(the machine's total, its memory cgroup's limit).

    ``root``/``proc`` point at the cgroup and proc file systems (tests give fake folders); ``total``
    is the machine's RAM (default psutil's)."""
    machine = psutil.virtual_memory().total if total is None else total
    cgroup = memory_cgroup(root=root, proc=proc)
    limit = cgroup.limit() if cgroup is not None else None
    if limit is not None and limit < machine:
        return limit, "cgroup"
    return machine, "machine"


@lru_cache(maxsize=1)
def largest_gpu_bytes() -> int | None:
    """Total memory of the largest GPU the driver reports; None without NVML or a GPU. A GPU's
    size does not change while the server runs, so the driver is asked once."""
    try:
        import pynvml  # nvidia-ml-py: the driver directly, no CUDA context, no torch

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: a CPU-only machine
        return None
    try:
        sizes = [
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total)
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
        return max(sizes) if sizes else None
    except Exception:
        return None
    finally:
        pynvml.nvmlShutdown()


def free_disk_bytes(folder: Path) -> int:
    """Free bytes on the file system holding ``folder`` (or its nearest existing parent)."""
    probe = Path(folder)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


def device_type(settings: Settings, gpu_count: Callable[[], int] | None = None) -> DeviceType:
    """The kind of device a job's worker runs on, decided without torch: ``auto`` means CUDA when
    the driver sees a GPU (the worker's ``engine.devices.resolve_device`` asks torch the same)."""
    name = settings.device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name == "mps":
        return "mps"
    if name.startswith("cuda"):
        return "cuda"
    if gpu_count is None:
        from steadyframe.supervisor.slots import visible_gpu_count

        gpu_count = visible_gpu_count
    return "cuda" if gpu_count() > 0 else "cpu"


def _capped(machine: Figure | None, limit_mb: float) -> Figure | None:
    if limit_mb <= 0:
        return machine
    if machine is None or limit_mb < machine.mb:
        return Figure(limit_mb, "setting")
    return machine


def machine_capacity(
    settings: Settings,
    *,
    ram: Callable[[], tuple[int, Literal["machine", "cgroup"]]] = host_ram_bytes,
    gpu: Callable[[], int | None] = largest_gpu_bytes,
    disk: Callable[[Path], int] = free_disk_bytes,
    gpu_count: Callable[[], int] | None = None,
) -> Capacity:
    """This machine's figures for one job, capped by the JOB_*_LIMIT_MB settings (readers injectable)."""
    kind = device_type(settings, gpu_count)
    ram_figure = vram_figure = disk_figure = None
    if settings.ray_address is None:  # with Ray, this machine's figures are not the workers'
        ram_bytes, ram_source = ram()
        ram_figure = Figure(ram_bytes / _MB, ram_source)
        gpu_bytes = gpu() if kind == "cuda" else None
        vram_figure = Figure(gpu_bytes / _MB, "machine") if gpu_bytes else None
        disk_figure = Figure(disk(settings.outputs_dir) / _MB, "machine")
    return Capacity(
        device_type=kind,
        ram=_capped(ram_figure, settings.job_ram_limit_mb),
        vram=_capped(vram_figure, settings.job_vram_limit_mb) if kind == "cuda" else None,
        disk=_capped(disk_figure, settings.job_disk_limit_mb),
    )
