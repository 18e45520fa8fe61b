"""The dispatcher: one supervising thread that keeps workers alive and jobs moving.

It claims queued jobs for idle workers, relays progress to the store, relays cancel requests,
enforces the job deadline and the no-progress stall timeout, restarts dead workers with backoff
and recycles workers after a sticky device error, a memory excess or N jobs. It holds no torch
and knows no backend: the pool (local processes or Ray actors) starts, messages and ends workers.

Each worker is one small state machine (``WorkerState``); every change goes through
``_transition``, which refuses a change its table does not allow. See docs/architecture.md
"The worker state machine".
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum

from steadyframe.errors import ErrorKind
from steadyframe.jobs.base import JobError, JobStatus, JobStore, memory_shape_key
from steadyframe.job_files import discard_job_scratch
from steadyframe.logs import get_logger, log_failure, setup_logging
from steadyframe.oom_kill import kernel_oom_advice
from steadyframe.settings import Settings
from steadyframe.supervisor import events as ev
from steadyframe.supervisor.pool import ExitCause, PoolEvent, WorkerExited, WorkerPool, WorkerSlot, default_pool
from steadyframe.supervisor.retention import apply_retention
from steadyframe.taxonomy import describe, is_disk_full, new_error_id
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
UNRECORDED_RETRY_S = 2.0  # how often a kept job outcome is offered to a full disk again
STARTUP_TIMEOUT_S = 300.0  # a worker that never says Ready (stuck import, stuck driver) is replaced
STOP_CONFIRM_S = 60.0  # a worker we ended whose exit the pool never reports is taken for gone
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
RETENTION_EVERY_S = 3600.0


class WorkerState(StrEnum):
    ABSENT = "absent"  # no process or actor; nothing started yet (or stopped with the server)
    STARTING = "starting"  # asked the pool to start it; waiting for Ready
    IDLE = "idle"
    BUSY = "busy"  # running ``_Worker.job``
    STOPPING = "stopping"  # we ended it on purpose; waiting for the pool to report its exit
    BACKOFF = "backoff"  # dead; started again at ``restart_at``


_S = WorkerState
# For each state, the states it may be entered from. Anything else is a bug, raised at once.
IDLE_EXIT = "idle"  # the stop reason of a worker that idled past settings.idle_exit_after_s

_ALLOWED_FROM: dict[WorkerState, frozenset[WorkerState]] = {
    _S.STARTING: frozenset({_S.ABSENT, _S.BACKOFF}),
    _S.IDLE: frozenset({_S.STARTING, _S.BUSY}),
    _S.BUSY: frozenset({_S.IDLE}),
    _S.STOPPING: frozenset({_S.STARTING, _S.IDLE, _S.BUSY}),
    _S.BACKOFF: frozenset(WorkerState),  # it died (or could not start) in whatever state it was
    _S.ABSENT: frozenset(WorkerState),  # the server stops (scale-to-zero would stop an IDLE one here)
}


class InvalidTransition(AssertionError):
    """A worker state change the state machine does not allow (a dispatcher bug)."""


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
    node: str = ""


@dataclass
class DispatcherStats:
    """Counters for /metrics: restarts and recycles by reason, stage time sums and counts."""

    restarts: dict[str, int] = field(default_factory=dict)
    recycles: dict[str, int] = field(default_factory=dict)
    jobs_finished: dict[str, int] = field(default_factory=dict)
    stage_seconds_sum: dict[str, float] = field(default_factory=dict)
    stage_seconds_count: dict[str, int] = field(default_factory=dict)
    oom_recoveries: int = 0


@dataclass(frozen=True)
class _Ending:
    """How a job ends once its worker's exit is seen: decided (timeout, forced cancel), not yet written."""

    status: JobStatus  # FAILED (timeout) or CANCELLED
    reason: str  # the stop reason: "deadline", "stall", "cancel"
    detail: str = ""  # user-facing sentence for a timeout
    report: str = ""  # what the supervisor knew when it decided, for the log


@dataclass
class _Job:
    """The job a BUSY worker runs."""

    id: str
    attempt: int
    started: float
    last_progress: float
    stage: str | None = None
    cancel_sent_at: float | None = None
    ending: _Ending | None = None
    cold_start_s: float | None = None  # it woke a parked worker: that start is part of its time
    shape: str = ""  # ``memory_shape_key``: what its learned memory level is filed under
    start_level: int = 0


