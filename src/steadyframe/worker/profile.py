"""A job's memory profile, measured in the worker: peak RSS and VRAM per stage, and the level after cleanup.

Peaks are exact, not sampled: on Linux the kernel keeps the process's RSS high-water mark (``VmHWM``)
and resets it on request (``/proc/self/clear_refs``), and torch keeps CUDA peaks the same way
(``max_memory_allocated`` / ``reset_peak_memory_stats``). So a stage that allocates a gigabyte for
a few milliseconds and then fails still shows that gigabyte. Elsewhere RSS is read at every step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from steadyframe.worker import memory
from steadyframe.worker.messages import MemoryFigures

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_RESET_PEAK_RSS = "5"  # see proc(5), /proc/pid/clear_refs: "5" resets the peak RSS (VmHWM) only


def _kernel_peak_rss_mb() -> float | None:
    """VmHWM of this process in MB, or None where the kernel does not keep it."""
    try:
        # psutil exposes no high-water mark; /proc is the only source, read by hand.
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_kernel_peak_rss() -> bool:
    """Reset VmHWM to the current RSS -> whether the kernel allowed it."""
    try:
        _CLEAR_REFS.write_text(_RESET_PEAK_RSS)
        return True
    except OSError:
        return False


def _cuda():
    """torch.cuda when this process already uses CUDA, else None (never imports torch)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return None
    return torch.cuda


class PeakMeter:
    """Peak RSS and CUDA memory of this process since the last ``reset()`` (MB)."""

    def __init__(self) -> None:
        self._kernel = _reset_kernel_peak_rss() and _kernel_peak_rss_mb() is not None
        self._observed_rss = 0.0

    def reset(self) -> None:
        if self._kernel:
            self._kernel = _reset_kernel_peak_rss()
        self._observed_rss = memory.rss_mb()
        cuda = _cuda()
        if cuda is not None:
            try:
                cuda.reset_peak_memory_stats()
            except Exception:  # a broken context cannot reset; its peaks still read as zeros
                pass

    def observe(self) -> None:
        """Read RSS now (the fallback where the kernel keeps no peak; free on Linux)."""
        if not self._kernel:
            self._observed_rss = max(self._observed_rss, memory.rss_mb())

    def peak_rss_mb(self) -> float:
        if self._kernel:
            peak = _kernel_peak_rss_mb()
            if peak is not None:
                return peak
        return max(self._observed_rss, memory.rss_mb())

    def peak_vram_mb(self) -> tuple[float, float]:
        """(allocated, reserved) peaks; zeros without CUDA."""
        cuda = _cuda()
        if cuda is None:
            return 0.0, 0.0
        try:
            return cuda.max_memory_allocated() / 2**20, cuda.max_memory_reserved() / 2**20
        except Exception:
            return 0.0, 0.0


@dataclass
class StagePeak:
    """One run of one stage (a stage rerun by the OOM ladder appears once per level)."""

    stage: str
    memory_level: int
    started_at: float  # time.time()
    ended_at: float
    peak_rss_mb: float
    peak_vram_allocated_mb: float
    peak_vram_reserved_mb: float


@dataclass
class AfterCleanup:
    """The worker's memory once the job ended and cleanup ran (what the next job starts from)."""

    at: float
    rss_mb: float
    baseline_rss_mb: float
    vram_allocated_mb: float
    vram_reserved_mb: float


@dataclass
class MemoryProfile:
    """Everything a job's memory did, as it goes into the result, the sidecar and the error."""

    stages: list[StagePeak] = field(default_factory=list)
    after_cleanup: AfterCleanup | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["peak_rss_mb"] = max((s.peak_rss_mb for s in self.stages), default=0.0)
        data["peak_vram_allocated_mb"] = max((s.peak_vram_allocated_mb for s in self.stages), default=0.0)
        data["peak_vram_reserved_mb"] = max((s.peak_vram_reserved_mb for s in self.stages), default=0.0)
        return data


class StageProfiler:
    """Measures each stage the hooks enter, for one job across all its ladder levels.

    ``begin(stage)`` as a stage starts, ``end()`` as it ends (or fails), ``observe()`` at each step,
    ``after_cleanup(figures)`` once the job's memory was given back; ``profile`` holds the result.
    """

    def __init__(self, meter: PeakMeter | None = None, clock: Callable[[], float] = time.time) -> None:
        self._meter = meter or PeakMeter()
        self._clock = clock
        self.memory_level = 0
        self.profile = MemoryProfile()
        self._open: tuple[str, float] | None = None

    def begin(self, stage: str) -> None:
        self.end()
        self._meter.reset()
        self._open = (stage, self._clock())

    def observe(self) -> None:
        if self._open is not None:
            self._meter.observe()

    def end(self) -> None:
        if self._open is None:
            return
        stage, started = self._open
        self._open = None
        allocated, reserved = self._meter.peak_vram_mb()
        self.profile.stages.append(
            StagePeak(
                stage=stage,
                memory_level=self.memory_level,
                started_at=round(started, 3),
                ended_at=round(self._clock(), 3),
                peak_rss_mb=round(self._meter.peak_rss_mb(), 1),
                peak_vram_allocated_mb=round(allocated, 1),
                peak_vram_reserved_mb=round(reserved, 1),
            )
        )

    def after_cleanup(self, figures: MemoryFigures) -> dict[str, Any]:
        """Record the level after cleanup -> the whole profile as a dict."""
        self.end()
        self.profile.after_cleanup = AfterCleanup(
            at=round(self._clock(), 3),
            rss_mb=round(figures.rss_mb, 1),
            baseline_rss_mb=round(figures.baseline_rss_mb, 1),
            vram_allocated_mb=round(figures.vram_allocated_mb, 1),
            vram_reserved_mb=round(figures.vram_reserved_mb, 1),
        )
        return self.profile.to_dict()
