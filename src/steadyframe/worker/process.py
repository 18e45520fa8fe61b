"""The worker process: the only place torch lives. Spawned (never forked) by the supervisor.

``worker_main`` (a local process) and ``worker.ray_actor`` (a Ray actor) both run: ``start_worker``
(set up -> send Ready) -> ``Worker.serve`` (loop { RunJob -> run with the OOM ladder -> JobDone |
JobFailed }). Only the ``Channel`` differs. A listener thread receives CancelJob while a job runs
(and ends the process when the supervisor is gone); a heartbeat thread reports memory.
"""

from __future__ import annotations

import ctypes
import faulthandler
import importlib
import json
import os
import platform
import queue
import signal
import threading
import time
import traceback
from pathlib import Path
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

from steadyframe import oom_kill
from steadyframe.errors import ErrorKind, InvalidInputError
from steadyframe.job_files import discard_job_scratch
from steadyframe.logs import get_logger, log_failure, setup_logging
from steadyframe.settings import Settings
from steadyframe.taxonomy import classify, new_error_id
from steadyframe.worker import memory
from steadyframe.worker.faults import FaultInjector
from steadyframe.worker.hooks import WorkerHooks
from steadyframe.worker.ladder import describe_level, next_level, supported_levels
from steadyframe.worker.messages import (
    CancelJob,
    Heartbeat,
    JobDone,
    JobFailed,
    MemoryFigures,
    Ready,
    RunJob,
    Shutdown,
)
from steadyframe.worker.models import ModelManager
from steadyframe.worker.profile import StageProfiler

HEARTBEAT_S = 1.0
EXIT_PARENT_GONE = 3
DEFAULT_RUNNER = "steadyframe.engine:run_job"
# Failures that say nothing about the loaded models: the next job reuses them.
KEEPS_MODELS = frozenset({ErrorKind.CANCELLED.value, ErrorKind.INVALID_INPUT.value, ErrorKind.MODEL_UNAVAILABLE.value})

# Modules the default runner imports lazily: imported before the empty baseline is measured,
# so their code is not mistaken for a leak after the first job.
DEFAULT_PRELOAD = ("steadyframe.worker.warmup",)
log = get_logger("worker")


@dataclass
class _Failure:
    """A failure turned into text at once: nothing here references the exception or its frames."""

    kind: str
    message: str
    advice: str
    error_id: str
    stage: str | None
    traceback: str
    sticky: bool


def _capture(exc: BaseException, stage: str | None) -> _Failure:
    classified = classify(exc, stage)
    return _Failure(
        kind=classified.kind.value,
        message=classified.message,
        advice=classified.advice,
        error_id=new_error_id(),
        stage=stage,
        traceback="".join(traceback.format_exception(exc)),
        sticky=classified.sticky,
    )


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when the supervising thread goes (no orphans)."""
    if platform.system() != "Linux":
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def last_words_path(logs_dir: Path, worker_id: str, pid: int) -> Path:
    """Where a worker's faulthandler writes its Python stacks on a crash or a stack-dump signal."""
    return Path(logs_dir) / f"last-words-{worker_id}-{pid}.txt"


def _enable_last_words(settings: Settings, worker_id: str) -> None:
    """A native crash (SIGSEGV...) or SIGUSR1 writes every thread's Python stack to a file the
    supervisor reads after the death, so the log says where the worker was."""
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    handle = open(last_words_path(settings.logs_dir, worker_id, os.getpid()), "w")  # noqa: SIM115 - lives as long as the process
    faulthandler.enable(file=handle, all_threads=True)
    faulthandler.register(signal.SIGUSR1, file=handle, all_threads=True, chain=False)


def _thread_lock_for_tqdm() -> None:
    """tqdm (diffusers' progress bars) takes a multiprocessing semaphore by default; a worker that
    is killed cannot release it, so they pile up until the server exits. A thread lock is enough."""
    try:
        from tqdm import tqdm
    except ImportError:
        return
    tqdm.set_lock(threading.RLock())


