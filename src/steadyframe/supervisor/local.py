"""Local worker pool: one spawned process per slot, talking over a multiprocessing pipe."""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnProcess

from steadyframe import oom_kill
from steadyframe.logs import get_logger
from steadyframe.settings import Settings
from steadyframe.supervisor.pool import ExitCause, PoolEvent, WorkerExited, WorkerPool, WorkerSlot
from steadyframe.worker.messages import Shutdown, ToWorker
from steadyframe.worker.process import DEFAULT_PRELOAD, DEFAULT_RUNNER, last_words_path, worker_main

log = get_logger("supervisor.pool")
# spawn, never fork: a forked child of a process holding CUDA or torch threads is unsafe.
_CTX = multiprocessing.get_context("spawn")
_DUMP_WAIT_S = 0.3
# Signals a process gets from its own fault (a crash), as opposed to one sent from outside.
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGSYS}


@dataclass
class _Running:
    process: SpawnProcess
    conn: Connection
    exited: bool = False
    killed: bool = False  # we ended it (kill or close)


def describe_exit(exitcode: int | None, *, killed_by_us: bool = False) -> tuple[ExitCause, str]:
    """A POSIX exit status in the pool's words: (cause, "was killed by SIGKILL" / "crashed with SIGSEGV")."""
    if exitcode is None:
        return ExitCause.KILLED, "ended without an exit status"
    if exitcode >= 0:
        return ExitCause.EXITED, "exited normally" if exitcode == 0 else f"exited with code {exitcode}"
    try:
        sig: signal.Signals | None = signal.Signals(-exitcode)
        name = sig.name
    except ValueError:
        sig, name = None, f"signal {-exitcode}"
    if sig in _CRASH_SIGNALS and not killed_by_us:
        return ExitCause.CRASHED, f"crashed with {name}"
    return ExitCause.KILLED, f"was killed by {name}"


