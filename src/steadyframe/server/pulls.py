"""The pull manager: downloads catalog models in the server process, one pull per model at a time.

Pulls run in threads of the server (``huggingface_hub``, no torch), never in a worker and never
under a job's stall timeout. Jobs for a model being pulled wait in the queue (``waiting_for``);
when its pull finishes they are released to the workers, when it fails they fail with the pull
command in their advice. At server start, pulls that were interrupted (a folder with a pull
marker) and pulls that waiting jobs need continue from the bytes on disk.
"""

from __future__ import annotations

import shutil
import threading
import time
import traceback
from collections.abc import Callable

from filelock import Timeout
from dataclasses import dataclass, replace
from typing import Literal

from steadyframe.catalog import CatalogEntry, CatalogConfigError, catalog, entry_state
from steadyframe.errors import ErrorKind, SteadyframeError
from steadyframe.jobs.base import JobError, JobStore
from steadyframe.logs import get_logger, log_failure
from steadyframe.model_files import PULL_MARKER, repo_folder
from steadyframe.families import builtin_dir
from steadyframe.pull import PullCancelled, PullFailed, PullPlan, folder_lock, is_offline, pull_repo
from steadyframe.settings import Settings
from steadyframe.taxonomy import new_error_id

log = get_logger("server.pulls")
PullStateName = Literal["downloading", "done", "failed", "cancelled"]
# How long a pull request waits for the hub's file list and the disk check before answering.
PLAN_WAIT_S = 30.0


class CannotDelete(SteadyframeError):
    """This model's files are not the server's to delete, or are busy; the message says why."""

    kind = ErrorKind.MODEL_UNAVAILABLE


class CannotPull(SteadyframeError):
    """This model cannot be pulled here (offline, a local folder, built in); the message says why."""

    kind = ErrorKind.MODEL_UNAVAILABLE


@dataclass(frozen=True)
class PullStatus:
    """One pull as clients see it: bytes done of total, and how it ended."""

    name: str
    state: PullStateName
    bytes_done: int = 0
    bytes_total: int | None = None
    message: str | None = None
    advice: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def fraction(self) -> float:
        return min(1.0, self.bytes_done / self.bytes_total) if self.bytes_total else 0.0


class _Pull:
    def __init__(self, entry: CatalogEntry) -> None:
        self.entry = entry
        self.stop = threading.Event()
        self.planned = threading.Event()  # set once the file list is known and the disk check passed (or failed)
        self.fail_jobs_on_cancel = False
        self.early_error: PullFailed | None = None  # what stopped it before the first byte
        self.status = PullStatus(entry.name, "downloading", started_at=time.time())
        self.thread: threading.Thread | None = None