def _load_runner(path: str, preload: tuple[str, ...]) -> Callable[..., Any]:
    """Import ``module:function`` and the modules in ``preload``; returns the function."""
    module_name, _, attr = path.partition(":")
    runner = getattr(importlib.import_module(module_name), attr)
    for name in preload:
        importlib.import_module(name)
    return runner


def resolve_device(settings: Settings) -> str:
    """The torch device this worker runs on ("cpu", "cuda", "cuda:N", "mps"), by the one rule in
    ``engine.devices``. A device this machine lacks is logged and the worker sizes its memory as
    for the CPU; every job then fails with the resolver's own message."""
    from steadyframe.engine.devices import resolve_device as resolve_device_name

    problem = None
    try:
        return resolve_device_name(settings.device)
    except InvalidInputError as exc:
        problem = exc.message
    log.error("device %r is unusable: %s", settings.device, problem)
    return "cpu"


def _memory_budget_mb(settings: Settings, device: str) -> float:
    if settings.memory_budget_mb:
        return settings.memory_budget_mb
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_properties(torch.device(device)).total_memory / 2**20 * 0.9
    import psutil

    return psutil.virtual_memory().total / 2**20 * 0.5


class Channel(Protocol):
    """The worker's end of its link to the supervisor: a pipe locally, a Ray actor on a cluster.

    ``send`` is called from several threads; ``recv`` (listener thread) blocks for the next
    message. Either ends the process when the supervisor is gone.
    """

    def send(self, message: object) -> None: ...

    def recv(self) -> object: ...