class LocalProcessPool(WorkerPool):
    """Workers as local processes. ``runner`` ("module:function") is what runs a job in them;
    ``oom_watch`` reads the kernel's OOM-kill counters (default: this process's cgroup and the system's)."""

    def __init__(
        self,
        settings: Settings,
        slots: list[WorkerSlot],
        *,
        runner: str = DEFAULT_RUNNER,
        preload: tuple[str, ...] | None = None,
        oom_watch: oom_kill.OomKillWatch | None = None,
    ) -> None:
        self._settings_json = settings.model_dump_json()
        self._logs_dir = settings.logs_dir
        host = socket.gethostname()
        self._slots = [slot if slot.node else replace(slot, node=host) for slot in slots]
        self._runner = runner
        self._preload = preload if preload is not None else (DEFAULT_PRELOAD if runner == DEFAULT_RUNNER else ())
        self._running: dict[str, _Running] = {}
        self._wake_reader, self._wake_writer = _CTX.Pipe(duplex=False)
        # Under a memory limit the kernel must kill a worker, never this process; and say so when it does.
        oom_kill.protect_server()
        self._oom_watch = oom_watch if oom_watch is not None else oom_kill.OomKillWatch()

    def slots(self) -> list[WorkerSlot]:
        return list(self._slots)

    def _slot(self, worker_id: str) -> WorkerSlot:
        for slot in self._slots:
            if slot.worker_id == worker_id:
                return slot
        raise KeyError(worker_id)

    def spawn(self, worker_id: str) -> None:
        old = self._running.get(worker_id)
        if old is not None and old.process.is_alive():
            raise RuntimeError(f"worker {worker_id} is still running (pid {old.process.pid})")
        slot = self._slot(worker_id)
        parent_conn, child_conn = _CTX.Pipe(duplex=True)
        process = _CTX.Process(
            target=worker_main,
            args=(child_conn, worker_id, self._settings_json, slot.gpu_index, self._runner, self._preload),
            name=f"steadyframe-worker-{worker_id}",
            daemon=True,
        )
        process.start()
        child_conn.close()  # the child holds its end; closing ours lets EOF reach it when we go
        if process.pid is not None:
            oom_kill.expose_worker(process.pid)
        self._running[worker_id] = _Running(process, parent_conn)
        log.info("spawned worker %s (pid %s)", worker_id, process.pid, extra={"worker_id": worker_id})

    def send(self, worker_id: str, message: ToWorker) -> bool:
        running = self._running.get(worker_id)
        if running is None or running.exited:
            return False
        try:
            running.conn.send(message)
            return True
        except (BrokenPipeError, EOFError, OSError):
            return False

    def interrupt(self) -> None:
        self._wake_writer.send_bytes(b"!")

    def wait(self, timeout: float) -> list[PoolEvent]:
        live = {wid: r for wid, r in self._running.items() if not r.exited}
        waitables: list[object] = [self._wake_reader]
        for running in live.values():
            waitables += [running.conn, running.process.sentinel]
        ready = multiprocessing.connection.wait(waitables, timeout)
        if self._wake_reader in ready:
            while self._wake_reader.poll():
                self._wake_reader.recv_bytes()
        events: list[PoolEvent] = []
        for worker_id, running in live.items():
            # Read what the worker said before looking at whether it died: order matters.
            if running.conn in ready or running.process.sentinel in ready:
                events += self._drain(worker_id, running)
            if running.process.sentinel in ready:
                running.process.join(timeout=5)
                running.exited = True
                running.conn.close()
                events.append(PoolEvent(worker_id, self._exit_event(worker_id, running)))
        return events

    def _exit_event(self, worker_id: str, running: _Running) -> WorkerExited:
        exitcode = running.process.exitcode
        cause, words = describe_exit(exitcode, killed_by_us=running.killed)
        last_words = self._last_words(worker_id, running.process.pid)
        if exitcode == 0:
            last_words = None  # a clean exit has nothing to say
        oom_killed = self._oom_watch.claim()  # asked at every death, so an old kill never explains a new one
        if oom_killed and exitcode == -signal.SIGKILL and not running.killed:
            limit = self._oom_watch.limit_words()
            words = oom_kill.oom_kill_description(limit)
            return WorkerExited(ExitCause.OOM_KILLED, words, last_words, memory_limit=limit)
        return WorkerExited(cause, words, last_words)

    def _drain(self, worker_id: str, running: _Running) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        try:
            while running.conn.poll():
                events.append(PoolEvent(worker_id, running.conn.recv()))
        except (EOFError, OSError):
            pass  # the process is gone or going; its sentinel reports the exit
        return events

    def kill(self, worker_id: str, *, dump_stacks: bool = False) -> None:
        running = self._running.get(worker_id)
        if running is None or running.exited or not running.process.is_alive():
            return  # gone already: its sentinel reports the exit
        running.killed = True
        if dump_stacks and running.process.pid is not None:
            try:
                os.kill(running.process.pid, signal.SIGUSR1)  # faulthandler: every thread's stack to its file
                time.sleep(_DUMP_WAIT_S)  # written from a C signal handler: quick
            except ProcessLookupError:
                return
        running.process.kill()

    def _last_words(self, worker_id: str, pid: int | None) -> str | None:
        """What a dead worker's faulthandler wrote (at a crash or a stack dump); None if nothing."""
        if pid is None:
            return None
        path = last_words_path(self._logs_dir, worker_id, pid)
        try:
            text = path.read_text(errors="replace").strip()
            path.unlink()
        except OSError:
            return None
        return text or None

    def close(self, timeout: float) -> None:
        for worker_id in list(self._running):
            self.send(worker_id, Shutdown())
        deadline = time.monotonic() + timeout
        for worker_id, running in self._running.items():
            running.process.join(max(0.0, deadline - time.monotonic()))
            if running.process.is_alive():
                running.process.kill()
                running.process.join(5)
            running.exited = True
            running.conn.close()
            self._last_words(worker_id, running.process.pid)  # remove the file; nobody reads it now
        self._running.clear()