@dataclass
class _Worker:
    slot: WorkerSlot
    state: WorkerState = WorkerState.ABSENT
    # --- this process / actor (reset on every start) ---
    pid: int | None = None  # as the worker reported it (its own pid on its own machine)
    device: str = ""
    memory: MemoryFigures | None = None
    spawned_at: float = 0.0
    last_heard: float = 0.0  # any message; the worker's heartbeat thread speaks every second
    stop_reason: str | None = None  # why we ended it (STOPPING)
    stop_requested_at: float = 0.0
    job: _Job | None = None
    # --- the slot's life ---
    jobs_done: int = 0
    restarts: int = 0
    starts: int = 0
    crashes_in_a_row: int = 0
    restart_at: float = 0.0
    idle_since: float = 0.0
    ready_at: float = 0.0
    parked: bool = False  # exited after idling (scale to zero): started again when a job waits
    cold_start_s: float | None = None  # a parked worker's start time, owed to the job that woke it

    @property
    def id(self) -> str:
        return self.slot.worker_id


class Dispatcher:
    """Runs jobs from ``store`` on the workers of ``pool`` (default: ``pool.default_pool(settings)``).

    ``on_event`` (and ``subscribe``) receive ``supervisor.events`` dataclasses; see that module.
    """

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        *,
        pool: WorkerPool | None = None,
        on_event: ev.EventCallback | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool if pool is not None else default_pool(settings)
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()  # guards _workers and the counters read by workers()/stats()
        self._stats = DispatcherStats()
        self._restarts: Counter[str] = Counter()
        self._recycles: Counter[str] = Counter()
        self._finished: Counter[str] = Counter()
        self._orphans: dict[str, JobError] = {}  # jobs whose worker was lost while recording failed
        self._unrecorded: dict[str, Callable[[], None]] = {}  # ended jobs the full disk kept out of the store
        self._next_unrecorded_try = 0.0
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._next_retention = 0.0
        self._observers: list[ev.EventCallback] = [on_event] if on_event is not None else []
        self._observers_lock = threading.Lock()
        self._outbox: list[ev.DispatcherEvent] = []  # filled under _lock, delivered after it
        self._reconcile_slots()

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

        A job still running is requeued (not counted as an attempt) so the next start runs it;
        one whose timeout or forced cancel was already decided ends as decided.
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
                job = worker.job
                if job is not None:
                    worker.job = None
                    try:
                        if job.ending is not None:
                            self._write_ending(worker, job, WorkerExited(ExitCause.KILLED, "was stopped with the server"))
                        else:
                            self._requeue_on_stop(job.id)
                    except Exception:
                        log.exception("could not record job %s at stop", job.id)
                self._transition(worker, WorkerState.ABSENT)
        self._publish()

    def wake(self) -> None:
        """A job was queued or a cancel requested: look now instead of at the next tick."""
        self.pool.interrupt()

    def subscribe(self, callback: ev.EventCallback) -> Callable[[], None]:
        """Receive every lifecycle event from now on; returns a function that unsubscribes."""
        with self._observers_lock:
            self._observers.append(callback)

        def unsubscribe() -> None:
            with self._observers_lock:
                if callback in self._observers:
                    self._observers.remove(callback)

        return unsubscribe

    def is_ready(self) -> bool:
        with self._lock:
            # a parked worker (scale to zero) counts: a job submitted now starts it and runs
            return any(w.state in (WorkerState.IDLE, WorkerState.BUSY) or w.parked for w in self._workers.values())

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
            state="parked" if w.parked and w.state == WorkerState.ABSENT else w.state.value,
            pid=w.pid,
            rss_mb=mem.rss_mb if mem else 0.0,
            vram_allocated_mb=mem.vram_allocated_mb if mem else 0.0,
            vram_reserved_mb=mem.vram_reserved_mb if mem else 0.0,
            jobs_done=w.jobs_done,
            restarts=w.restarts,
            loaded_models=list(mem.loaded_models) if mem else [],
            device=w.device,
            job_id=w.job.id if w.job else None,
            baseline_rss_mb=mem.baseline_rss_mb if mem else 0.0,
            node=w.slot.node,
        )

    # --- the state machine ------------------------------------------------------------------

    def _transition(self, worker: _Worker, new: WorkerState, *, stop_reason: str | None = None) -> None:
        """The one place a worker's state changes; refuses changes the table does not allow."""
        old = worker.state
        if old not in _ALLOWED_FROM[new]:
            raise InvalidTransition(f"worker {worker.id}: {old.value} -> {new.value} is not allowed")
        now = time.monotonic()
        if new == WorkerState.STARTING:
            worker.pid, worker.device, worker.memory, worker.job = None, "", None, None
            worker.spawned_at = worker.last_heard = now
            worker.stop_reason = None
        elif new == WorkerState.BUSY:
            assert worker.job is not None, "a busy worker has a job"
        elif new == WorkerState.IDLE:
            assert worker.job is None, "an idle worker has no job"
            worker.idle_since = now
            if old == WorkerState.STARTING:
                worker.ready_at = now
                if worker.parked:
                    worker.parked, worker.cold_start_s = False, now - worker.spawned_at
        elif new == WorkerState.STOPPING:
            worker.stop_reason = stop_reason
            worker.stop_requested_at = now
        elif new in (WorkerState.BACKOFF, WorkerState.ABSENT):
            assert worker.job is None, "a dead worker's job is settled first"
            worker.pid, worker.memory, worker.stop_reason = None, None, None
        worker.state = new

    # --- events to observers ----------------------------------------------------------------

    def _emit(self, event: ev.DispatcherEvent) -> None:
        self._outbox.append(event)

    def _publish(self) -> None:
        """Deliver queued events (dispatcher thread, lock not held); observers cannot hurt us."""
        if not self._outbox:
            return
        pending, self._outbox = self._outbox, []
        with self._observers_lock:
            observers = list(self._observers)
        for event in pending:
            for callback in observers:
                try:
                    callback(event)
                except Exception:
                    log.exception("an event observer failed on %s; ignored", type(event).__name__)

    # --- the supervising thread -------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                events = self.pool.wait(TICK_S)
            except Exception:  # the supervisor must outlive its own bugs and its pool's
                log.exception("worker pool wait failed")
                time.sleep(TICK_S)
                continue
            with self._lock:
                self._guard(None, "reading the pool's workers", self._reconcile_slots)
                for event in events:
                    self._handle_safely(event)
                if not self._stopping.is_set():
                    self._tick(time.monotonic())
            self._publish()

    def _guard(self, worker: _Worker | None, what: str, action: Callable[..., object], *args: object) -> bool:
        """Run ``action``; an exception is logged and swallowed. -> True when it raised."""
        try:
            action(*args)
            return False
        except Exception:
            log.exception(
                "dispatcher error while %s%s", what, f" (worker {worker.id})" if worker else "",
                extra={"worker_id": worker.id if worker else None},
            )  # fmt: skip
            return True

    def _handle_safely(self, event: PoolEvent) -> None:
        """Handle one event; if that raises, leave the worker in a state that moves on (never wedged)."""
        worker = self._workers.get(event.worker_id)
        if worker is None:
            return
        message = event.message
        try:
            self._handle(worker, message)
            return
        except Exception as exc:
            log.exception(
                "dispatcher error while handling %s (worker %s)", type(message).__name__, worker.id,
                extra={"worker_id": worker.id},
            )  # fmt: skip
            failure = exc
        job = worker.job
        if isinstance(message, JobDone | JobFailed) and job is not None and is_disk_full(failure):
            # The job ended and its files are whole; only the store could not take its outcome: keep it.
            worker.job = None
            self._unrecorded[job.id] = self._outcome_writer(message)
            log.warning(
                "job %s ended but the disk is full; its outcome is kept and recorded once space is back", job.id,
                extra={"job_id": job.id},
            )  # fmt: skip
        elif isinstance(message, WorkerExited | JobDone | JobFailed) and job is not None:
            # Its outcome could not be recorded: requeue it (or fail it past max attempts) from the next tick.
            worker.job = None
            detail = "The supervisor could not record how the job ended."
            self._orphans[job.id] = self._supervisor_error(ErrorKind.WORKER_LOST, job.stage, detail, "see the log")
        if isinstance(message, WorkerExited) and worker.state != WorkerState.BACKOFF:
            self._transition(worker, WorkerState.BACKOFF)  # its exit was seen: it must be restarted
            worker.restart_at = time.monotonic() + BACKOFF_FIRST_S
        elif isinstance(message, JobDone | JobFailed) and worker.state == WorkerState.BUSY:
            self._transition(worker, WorkerState.IDLE)

    def _reconcile_slots(self) -> None:
        """Follow the pool's set of workers: new slots get a record, records of gone slots go."""
        current = {slot.worker_id: slot for slot in self.pool.slots()}
        for worker_id, slot in current.items():
            worker = self._workers.get(worker_id)
            if worker is None:
                self._workers[worker_id] = _Worker(slot)
                log.info("worker slot %s on %s", worker_id, slot.node or "this machine")
            elif worker.slot != slot:
                worker.slot = slot
        for worker_id in [w for w in self._workers if w not in current]:
            worker = self._workers[worker_id]
            if worker.state in (WorkerState.ABSENT, WorkerState.BACKOFF):
                del self._workers[worker_id]
                log.info("worker slot %s is gone (its node left)", worker_id)

    def _wants_worker(self, worker: _Worker) -> bool:
        """Whether an ABSENT slot should be started now: always, unless it was parked after idling
        (scale to zero) and no job could run."""
        return not worker.parked or self.store.has_claimable()  # a job waiting for its download needs no worker yet

    def _spawn(self, worker: _Worker) -> None:
        """ABSENT/BACKOFF -> STARTING; a pool that cannot start it -> BACKOFF with the crash delay.

        Called with the lock held; released around the pool call (starting a local process takes a
        moment), so readers see the old state meanwhile."""
        self._lock.release()
        try:
            self.pool.spawn(worker.id)
            failed = False
        except Exception:
            log.exception("could not start worker %s", worker.id, extra={"worker_id": worker.id})
            failed = True
        finally:
            self._lock.acquire()
        if failed:
            self._schedule_restart(worker, "spawn_failed", crashed=True)
            return
        self._transition(worker, WorkerState.STARTING)
        worker.starts += 1
        self._emit(ev.WorkerStarted(worker_id=worker.id, node=worker.slot.node, restart=worker.starts > 1))

    def _handle(self, worker: _Worker, message: object) -> None:
        if worker.state in (WorkerState.ABSENT, WorkerState.BACKOFF):
            log.info("ignored %s from worker %s, which is %s", type(message).__name__, worker.id, worker.state.value)
            return  # a late word from a process already taken for gone
        worker.last_heard = time.monotonic()
        if isinstance(message, Ready):
            if worker.state != WorkerState.STARTING:
                return  # ready too late: we are ending it already
            self._transition(worker, WorkerState.IDLE)
            worker.pid = message.pid
            worker.device = message.device
            self._saw_memory(worker, message.memory)
            log.info("worker %s ready (pid %d, %s, %s)", worker.id, message.pid, message.device, worker.slot.node)
            self._emit(
                ev.WorkerReady(
                    worker_id=worker.id, node=worker.slot.node, device=message.device, pid=message.pid,
                    memory=message.memory,
                )
            )  # fmt: skip
        elif isinstance(message, Heartbeat):
            self._saw_memory(worker, message.memory)
        elif isinstance(message, Progress):
            job = worker.job
            if job is not None and message.job_id == job.id and job.ending is None:
                job.last_progress = time.monotonic()
                if job.stage != message.stage:
                    job.stage = message.stage
                    self._emit(ev.JobStageChanged(worker_id=worker.id, job_id=job.id, stage=message.stage))
                self.store.update_progress(message.job_id, message.stage, message.step, message.total)
        elif isinstance(message, JobDone):
            self._on_done(worker, message)
        elif isinstance(message, JobFailed):
            self._on_failed(worker, message)
        elif isinstance(message, WorkerExited):
            self._on_exit(worker, message)

    def _saw_memory(self, worker: _Worker, memory: MemoryFigures) -> None:
        before = set(worker.memory.loaded_models) if worker.memory else set()
        worker.memory = memory
        after = set(memory.loaded_models)
        for model in sorted(after - before):
            self._emit(ev.ModelLoaded(worker_id=worker.id, model=model))
        for model in sorted(before - after):
            self._emit(ev.ModelUnloaded(worker_id=worker.id, model=model))
        self._emit(ev.MemorySampled(worker_id=worker.id, memory=memory, job_id=worker.job.id if worker.job else None))

    def _record_stages(self, stage_seconds: dict[str, float]) -> None:
        for stage, seconds in stage_seconds.items():
            self._stats.stage_seconds_sum[stage] = self._stats.stage_seconds_sum.get(stage, 0.0) + seconds
            self._stats.stage_seconds_count[stage] = self._stats.stage_seconds_count.get(stage, 0) + 1

    def _current_job(self, worker: _Worker, job_id: str) -> _Job | None:
        """The worker's job if ``job_id`` is it and its end is not already decided by us."""
        job = worker.job
        if job is None or job.id != job_id or job.ending is not None or worker.state != WorkerState.BUSY:
            return None
        return job

    def _end_job(self, worker: _Worker, status: str) -> None:
        self._finished[status] += 1
        worker.job = None
        worker.jobs_done += 1
        worker.crashes_in_a_row = 0
        self._transition(worker, WorkerState.IDLE)

    def _on_done(self, worker: _Worker, message: JobDone) -> None:
        job = self._current_job(worker, message.job_id)
        if job is None:
            return
        result = message.result
        if job.cold_start_s is not None:  # the worker it woke (scale to zero) is part of its time
            result = {**result, "timings": {"worker_start": round(job.cold_start_s, 4), **result.get("timings", {})}}
        self.store.finish_succeeded(message.job_id, result)
        self._saw_memory(worker, message.memory)
        self._record_stages(message.stage_seconds)
        level = int(message.result.get("memory_level", 0) or 0)
        if level > job.start_level:
            self._stats.oom_recoveries += 1
        if level != job.start_level:
            try:
                self.store.learn_level(job.shape, level)  # the next job of this shape starts there
            except Exception:  # a hint for later jobs; never a reason to lose this one's outcome
                log.warning("could not remember memory level %d for %s", level, job.shape, exc_info=True)
        log.info("job %s succeeded on %s", message.job_id, worker.id, extra={"job_id": message.job_id})
        self._end_job(worker, JobStatus.SUCCEEDED.value)
        self._emit(
            ev.JobSucceeded(
                worker_id=worker.id, job_id=message.job_id, memory_level=level, stage_seconds=dict(message.stage_seconds)
            )
        )
        self._maybe_recycle(worker, sticky=False)

    def _on_failed(self, worker: _Worker, message: JobFailed) -> None:
        job = self._current_job(worker, message.job_id)
        if job is None:
            return
        self._saw_memory(worker, message.memory)
        self._record_stages(message.stage_seconds)
        if message.kind == ErrorKind.CANCELLED.value:
            self.store.finish_cancelled(message.job_id)
            log.info("job %s cancelled", message.job_id, extra={"job_id": message.job_id})
            self._end_job(worker, JobStatus.CANCELLED.value)
            self._emit(ev.JobCancelled(worker_id=worker.id, job_id=message.job_id, forced=False))
        else:
            error = JobError(
                kind=message.kind,
                message=message.message,
                advice=message.advice,
                error_id=message.error_id,
                stage=message.stage,
                traceback=message.traceback,
                memory_profile=message.memory_profile,
            )
            # Logged before the store shows the job failed: whoever reads the error id finds its traceback.
            self._log_job_error(worker, job.id, error, f"job failed: {message.message}")
            self.store.finish_failed(message.job_id, error)
            self._end_job(worker, JobStatus.FAILED.value)
            self._emit(
                ev.JobFailed(
                    worker_id=worker.id, job_id=message.job_id, kind=message.kind, error_id=message.error_id,
                    stage=message.stage,
                )
            )  # fmt: skip
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
            self._emit(ev.WorkerRecycled(worker_id=worker.id, reason=reason, excess_mb=excess))
            self._stop(worker, f"recycle:{reason}")

    def _stop(self, worker: _Worker, reason: str, *, dump_stacks: bool = False) -> None:
        """End a live worker on purpose. The pool is asked first: if that raises, nothing changed
        and the next tick asks again. Its exit event then settles the job and the restart."""
        self.pool.kill(worker.id, dump_stacks=dump_stacks)
        self._transition(worker, WorkerState.STOPPING, stop_reason=reason)

    def _on_exit(self, worker: _Worker, exited: WorkerExited) -> None:
        planned = worker.stop_reason
        job = worker.job
        memory = worker.memory
        self._emit(
            ev.WorkerEnded(
                worker_id=worker.id, node=worker.slot.node, cause=exited.cause.value, description=exited.description,
                planned=planned, job_id=job.id if job else None,
            )
        )  # fmt: skip
        for model in sorted(memory.loaded_models if memory else ()):
            self._emit(ev.ModelUnloaded(worker_id=worker.id, model=model))
        if job is not None:
            if job.ending is not None:
                self._write_ending(worker, job, exited)
            else:
                self._job_lost(worker, job, exited)
            worker.job = None
        elif planned is None:
            log.error(
                "worker %s (pid %s, %s) %s while %s; last memory: %s",
                worker.id,
                worker.pid,
                worker.slot.node,
                exited.description,
                worker.state.value,
                self._memory_words(memory),
                extra={"worker_id": worker.id, "traceback": exited.last_words},
            )
        if planned == IDLE_EXIT and job is None:
            self._transition(worker, WorkerState.ABSENT)
            worker.parked = True  # not a restart: started again by the next job (``_wants_worker``)
            return
        worker.restarts += 1
        if planned is not None:
            # A death we caused: restart at once, no backoff.
            key = planned.split(":", 1)[-1] if planned.startswith("recycle:") else planned
            self._restarts[key] += 1
            self._transition(worker, WorkerState.BACKOFF)
            worker.restart_at = time.monotonic()
            self._emit(ev.WorkerRestarting(worker_id=worker.id, reason=planned, delay_s=0.0))
        elif exited.cause == ExitCause.NODE_LOST:
            self._schedule_restart(worker, "node_lost", crashed=False)  # its slot usually goes with the node
        elif exited.cause == ExitCause.OOM_KILLED:
            self._schedule_restart(worker, "oom_killed", crashed=True)
        else:
            self._schedule_restart(worker, "crash", crashed=True)

    def _job_lost(self, worker: _Worker, job: _Job, exited: WorkerExited) -> None:
        """An unplanned death while running: say what we know, requeue or fail the job."""
        if exited.cause == ExitCause.OOM_KILLED:
            self._job_oom_killed(worker, job, exited)
            return
        detail = f"It {exited.description}."
        if exited.cause == ExitCause.KILLED:
            detail += " The system may have run out of RAM."
        report = self._death_report(worker, job, exited)
        error = self._supervisor_error(ErrorKind.WORKER_LOST, job.stage, detail, report)
        self._log_job_error(worker, job.id, error, "worker lost while running job")
        status = self.store.requeue_or_fail(job.id, error, max_attempts=self.settings.max_attempts)
        log.info("job %s is now %s after its worker was lost", job.id, status.value, extra={"job_id": job.id})
        if status.terminal:
            discard_job_scratch(self.settings.outputs_dir, job.id)  # a retry would have resumed from it
            self._finished[status.value] += 1
            self._emit(
                ev.JobFailed(
                    worker_id=worker.id, job_id=job.id, kind=error.kind, error_id=error.error_id, stage=job.stage
                )
            )
        else:
            self._emit(ev.JobRequeued(worker_id=worker.id, job_id=job.id, attempt=job.attempt + 1, error_id=error.error_id))

    def _death_report(self, worker: _Worker, job: _Job, exited: WorkerExited) -> str:
        """What the log keeps of a worker that died under a job: how, where, its memory, its last stacks."""
        report = (
            f"worker {worker.id} (pid {worker.pid}, {worker.slot.node}) {exited.description} during stage "
            f"{job.stage}; last memory: {self._memory_words(worker.memory)}"
        )
        return report + "\n" + exited.last_words if exited.last_words else report

    def _job_oom_killed(self, worker: _Worker, job: _Job, exited: WorkerExited) -> None:
        """The kernel killed the worker for memory: the job fails as out_of_memory, naming the limit.

        Not requeued: at the same memory level it would only be killed again (the ladder's levels
        move weights from the GPU to the host, which needs more host memory, not less)."""
        limit = exited.memory_limit or "the memory available to the server"
        detail = f"The kernel's out-of-memory killer ended its worker at {limit}."
        report = self._death_report(worker, job, exited)
        error = self._supervisor_error(ErrorKind.OUT_OF_MEMORY, job.stage, detail, report)
        error = replace(error, advice=kernel_oom_advice(limit))
        self._log_job_error(worker, job.id, error, "worker killed by the kernel's OOM killer; job failed")
        discard_job_scratch(self.settings.outputs_dir, job.id)
        self.store.finish_failed(job.id, error)
        self._finished[JobStatus.FAILED.value] += 1
        self._emit(ev.JobFailed(worker_id=worker.id, job_id=job.id, kind=error.kind, error_id=error.error_id, stage=job.stage))

    def _write_ending(self, worker: _Worker, job: _Job, exited: WorkerExited) -> None:
        """Record the end we decided before the kill (timeout, forced cancel), with the stacks it left."""
        ending = job.ending
        assert ending is not None
        discard_job_scratch(self.settings.outputs_dir, job.id)
        if ending.status == JobStatus.CANCELLED:
            self.store.finish_cancelled(job.id)
            self._finished[JobStatus.CANCELLED.value] += 1
            self._emit(ev.JobCancelled(worker_id=worker.id, job_id=job.id, forced=True))
            return
        report = ending.report
        if exited.last_words:
            report += "\nPython stacks when it was stopped:\n" + exited.last_words
        error = self._supervisor_error(ErrorKind.TIMEOUT, job.stage, ending.detail, report)
        self._log_job_error(worker, job.id, error, f"job timed out ({ending.reason})")
        self.store.finish_failed(job.id, error)
        self._finished[JobStatus.FAILED.value] += 1
        self._emit(ev.JobFailed(worker_id=worker.id, job_id=job.id, kind=error.kind, error_id=error.error_id, stage=job.stage))

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
        self._transition(worker, WorkerState.BACKOFF)
        worker.restart_at = time.monotonic() + delay
        self._emit(ev.WorkerRestarting(worker_id=worker.id, reason=reason, delay_s=delay))
        log.warning("restarting worker %s in %.1f s (%s)", worker.id, delay, reason, extra={"worker_id": worker.id})

    # --- timers -----------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        """Timers for every worker, then claims for idle ones. One worker's error never stops the rest."""
        for worker in list(self._workers.values()):
            self._guard(worker, f"checking its timers ({worker.state.value})", self._tick_worker, worker, now)
        if self._unrecorded and now >= self._next_unrecorded_try:
            self._next_unrecorded_try = now + UNRECORDED_RETRY_S
            for job_id, write in list(self._unrecorded.items()):
                if not self._guard(None, f"recording the outcome of job {job_id}", write):
                    del self._unrecorded[job_id]
                    log.info("recorded the kept outcome of job %s", job_id, extra={"job_id": job_id})
        for job_id in list(self._orphans):
            self._guard(None, f"requeueing orphaned job {job_id}", self._requeue_orphan, job_id)
        for worker in list(self._workers.values()):
            if worker.state == WorkerState.IDLE:
                self._guard(worker, "claiming a job", self._claim, worker, now)
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_EVERY_S
            self._guard(None, "applying retention", apply_retention, self.store, self.settings)

    def _tick_worker(self, worker: _Worker, now: float) -> None:
        state = worker.state
        if (state == WorkerState.BACKOFF and now >= worker.restart_at) or (
            state == WorkerState.ABSENT and self._wants_worker(worker)
        ):
            self._spawn(worker)
        elif state == WorkerState.STARTING and now - worker.spawned_at > STARTUP_TIMEOUT_S:
            log.error("worker %s never became ready; replacing it", worker.id, extra={"worker_id": worker.id})
            self._stop(worker, "startup")
        elif state == WorkerState.BUSY:
            self._watch_job(worker, now)
        elif state == WorkerState.IDLE and now - worker.last_heard > self.settings.worker_silence_timeout_s:
            # Busy workers are judged by job progress (stall timeout); an idle one only by its heartbeat.
            log.error(
                "worker %s sent nothing for %.0f s while idle (frozen?); replacing it",
                worker.id,
                now - worker.last_heard,
                extra={"worker_id": worker.id},
            )
            self._stop(worker, "silent", dump_stacks=True)
        elif state == WorkerState.IDLE and self._idle_too_long(worker, now):
            log.info(
                "worker %s idle for %.0f s: stopping it (scale to zero; the next job starts one)",
                worker.id,
                now - worker.idle_since,
                extra={"worker_id": worker.id},
            )
            self._stop(worker, IDLE_EXIT)
        elif state == WorkerState.STOPPING and now - worker.stop_requested_at > STOP_CONFIRM_S:
            log.error(
                "worker %s did not confirm its end within %.0f s; taking it for gone",
                worker.id,
                STOP_CONFIRM_S,
                extra={"worker_id": worker.id},
            )
            self._on_exit(worker, WorkerExited(ExitCause.KILLED, f"did not confirm its end within {STOP_CONFIRM_S:.0f} s"))

    def _idle_too_long(self, worker: _Worker, now: float) -> bool:
        limit = self.settings.idle_exit_after_s
        return limit > 0 and now - worker.idle_since > limit and not self.store.has_claimable()

    def _outcome_writer(self, message: JobDone | JobFailed) -> Callable[[], None]:
        """A retry of the store write that records ``message``'s outcome (used while the disk is full)."""
        if isinstance(message, JobDone):
            return lambda: self.store.finish_succeeded(message.job_id, message.result)
        if message.kind == ErrorKind.CANCELLED.value:
            return lambda: self.store.finish_cancelled(message.job_id)
        error = JobError(
            kind=message.kind, message=message.message, advice=message.advice, error_id=message.error_id,
            stage=message.stage, traceback=message.traceback,
        )  # fmt: skip
        return lambda: self.store.finish_failed(message.job_id, error)

    def _requeue_orphan(self, job_id: str) -> None:
        error = self._orphans[job_id]
        try:
            status = self.store.requeue_or_fail(job_id, error, max_attempts=self.settings.max_attempts)
        except KeyError:  # deleted meanwhile
            status = None
        del self._orphans[job_id]
        log.warning("orphaned job %s is now %s", job_id, status.value if status else "gone", extra={"job_id": job_id})

    def _claim(self, worker: _Worker, now: float) -> None:
        job = self.store.claim_next(worker.id)
        if job is None:
            return
        shape = memory_shape_key(job.spec, worker.device)
        start_level = self.store.learned_level(shape) or 0
        worker.job = _Job(
            id=job.id, attempt=job.attempt, started=now, last_progress=now, cold_start_s=worker.cold_start_s,
            shape=shape, start_level=start_level,
        )  # fmt: skip
        worker.cold_start_s = None
        self._transition(worker, WorkerState.BUSY)
        log.info("job %s started on %s (attempt %d)", job.id, worker.id, job.attempt + 1, extra={"job_id": job.id})
        self._emit(ev.JobStarted(worker_id=worker.id, job_id=job.id, attempt=job.attempt))
        if not self.pool.send(worker.id, RunJob(job.id, job.spec, job.attempt, start_level)):
            log.warning("worker %s gone before it got job %s", worker.id, job.id)  # its exit event requeues it

    def _watch_job(self, worker: _Worker, now: float) -> None:
        job = worker.job
        assert job is not None
        if job.ending is not None:  # decided, but the kill did not go through last time: ask again
            self._stop(worker, job.ending.reason, dump_stacks=job.ending.status == JobStatus.FAILED)
            return
        record = self.store.get(job.id)
        if record is not None and record.cancel_requested:
            if job.cancel_sent_at is None:
                job.cancel_sent_at = now
                self.pool.send(worker.id, CancelJob(job.id))
                log.info("cancel sent to %s for job %s", worker.id, job.id, extra={"job_id": job.id})
            elif now - job.cancel_sent_at > self.settings.cancel_grace_s:
                log.warning("job %s did not stop within the cancel grace period; killing its worker", job.id)
                job.ending = _Ending(JobStatus.CANCELLED, "cancel")
                self._stop(worker, "cancel")
            return
        if now - job.started > self.settings.job_deadline_s:
            self._time_out(worker, job, f"It ran past the {self.settings.job_deadline_s:.0f} s deadline.", "deadline")
        elif now - job.last_progress > self.settings.stall_timeout_s:
            self._time_out(worker, job, f"It made no progress for {self.settings.stall_timeout_s:.0f} s.", "stall")

    def _supervisor_error(self, kind: ErrorKind, stage: str | None, detail: str, report: str) -> JobError:
        """A failure seen from outside the worker (death, timeout): user text from the taxonomy,
        ``report`` (what the supervisor knows, the worker's last stacks) kept for the log."""
        described = describe(kind, stage, detail)
        return JobError(
            kind=kind.value,
            message=described.message,
            advice=described.advice,
            error_id=new_error_id(),
            stage=stage,
            traceback=report,
        )

    @staticmethod
    def _log_job_error(worker: _Worker, job_id: str, error: JobError, message: str) -> None:
        log_failure(
            log,
            message,
            job_id=job_id,
            error_id=error.error_id,
            kind=error.kind,
            stage=error.stage,
            traceback=error.traceback,
            worker_id=worker.id,
        )

    def _time_out(self, worker: _Worker, job: _Job, detail: str, reason: str) -> None:
        """Decide the timeout now; it is written when the worker's exit (with its stacks) arrives."""
        report = (
            f"worker {worker.id} (pid {worker.pid}, {worker.slot.node}) killed: {reason} in stage {job.stage}; "
            f"last memory: {self._memory_words(worker.memory)}"
        )
        job.ending = _Ending(JobStatus.FAILED, reason, detail, report)
        self._stop(worker, reason, dump_stacks=True)  # asks for its stacks first, so the report says where it hung

    def _requeue_on_stop(self, job_id: str) -> None:
        """Server shutdown is not the job's fault: back to queued without spending an attempt."""
        try:
            status = self.store.return_to_queue(job_id)
        except KeyError:  # deleted meanwhile: nothing to put back
            return
        log.info("server stopping: job %s left %s", job_id, status.value, extra={"job_id": job_id})