class PipeChannel:
    """The worker's end of the pipe; sends from several threads, exits if the supervisor is gone."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: object) -> None:
        try:
            with self._lock:
                self._conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            os._exit(EXIT_PARENT_GONE)

    def recv(self) -> object:
        try:
            return self._conn.recv()
        except (EOFError, OSError):
            os._exit(EXIT_PARENT_GONE)


class Worker:
    """State of one worker process: its models, the job running now and its cancel flag."""

    def __init__(
        self,
        worker_id: str,
        settings: Settings,
        channel: Channel,
        runner: Callable[..., Any],
        *,
        where: str | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.where = where  # the machine, named in messages that depend on it (a cluster node), or None
        self.settings = settings
        self.channel = channel
        self.runner = runner
        self.device = resolve_device(settings)
        budget = _memory_budget_mb(settings, self.device)
        self.models = ModelManager(
            budget_mb=budget,
            reserve_mb=budget * 0.25,
            keep_alive_s=settings.keep_alive_s,
            release_after_job=settings.release_after_job,
        )
        self.levels = supported_levels(self.device, settings.max_memory_level)
        self.inbox: queue.Queue[object] = queue.Queue()
        self.cancel = threading.Event()
        self.current_job: str | None = None
        self.baseline_rss_mb = 0.0

    # --- memory --------------------------------------------------------------------------

    def figures(self) -> MemoryFigures:
        allocated, reserved = memory.vram_mb()
        return MemoryFigures(
            rss_mb=memory.rss_mb(),
            baseline_rss_mb=self.baseline_rss_mb,
            models_mb=self.models.host_mb(),
            vram_allocated_mb=allocated,
            vram_reserved_mb=reserved,
            loaded_models=tuple(self.models.loaded()),
        )

    def measure_baseline(self) -> None:
        import torch

        torch.ones(64, 64) @ torch.ones(64, 64)  # start torch's thread pool: part of "empty", not a leak
        self.models.cleanup()
        self.baseline_rss_mb = memory.rss_mb()

    # --- threads -------------------------------------------------------------------------

    def listen(self) -> None:
        """Listener thread: cancel acts at once; everything else queues for the main loop."""
        while True:
            message = self.channel.recv()
            if isinstance(message, CancelJob):
                if message.job_id == self.current_job:
                    self.cancel.set()
            else:
                self.inbox.put(message)

    def heartbeat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                figures = self.figures()
            except Exception:  # a reading that races the main thread: skip one beat, never die
                log.debug("memory figures unavailable this beat", exc_info=True)
                continue
            self.channel.send(Heartbeat(memory=figures, busy_job_id=self.current_job))

    # --- jobs ----------------------------------------------------------------------------

    def serve(self) -> None:
        """Main loop until Shutdown: run jobs, expire idle models between them."""
        while True:
            try:
                message = self.inbox.get(timeout=HEARTBEAT_S)
            except queue.Empty:
                self.models.expire_idle()
                continue
            if isinstance(message, Shutdown):
                break
            if isinstance(message, RunJob):
                self.current_job = message.job_id
                self.cancel.clear()
                try:
                    outcome = self.run(message)
                finally:
                    self.current_job = None
                self.channel.send(outcome)
        self.models.unload_all()
        self.models.cleanup()

    def run(self, job: RunJob) -> JobDone | JobFailed:
        """Run one job, stepping down the OOM ladder; never raises, never keeps an exception."""
        out_dir = self.settings.outputs_dir / job.job_id
        stage_seconds: dict[str, float] = {}
        # start where jobs of this shape last succeeded (the store learned it), not at level 0 again
        level = max([lv for lv in self.levels if lv <= job.start_level] or self.levels[:1])
        first_level = level
        profiler = StageProfiler()  # one profile for the job, across its ladder levels
        while True:
            failure: _Failure | None = None
            hooks: WorkerHooks | None = None
            profiler.memory_level = level
            try:
                spec = self._parse(job.spec)
                injector = FaultInjector(spec.fault, memory_level=level, device=self.device, attempt=job.attempt)
                hooks = WorkerHooks(job.job_id, self.channel.send, self.cancel, injector, profiler=profiler)
                result = self.runner(spec, self.settings, out_dir, hooks=hooks, models=self.models, memory_level=level)
                hooks.finish()
            except Exception as exc:  # every failure becomes text here; ``exc`` dies with this block
                stage = hooks.stage.value if hooks is not None and hooks.stage is not None else None
                if hooks is not None:
                    hooks.finish()
                failure = _capture(exc, stage)
            if hooks is not None:
                for name, seconds in hooks.stage_seconds.items():
                    stage_seconds[name] = stage_seconds.get(name, 0.0) + seconds
            if failure is None:
                if level != first_level:
                    log.info("job recovered from out-of-memory by %s", describe_level(level), extra={"job_id": job.job_id})
                self.models.after_job()
                self.models.cleanup()
                figures = self.figures()
                outcome = result.to_dict()
                if first_level:
                    outcome["learned_start_level"] = first_level  # began there: jobs of this shape needed it
                outcome["memory_profile"] = profiler.after_cleanup(figures)
                _add_to_sidecar(outcome.get("sidecar_path"), "memory_profile", outcome["memory_profile"])
                return JobDone(job.job_id, outcome, figures, stage_seconds)
            # Failure: give memory back, then decide (the exception is gone now). Only failures that
            # may have left a model in a bad state or memory short forget the loaded models.
            result = None
            if failure.kind in KEEPS_MODELS:
                self.models.after_job()
            else:
                self.models.unload_all()
            self.models.cleanup()
            following = next_level(level, self.levels)
            if failure.kind == ErrorKind.OUT_OF_MEMORY.value and following is not None:
                log.warning(
                    "out of memory at level %d in %s; retrying with %s",
                    level,
                    failure.stage,
                    describe_level(following),
                    extra={"job_id": job.job_id, "error_id": failure.error_id, "traceback": failure.traceback},
                )
                level = following
                continue
            discard_job_scratch(self.settings.outputs_dir, job.job_id)  # no half-written outputs or checkpoints left
            if failure.kind == ErrorKind.MODEL_UNAVAILABLE.value and self.where:
                failure.message = f"{failure.message.rstrip('.')} (on node {self.where})."  # weights are per node
            if failure.kind != ErrorKind.CANCELLED.value:
                log_failure(
                    log,
                    f"job failed: {failure.message}",
                    job_id=job.job_id,
                    error_id=failure.error_id,
                    kind=failure.kind,
                    stage=failure.stage,
                    traceback=failure.traceback,
                    worker_id=self.worker_id,
                )
            figures = self.figures()
            return JobFailed(
                job_id=job.job_id,
                kind=failure.kind,
                message=failure.message,
                advice=failure.advice,
                error_id=failure.error_id,
                stage=failure.stage,
                traceback=failure.traceback,
                memory=figures,
                recycle=failure.sticky,
                stage_seconds=stage_seconds,
                memory_profile=profiler.after_cleanup(figures),
            )

    def _parse(self, raw: dict[str, Any]) -> Any:
        from pydantic import ValidationError

        from steadyframe.spec import JobSpec

        problem = None
        try:
            spec = JobSpec.model_validate(raw)
        except ValidationError as exc:
            problem = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
        if problem is not None:
            raise InvalidInputError(f"The job spec is not valid: {problem}.")
        if spec.fault is not None and not self.settings.fault_injection:
            raise InvalidInputError("This server does not accept injected faults (fault injection is off).")
        return spec


def _add_to_sidecar(path: str | None, key: str, value: Any) -> None:
    """Add ``key`` to a finished job's ``result.json`` (measured after the engine wrote it)."""
    if not path or not Path(path).is_file():
        return
    from steadyframe.video_io import write_sidecar

    try:
        data = json.loads(Path(path).read_text())
        data[key] = value
        write_sidecar(data, Path(path))
    except (OSError, ValueError):
        log.warning("could not add %s to the sidecar %s", key, path, exc_info=True)


