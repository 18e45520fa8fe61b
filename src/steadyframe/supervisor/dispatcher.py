"""The dispatcher: one supervising thread that keeps workers alive and jobs moving.

It claims queued jobs for idle workers, relays progress to the store, relays cancel requests,
enforces the job deadline and the no-progress stall timeout, restarts dead workers with backoff
and recycles workers after a sticky device error, a memory excess or N jobs. It holds no torch.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum

from steadyframe.errors import ErrorKind
from steadyframe.jobs.base import JobError, JobStatus, JobStore
from steadyframe.logs import get_logger, log_failure, setup_logging
from steadyframe.settings import Settings
from steadyframe.supervisor.pool import PoolEvent, WorkerExited, WorkerPool, WorkerSlot
from steadyframe.supervisor.retention import apply_retention
from steadyframe.taxonomy import describe, new_error_id
from steadyframe.worker.messages import (
    CancelJob,
    Heartbeat,
    JobDone,
    JobFailed,
    MemoryFigures,
    Progress,
    Ready,
    RunJob,
)

log = get_logger("supervisor")

TICK_S = 0.5  # how often timers are checked when nothing happens
STARTUP_TIMEOUT_S = 300.0  # a worker that never says Ready (stuck import, stuck driver) is replaced
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
RETENTION_EVERY_S = 3600.0


class WorkerState(StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    STOPPING = "stopping"  # killed on purpose, exit not seen yet
    BACKOFF = "backoff"  # dead, waiting to be restarted


@dataclass
class WorkerInfo:
    """What the API and /metrics show about one worker."""

    id: str
    state: str
    pid: int | None
    rss_mb: float
    vram_allocated_mb: float
    vram_reserved_mb: float
    jobs_done: int
    restarts: int
    loaded_models: list[str]
    device: str = ""
    job_id: str | None = None
    baseline_rss_mb: float = 0.0


@dataclass
class DispatcherStats:
    """Counters for /metrics: restarts and recycles by reason, stage time sums and counts."""

    restarts: dict[str, int] = field(default_factory=dict)
    recycles: dict[str, int] = field(default_factory=dict)
    jobs_finished: dict[str, int] = field(default_factory=dict)
    stage_seconds_sum: dict[str, float] = field(default_factory=dict)
    stage_seconds_count: dict[str, int] = field(default_factory=dict)
    oom_recoveries: int = 0


@dataclass
class _Worker:
    slot: WorkerSlot
    state: WorkerState = WorkerState.BACKOFF
    pid: int | None = None
    device: str = ""
    memory: MemoryFigures | None = None
    jobs_done: int = 0
    restarts: int = 0
    crashes_in_a_row: int = 0
    spawned_at: float = 0.0
    last_heard: float = 0.0  # any message; the worker's heartbeat thread speaks every second
    restart_at: float = 0.0
    exit_reason: str | None = None  # why we killed it, when we did
    job_id: str | None = None
    job_started: float = 0.0
    last_progress: float = 0.0
    stage: str | None = None
    cancel_sent_at: float | None = None

    @property
    def id(self) -> str:
        return self.slot.worker_id


class Dispatcher:
    """Runs jobs from ``store`` on the workers of ``pool`` (default: local processes)."""

    def __init__(self, settings: Settings, store: JobStore, *, pool: WorkerPool | None = None) -> None:
        self.settings = settings
        self.store = store
        if pool is None:
            from steadyframe.supervisor.local import LocalProcessPool
            from steadyframe.supervisor.slots import default_slots

            pool = LocalProcessPool(settings, default_slots(settings))
        self.pool = pool
        self._workers = {slot.worker_id: _Worker(slot) for slot in pool.slots()}
        self._lock = threading.Lock()  # guards _workers fields read by workers()/stats()
        self._stats = DispatcherStats()
        self._restarts: Counter[str] = Counter()
        self._recycles: Counter[str] = Counter()
        self._finished: Counter[str] = Counter()
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._next_retention = 0.0

    # --- public API -------------------------------------------------------------------------

    def start(self) -> None:
        """Recover jobs left running, then start the supervising thread (which spawns workers)."""
        if self._thread is not None:
            return
        self.settings.ensure_dirs()
        setup_logging(
            self.settings.logs_dir,
            process_name="server",
            level=self.settings.log_level,
            to_stderr=self.settings.log_to_stderr,
        )
        recovered = self.store.recover_running(max_attempts=self.settings.max_attempts)
        if recovered:
            log.warning("recovered %d job(s) left running by a previous server: %s", len(recovered), recovered)
        self._thread = threading.Thread(target=self._run, name="steadyframe-dispatcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the thread and every worker (politely, then by kill). Idempotent.

        A job still running is requeued (not counted as an attempt) so the next start runs it.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self.pool.interrupt()
        if self._thread is not None:
            self._thread.join(timeout)
        self.pool.close(timeout=min(timeout, 10.0))
        with self._lock:
            for worker in self._workers.values():
                if worker.job_id is not None:
                    self._requeue_on_stop(worker.job_id)
                    worker.job_id = None
                worker.state = WorkerState.BACKOFF
                worker.pid = None

    def wake(self) -> None:
        """A job was queued or a cancel requested: look now instead of at the next tick."""
        self.pool.interrupt()

    def is_ready(self) -> bool:
        with self._lock:
            return any(w.state in (WorkerState.IDLE, WorkerState.BUSY) for w in self._workers.values())

    def workers(self) -> list[WorkerInfo]:
        with self._lock:
            return [self._info(w) for w in self._workers.values()]

    def stats(self) -> DispatcherStats:
        with self._lock:
            return DispatcherStats(
                restarts=dict(self._restarts),
                recycles=dict(self._recycles),
                jobs_finished=dict(self._finished),
                stage_seconds_sum=dict(self._stats.stage_seconds_sum),
                stage_seconds_count=dict(self._stats.stage_seconds_count),
                oom_recoveries=self._stats.oom_recoveries,
            )

    @staticmethod
    def _info(w: _Worker) -> WorkerInfo:
        mem = w.memory
        return WorkerInfo(
            id=w.id,
            state=w.state.value,
            pid=w.pid,
            rss_mb=mem.rss_mb if mem else 0.0,
            vram_allocated_mb=mem.vram_allocated_mb if mem else 0.0,
            vram_reserved_mb=mem.vram_reserved_mb if mem else 0.0,
            jobs_done=w.jobs_done,
            restarts=w.restarts,
            loaded_models=list(mem.loaded_models) if mem else [],
            device=w.device,
            job_id=w.job_id,
            baseline_rss_mb=mem.baseline_rss_mb if mem else 0.0,
        )

    # --- the supervising thread -------------------------------------------------------------

    def _run(self) -> None:
        for worker in self._workers.values():
            self._spawn(worker)
        while not self._stopping.is_set():
            try:
                events = self.pool.wait(TICK_S)
                with self._lock:
                    for event in events:
                        self._handle(event)
                    if self._stopping.is_set():
                        break
                    self._tick(time.monotonic())
            except Exception:  # the supervisor must outlive its own bugs; log and go on
                log.exception("dispatcher loop error")
                time.sleep(TICK_S)

    def _spawn(self, worker: _Worker) -> None:
        try:
            pid = self.pool.spawn(worker.id)
        except Exception:
            log.exception("could not start worker %s", worker.id, extra={"worker_id": worker.id})
            self._schedule_restart(worker, "spawn_failed", crashed=True)
            return
        with self._lock:
            worker.pid = pid
            worker.state = WorkerState.STARTING
            worker.spawned_at = worker.last_heard = time.monotonic()
            worker.memory = None
            worker.exit_reason = None

    def _handle(self, event: PoolEvent) -> None:
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return
        message = event.message
        worker.last_heard = time.monotonic()
        if isinstance(message, Ready):
            worker.state = WorkerState.IDLE
            worker.pid = message.pid
            worker.device = message.device
            worker.memory = message.memory
            log.info("worker %s ready (pid %d, %s)", worker.id, message.pid, message.device)
        elif isinstance(message, Heartbeat):
            worker.memory = message.memory
        elif isinstance(message, Progress):
            if message.job_id == worker.job_id:
                worker.last_progress = time.monotonic()
                worker.stage = message.stage
                self.store.update_progress(message.job_id, message.stage, message.step, message.total)
        elif isinstance(message, JobDone):
            self._on_done(worker, message)
        elif isinstance(message, JobFailed):
            self._on_failed(worker, message)
        elif isinstance(message, WorkerExited):
            self._on_exit(worker, message)

    def _record_stages(self, stage_seconds: dict[str, float]) -> None:
        for stage, seconds in stage_seconds.items():
            self._stats.stage_seconds_sum[stage] = self._stats.stage_seconds_sum.get(stage, 0.0) + seconds
            self._stats.stage_seconds_count[stage] = self._stats.stage_seconds_count.get(stage, 0) + 1

    def _end_job(self, worker: _Worker, status: str) -> None:
        self._finished[status] += 1
        worker.job_id = None
        worker.stage = None
        worker.cancel_sent_at = None
        worker.jobs_done += 1
        worker.crashes_in_a_row = 0
        worker.state = WorkerState.IDLE

    def _on_done(self, worker: _Worker, message: JobDone) -> None:
        if message.job_id != worker.job_id:
            return
        self.store.finish_succeeded(message.job_id, message.result)
        worker.memory = message.memory
        self._record_stages(message.stage_seconds)
        if message.result.get("memory_level", 0):
            self._stats.oom_recoveries += 1
        log.info("job %s succeeded on %s", message.job_id, worker.id, extra={"job_id": message.job_id})
        self._end_job(worker, JobStatus.SUCCEEDED.value)
        self._maybe_recycle(worker, sticky=False)

    def _on_failed(self, worker: _Worker, message: JobFailed) -> None:
        if message.job_id != worker.job_id:
            return
        worker.memory = message.memory
        self._record_stages(message.stage_seconds)
        if message.kind == ErrorKind.CANCELLED.value:
            self.store.finish_cancelled(message.job_id)
            log.info("job %s cancelled", message.job_id, extra={"job_id": message.job_id})
            self._end_job(worker, JobStatus.CANCELLED.value)
        else:
            error = JobError(
                kind=message.kind,
                message=message.message,
                advice=message.advice,
                error_id=message.error_id,
                stage=message.stage,
                traceback=message.traceback,
            )
            self.store.finish_failed(message.job_id, error)
            self._log_job_error(worker, error, f"job failed: {message.message}")
            self._end_job(worker, JobStatus.FAILED.value)
        self._maybe_recycle(worker, sticky=message.recycle)

    def _maybe_recycle(self, worker: _Worker, *, sticky: bool) -> None:
        """After a job: recycle on a sticky error, on memory not coming back, or after N jobs."""
        reason = None
        excess = worker.memory.excess_mb if worker.memory else 0.0
        if sticky:
            reason = "device_error"
        elif excess > self.settings.rss_tolerance_mb:
            reason = "memory"
        elif self.settings.recycle_after_jobs and worker.jobs_done % self.settings.recycle_after_jobs == 0:
            reason = "jobs"
        if reason is not None:
            log.warning(
                "recycling worker %s (%s; RSS %.0f MB above its empty baseline)",
                worker.id,
                reason,
                excess,
                extra={"worker_id": worker.id},
            )
            self._recycles[reason] += 1
            self._kill(worker, f"recycle:{reason}")

    def _kill(self, worker: _Worker, reason: str, *, dump_stacks: bool = False) -> None:
        worker.exit_reason = reason
        worker.state = WorkerState.STOPPING
        self.pool.kill(worker.id, dump_stacks=dump_stacks)

    def _on_exit(self, worker: _Worker, exited: WorkerExited) -> None:
        reason = worker.exit_reason
        memory = worker.memory
        if worker.job_id is not None:
            # An unplanned death while running: say what we know, requeue or fail the job.
            detail = f"It was {exited.describe()}."
            if exited.signal_name == "SIGKILL":
                detail += " The system may have run out of RAM."
            report = (
                f"worker {worker.id} (pid {worker.pid}) {exited.describe()} during stage {worker.stage}; "
                f"last memory: {self._memory_words(memory)}"
            )
            last_words = self.pool.last_words(worker.id, worker.pid)
            if last_words:
                report += "\n" + last_words
            error = self._supervisor_error(ErrorKind.WORKER_LOST, worker, detail, report)
            status = self.store.requeue_or_fail(worker.job_id, error, max_attempts=self.settings.max_attempts)
            self._log_job_error(worker, error, f"worker lost while running job; job is now {status.value}")
            if status.terminal:
                self._finished[status.value] += 1
            worker.job_id = None
            worker.stage = None
            worker.cancel_sent_at = None
        elif reason is None:
            log.error(
                "worker %s (pid %s) %s while %s; last memory: %s",
                worker.id,
                worker.pid,
                exited.describe(),
                worker.state.value,
                self._memory_words(memory),
                extra={"worker_id": worker.id, "traceback": self.pool.last_words(worker.id, worker.pid)},
            )
        else:
            self.pool.last_words(worker.id, worker.pid)  # a death we caused: its file was read or is noise
        worker.pid = None
        worker.restarts += 1
        if reason is not None:
            # A death we caused: restart at once, no backoff.
            self._restarts[reason.split(":", 1)[-1] if reason.startswith("recycle:") else reason] += 1
            worker.state = WorkerState.BACKOFF
            worker.restart_at = time.monotonic()
            worker.exit_reason = None
        else:
            self._schedule_restart(worker, "crash", crashed=True)

    @staticmethod
    def _memory_words(memory: MemoryFigures | None) -> str:
        if memory is None:
            return "unknown"
        return (
            f"RSS {memory.rss_mb:.0f} MB (empty baseline {memory.baseline_rss_mb:.0f} MB), "
            f"VRAM allocated {memory.vram_allocated_mb:.0f} MB, reserved {memory.vram_reserved_mb:.0f} MB"
        )

    def _schedule_restart(self, worker: _Worker, reason: str, *, crashed: bool) -> None:
        """Restart after a growing delay when a worker keeps dying (0.5 s, 1 s, 2 s ... 30 s)."""
        self._restarts[reason] += 1
        worker.crashes_in_a_row += 1 if crashed else 0
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** max(0, worker.crashes_in_a_row - 1))
        worker.state = WorkerState.BACKOFF
        worker.restart_at = time.monotonic() + delay
        worker.pid = None
        log.warning("restarting worker %s in %.1f s (%s)", worker.id, delay, reason, extra={"worker_id": worker.id})

    # --- timers -----------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        for worker in self._workers.values():
            if worker.state == WorkerState.BACKOFF and now >= worker.restart_at:
                self._lock.release()  # spawning takes a moment; let readers in meanwhile
                try:
                    self._spawn(worker)
                finally:
                    self._lock.acquire()
            elif worker.state == WorkerState.STARTING and now - worker.spawned_at > STARTUP_TIMEOUT_S:
                log.error("worker %s never became ready; replacing it", worker.id, extra={"worker_id": worker.id})
                self._kill(worker, "startup")
            elif worker.state == WorkerState.BUSY:
                self._watch_job(worker, now)
            elif worker.state == WorkerState.IDLE and now - worker.last_heard > self.settings.worker_silence_timeout_s:
                # Busy workers are judged by job progress (stall timeout); an idle one only by its heartbeat.
                log.error(
                    "worker %s sent nothing for %.0f s while idle (frozen?); replacing it",
                    worker.id,
                    now - worker.last_heard,
                    extra={"worker_id": worker.id},
                )
                self._kill(worker, "silent", dump_stacks=True)
        for worker in self._workers.values():
            if worker.state == WorkerState.IDLE:
                self._claim(worker, now)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            try:
                apply_retention(self.store, self.settings)
            except Exception:
                log.exception("retention pass failed")

    def _claim(self, worker: _Worker, now: float) -> None:
        job = self.store.claim_next(worker.id)
        if job is None:
            return
        worker.job_id = job.id
        worker.job_started = now
        worker.last_progress = now
        worker.stage = None
        worker.cancel_sent_at = None
        worker.state = WorkerState.BUSY
        log.info("job %s started on %s (attempt %d)", job.id, worker.id, job.attempt + 1, extra={"job_id": job.id})
        if not self.pool.send(worker.id, RunJob(job.id, job.spec, job.attempt)):
            log.warning("worker %s gone before it got job %s", worker.id, job.id)  # its exit event requeues it

    def _watch_job(self, worker: _Worker, now: float) -> None:
        assert worker.job_id is not None
        job_id = worker.job_id
        record = self.store.get(job_id)
        if record is not None and record.cancel_requested:
            if worker.cancel_sent_at is None:
                worker.cancel_sent_at = now
                self.pool.send(worker.id, CancelJob(job_id))
                log.info("cancel sent to %s for job %s", worker.id, job_id, extra={"job_id": job_id})
            elif now - worker.cancel_sent_at > self.settings.cancel_grace_s:
                log.warning("job %s did not stop within the cancel grace period; killing its worker", job_id)
                self.store.finish_cancelled(job_id)
                self._finished[JobStatus.CANCELLED.value] += 1
                self._detach_job(worker)
                self._kill(worker, "cancel")
            return
        if now - worker.job_started > self.settings.job_deadline_s:
            self._time_out(worker, f"It ran past the {self.settings.job_deadline_s:.0f} s deadline.", "deadline")
        elif now - worker.last_progress > self.settings.stall_timeout_s:
            self._time_out(worker, f"It made no progress for {self.settings.stall_timeout_s:.0f} s.", "stall")

    @staticmethod
    def _supervisor_error(kind: ErrorKind, worker: _Worker, detail: str, report: str) -> JobError:
        """A failure seen from outside the worker (death, timeout): user text from the taxonomy,
        ``report`` (what the supervisor knows, the worker's last stacks) kept for the log."""
        described = describe(kind, worker.stage, detail)
        return JobError(
            kind=kind.value,
            message=described.message,
            advice=described.advice,
            error_id=new_error_id(),
            stage=worker.stage,
            traceback=report,
        )

    @staticmethod
    def _log_job_error(worker: _Worker, error: JobError, message: str) -> None:
        log_failure(
            log,
            message,
            job_id=worker.job_id,
            error_id=error.error_id,
            kind=error.kind,
            stage=error.stage,
            traceback=error.traceback,
            worker_id=worker.id,
        )

    def _time_out(self, worker: _Worker, detail: str, reason: str) -> None:
        assert worker.job_id is not None
        pid = worker.pid
        self._kill(worker, reason, dump_stacks=True)  # first, so the report can say where it hung
        report = f"worker {worker.id} (pid {pid}) killed: {reason} in stage {worker.stage}; " + (
            f"last memory: {self._memory_words(worker.memory)}"
        )
        stacks = self.pool.last_words(worker.id, pid)
        if stacks:
            report += "\nPython stacks when it was stopped:\n" + stacks
        error = self._supervisor_error(ErrorKind.TIMEOUT, worker, detail, report)
        self.store.finish_failed(worker.job_id, error)
        self._log_job_error(worker, error, f"job timed out ({reason})")
        self._finished[JobStatus.FAILED.value] += 1
        self._detach_job(worker)

    @staticmethod
    def _detach_job(worker: _Worker) -> None:
        worker.job_id = None
        worker.stage = None
        worker.cancel_sent_at = None

    def _requeue_on_stop(self, job_id: str) -> None:
        """Server shutdown is not the job's fault: back to queued without spending an attempt."""
        try:
            status = self.store.return_to_queue(job_id)
        except KeyError:  # deleted meanwhile: nothing to put back
            return
        log.info("server stopping: job %s left %s", job_id, status.value, extra={"job_id": job_id})