class PullManager:
    """Starts, tracks, cancels and resumes pulls; thread-safe."""

    def __init__(self, settings: Settings, store: JobStore, wake: Callable[[], None] | None = None) -> None:
        self.settings = settings
        self.store = store
        self._wake = wake or (lambda: None)
        self._lock = threading.Lock()
        self._pulls: dict[str, _Pull] = {}

    # --- queries ----------------------------------------------------------------------------

    def status(self, name: str) -> PullStatus | None:
        with self._lock:
            pull = self._pulls.get(name)
            return pull.status if pull is not None else None

    def active(self, name: str) -> bool:
        status = self.status(name)
        return status is not None and status.state == "downloading"

    # --- starting ---------------------------------------------------------------------------

    def check_pullable(self, entry: CatalogEntry) -> None:
        """Raise CannotPull unless this server may download ``entry`` now."""
        if not entry.pullable:
            what = "built in (made on first use)" if entry.builtin else "a local folder on the server"
            raise CannotPull(
                f"The model {entry.name} is {what}; there is nothing to pull.",
                advice="Copy the model folder onto the server." if not entry.builtin else None,
            )
        if is_offline():
            raise CannotPull(
                f"The model {entry.name} is not downloaded and this server is offline (HF_HUB_OFFLINE).",
                advice=f"Run `{entry.pull_command}` on a machine with internet and copy its folder into the "
                "server's models folder (STEADYFRAME_MODELS_DIR); it appears at once.",
            )

    def start(self, entry: CatalogEntry, *, wait_for_plan: bool = True) -> PullStatus:
        """Start pulling ``entry`` (or join the pull already running). With ``wait_for_plan`` the call
        returns once the hub's file list is known and the disk check passed, and raises the PullFailed
        (NotEnoughDisk, a hub or auth error) that stopped it before the first byte."""
        self.check_pullable(entry)
        with self._lock:
            pull = self._pulls.get(entry.name)
            if pull is None or pull.status.state != "downloading":
                pull = _Pull(entry)
                self._pulls[entry.name] = pull
                pull.thread = threading.Thread(target=self._run, args=(pull,), name=f"pull-{entry.name}", daemon=True)
                pull.thread.start()
        if wait_for_plan:
            pull.planned.wait(PLAN_WAIT_S)
            if pull.early_error is not None:
                raise pull.early_error
        return pull.status

    def _set(self, pull: _Pull, **changes: object) -> None:
        with self._lock:
            pull.status = replace(pull.status, **changes)  # type: ignore[arg-type]

    def _run(self, pull: _Pull) -> None:
        entry = pull.entry
        assert entry.repo_id is not None
        settings = self.settings

        def on_plan(plan: PullPlan) -> None:
            self._set(pull, bytes_total=plan.total_bytes, bytes_done=plan.bytes_on_disk())

        def on_progress(done: int, total: int) -> None:
            if not pull.planned.is_set():
                pull.planned.set()  # the disk check passed: bytes are flowing
            pull.status = replace(pull.status, bytes_done=done, bytes_total=total)  # one attribute write: atomic

        log.info("pull of %s (%s) started", entry.name, entry.source)
        try:
            pull_repo(
                entry.repo_id, entry.revision, models_dir=settings.resolved_models_dir, name=entry.name,
                token=settings.hf_token, reserve_bytes=int(settings.pull_reserve_mb * 2**20),
                on_plan=on_plan, on_progress=on_progress, stop=pull.stop,
            )  # fmt: skip
        except PullCancelled as exc:
            self._set(pull, state="cancelled", message=exc.message, advice=exc.advice, finished_at=time.time())
            log.info("pull of %s stopped at %d bytes", entry.name, pull.status.bytes_done)
            if pull.fail_jobs_on_cancel:
                self._fail_jobs(entry, exc.message, f"Pull it again (`{entry.pull_command}`) and send the job again.")
        except PullFailed as exc:
            if not pull.planned.is_set():
                pull.early_error = exc
            self._set(pull, state="failed", message=exc.message, advice=exc.advice, finished_at=time.time())
            log.warning("pull of %s failed: %s", entry.name, exc.message)
            self._fail_jobs(entry, exc.message, f"{exc.advice or ''} Then run `{entry.pull_command}`.".strip())
        except Exception:  # a bug: the jobs fail with an error id, the log has the traceback
            error_id = new_error_id()
            log_failure(
                log, f"pull of {entry.name} crashed", job_id=None, error_id=error_id, kind="internal",
                stage=None, traceback=traceback.format_exc(),
            )  # fmt: skip
            message = f"The download of {entry.name} failed (error id {error_id})."
            self._set(pull, state="failed", message=message, advice="Report the error id.", finished_at=time.time())
            self._fail_jobs(entry, message, f"Report the error id, or run `{entry.pull_command}`.")
        else:
            self._set(pull, state="done", bytes_done=pull.status.bytes_total or pull.status.bytes_done, finished_at=time.time())
            released = self.store.release_waiting(entry.name)
            log.info("pull of %s finished; %d waiting job(s) released", entry.name, len(released))
            if released:
                self._wake()
        finally:
            pull.planned.set()

    def _fail_jobs(self, entry: CatalogEntry, message: str, advice: str) -> None:
        error = JobError(
            kind=ErrorKind.MODEL_UNAVAILABLE.value, message=message, advice=advice, error_id=new_error_id(), stage="load"
        )
        failed = self.store.fail_waiting(entry.name, error)
        if failed:
            log.warning("%d job(s) waiting for %s failed: %s", len(failed), entry.name, message)

    def settle(self, name: str) -> None:
        """After queueing a job waiting for ``name``: if its pull already ended, act on that now."""
        status = self.status(name)
        if status is None or status.state == "downloading":
            return
        entries = catalog(self.settings)
        entry = entries.get(name)
        if status.state == "done" or (entry is not None and entry_state(entry, self.settings).state == "present"):
            if self.store.release_waiting(name):
                self._wake()
        elif entry is not None:
            self._fail_jobs(entry, status.message or "The download stopped.", f"Run `{entry.pull_command}`.")

    # --- stopping ---------------------------------------------------------------------------

    def cancel(self, name: str, *, fail_jobs: bool = True, timeout: float = 30.0) -> bool:
        """Stop ``name``'s pull (its bytes stay on disk) and wait for its thread. -> whether one ran."""
        with self._lock:
            pull = self._pulls.get(name)
        if pull is None or pull.status.state != "downloading":
            return False
        pull.fail_jobs_on_cancel = fail_jobs
        pull.stop.set()
        if pull.thread is not None:
            pull.thread.join(timeout)
        return True

    def stop(self) -> None:
        """Server shutdown: stop every pull (resumed at the next start); waiting jobs keep waiting."""
        with self._lock:
            running = [p for p in self._pulls.values() if p.status.state == "downloading"]
        for pull in running:
            pull.stop.set()
        for pull in running:
            if pull.thread is not None:
                pull.thread.join(10.0)

    # --- deleting ---------------------------------------------------------------------------

    def delete(self, entry: CatalogEntry) -> None:
        """Free the disk: stop its pull (jobs waiting for it fail) and remove its files. Raises
        CannotDelete for an operator's folder, the shared HF cache, or a pull by another process."""
        settings = self.settings
        if entry.folder is not None:
            raise CannotDelete(f"The model {entry.name} is an operator's folder; the server does not delete it.")
        self.cancel(entry.name, fail_jobs=True)
        if entry.builtin:
            shutil.rmtree(builtin_dir(entry.family, settings), ignore_errors=True)  # rebuilt on first use
            return
        assert entry.repo_id is not None
        if entry_state(entry, settings).where == "hf_cache":
            raise CannotDelete(
                f"The model {entry.name} is in the shared Hugging Face cache, not in this server's models folder.",
                advice="Remove it with `hf cache rm` if nothing else uses it.",
            )
        folder = repo_folder(settings.resolved_models_dir, entry.repo_id, entry.revision)
        lock = folder_lock(settings.resolved_models_dir, folder)
        try:
            lock.acquire(timeout=5)  # not while another process (a CLI pull) writes into it
        except Timeout:
            raise CannotDelete(
                f"The model {entry.name} is being pulled by another process.", advice="Stop that pull first."
            ) from None
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            lock.release()
        log.info("model %s deleted", entry.name)

    # --- server start -----------------------------------------------------------------------

    def resume(self) -> None:
        """Continue interrupted pulls and the pulls waiting jobs need; release or fail the rest."""
        try:
            entries = catalog(self.settings)
        except CatalogConfigError:
            return
        waiting = self.store.waiting_models()
        for name in waiting:
            entry = entries.get(name)
            if entry is None:
                self.store.fail_waiting(name, self._gone_error(name))
            elif entry_state(entry, self.settings).state == "present":
                self.store.release_waiting(name)
                self._wake()
        for entry in entries.values():
            if entry.repo_id is None or entry_state(entry, self.settings).state == "present":
                continue
            folder = repo_folder(self.settings.resolved_models_dir, entry.repo_id, entry.revision)
            if entry.name in waiting or (folder / PULL_MARKER).exists():
                try:
                    self.start(entry, wait_for_plan=False)
                    log.info("pull of %s resumed at server start", entry.name)
                except CannotPull as exc:
                    self._fail_jobs(entry, exc.message, exc.advice or f"Run `{entry.pull_command}`.")

    @staticmethod
    def _gone_error(name: str) -> JobError:
        return JobError(
            kind=ErrorKind.MODEL_UNAVAILABLE.value,
            message=f"The model {name} is no longer offered by this server.",
            advice="Pick a model from GET /v1/models and send the job again.",
            error_id=new_error_id(),
            stage="load",
        )