def start_worker(
    channel: Channel,
    worker_id: str,
    settings: Settings,
    runner_path: str = DEFAULT_RUNNER,
    preload: tuple[str, ...] = DEFAULT_PRELOAD,
    *,
    where: str | None = None,
) -> Worker:
    """Everything a worker does before its first job, whatever carries its messages: logging,
    last words, imports (torch), the empty baseline, the listener and heartbeat threads, Ready.
    -> the Worker, whose ``serve()`` the caller runs."""
    setup_logging(
        settings.logs_dir, process_name=f"worker-{worker_id}", level=settings.log_level, to_stderr=settings.log_to_stderr
    )
    _enable_last_words(settings, worker_id)
    _thread_lock_for_tqdm()
    runner = _load_runner(runner_path, preload)  # imports torch (and the engine) before the baseline
    worker = Worker(worker_id, settings, channel, runner, where=where)
    worker.measure_baseline()
    threading.Thread(target=worker.listen, name="listener", daemon=True).start()
    threading.Thread(target=worker.heartbeat, name="heartbeat", daemon=True).start()
    channel.send(
        Ready(
            worker_id=worker_id,
            pid=os.getpid(),
            device=worker.device,
            memory=worker.figures(),
            max_memory_level=worker.levels[-1],
            oom_kills=oom_kill.oom_kill_counts(oom_kill.memory_cgroup()),
        )
    )
    log.info("worker %s ready on %s (baseline RSS %.0f MB)", worker_id, worker.device, worker.baseline_rss_mb)
    return worker


def worker_main(
    conn: Connection,
    worker_id: str,
    settings_json: str,
    gpu_index: int | None,
    runner_path: str = DEFAULT_RUNNER,
    preload: tuple[str, ...] = DEFAULT_PRELOAD,
) -> None:
    """Local process entry point (spawned). Imports torch, reports Ready, serves jobs until Shutdown."""
    _die_with_parent()
    if gpu_index is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_index)  # before torch is imported
    settings = Settings.model_validate_json(settings_json)
    worker = start_worker(PipeChannel(conn), worker_id, settings, runner_path, preload)
    worker.serve()
    log.info("worker %s shutting down", worker_id)
