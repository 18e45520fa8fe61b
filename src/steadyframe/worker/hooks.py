"""The hooks a worker hands the engine: progress out, cancel in, injected faults, stage timings and peaks."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from steadyframe.errors import JobCancelled
from steadyframe.stages import Stage
from steadyframe.worker.faults import FaultInjector
from steadyframe.worker.messages import Progress
from steadyframe.worker.profile import StageProfiler

# Post-stage frames can be many and fast: at most this many progress messages a second per stage.
_MAX_PROGRESS_PER_S = 10.0


class WorkerHooks:
    """Implements ``contracts.JobHooks`` for one run of one job.

    ``send`` delivers a message to the supervisor; ``cancel`` is set by the listener thread.
    ``stage`` always names the stage running now, so a failure can say where it happened.
    """

    def __init__(
        self,
        job_id: str,
        send: Callable[[Progress], None],
        cancel: threading.Event,
        injector: FaultInjector,
        clock: Callable[[], float] = time.monotonic,
        profiler: StageProfiler | None = None,
    ) -> None:
        self.job_id = job_id
        self._send = send
        self._cancel = cancel
        self._injector = injector
        self._clock = clock
        self._profiler = profiler  # peak memory per stage, when the worker measures it
        self.stage: Stage | None = None
        self._stage_started = 0.0
        self._last_sent = 0.0
        self.stage_seconds: dict[str, float] = {}

    def _check_cancel(self) -> None:
        if self._cancel.is_set():
            raise JobCancelled()

    def _close_stage(self) -> None:
        if self.stage is not None:
            spent = self._clock() - self._stage_started
            self.stage_seconds[self.stage.value] = self.stage_seconds.get(self.stage.value, 0.0) + spent
        if self._profiler is not None:
            self._profiler.end()

    def finish(self) -> None:
        """Record the time of the last stage (call once the engine returned or raised)."""
        self._close_stage()
        self._stage_started = self._clock()  # a second call adds nothing; ``stage`` stays for reports

    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        self._close_stage()
        self.stage = Stage(stage)
        self._stage_started = self._clock()
        if self._profiler is not None:
            self._profiler.begin(self.stage.value)  # before the fault point: its ballast counts
        self._check_cancel()
        self._send(Progress(self.job_id, self.stage.value, 0, total or 0))
        self._last_sent = self._clock()
        self._injector.at_stage(self.stage)

    def step(self, stage: Stage, step: int, total: int) -> None:
        stage = Stage(stage)
        now = self._clock()
        if step >= total or now - self._last_sent >= 1.0 / _MAX_PROGRESS_PER_S or stage == Stage.DENOISE:
            self._send(Progress(self.job_id, stage.value, step, total))
            self._last_sent = now
        if self._profiler is not None:
            self._profiler.observe()
        self._injector.at_step(stage, step)
        self._check_cancel()
