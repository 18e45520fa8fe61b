"""Fault injection: make a named stage fail on purpose (only when the worker allows it).

The ballast is allocated in the firing frame, so it lives exactly as long as the exception's
traceback does: it proves that the worker drops failures before cleaning up.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from steadyframe.spec import FaultSpec
from steadyframe.stages import FaultKind, Stage

_MB = 1024 * 1024

# Held on purpose by the ``leak`` fault: only recycling the worker gives this memory back.
LEAKED: list[Any] = []


def allocate_ballast(megabytes: int, device: str) -> Any:
    """A tensor of ``megabytes`` MB on ``device``, written so every page is resident."""
    if megabytes <= 0:
        return None
    import torch

    ballast = torch.empty(megabytes * _MB, dtype=torch.uint8, device=device)
    ballast.fill_(1)  # touch every page: empty() alone reserves address space, not RSS
    return ballast


class FaultInjector:
    """Fires one ``FaultSpec`` at its stage (or step), memory level and attempt; at most once."""

    def __init__(self, fault: FaultSpec | None, *, memory_level: int, device: str, attempt: int = 0) -> None:
        self.fault = fault
        self.memory_level = memory_level
        self.attempt = attempt
        self.device = device
        self.fired = False

    def _armed(self, stage: Stage) -> bool:
        fault = self.fault
        if fault is None or self.fired or fault.stage != stage:
            return False
        if fault.only_at_attempt is not None and fault.only_at_attempt != self.attempt:
            return False
        return fault.only_at_level is None or fault.only_at_level == self.memory_level

    def at_stage(self, stage: Stage) -> None:
        """Called as ``stage`` begins; fires faults without ``at_step`` (or with at_step 0)."""
        if self._armed(stage) and not self.fault.at_step:  # type: ignore[union-attr]
            self._fire()

    def at_step(self, stage: Stage, step: int) -> None:
        """Called after step ``step`` (1-based) of ``stage``; fires a fault set for that step."""
        if self._armed(stage) and self.fault.at_step == step:  # type: ignore[union-attr]
            self._fire()

    def _fire(self) -> None:
        fault = self.fault
        assert fault is not None
        self.fired = True
        ballast = allocate_ballast(fault.ballast_mb, self.device)
        where = f"injected {fault.kind.value} fault in stage {fault.stage.value}"
        if fault.kind == FaultKind.OOM:
            import torch

            raise torch.OutOfMemoryError(f"out of memory: tried to allocate more than is free ({where})")
        if fault.kind == FaultKind.DEVICE_ERROR:
            raise RuntimeError(f"CUDA error: an illegal memory access was encountered ({where})")
        if fault.kind == FaultKind.ERROR:
            raise RuntimeError(where)
        if fault.kind == FaultKind.CRASH:
            # Die like a native crash: faulthandler dumps the stacks, then the process dies of SIGSEGV.
            os.kill(os.getpid(), signal.SIGSEGV)
            time.sleep(60)  # the signal is delivered asynchronously; never return from a crash
            os._exit(139)
        if fault.kind == FaultKind.HANG:
            while True:  # no progress ever again; the supervisor's stall timeout ends this
                time.sleep(3600)
        if fault.kind == FaultKind.LEAK:
            LEAKED.append(ballast)  # the job goes on; memory stays high until recycling
            return
        raise ValueError(f"unknown fault kind {fault.kind!r}")
