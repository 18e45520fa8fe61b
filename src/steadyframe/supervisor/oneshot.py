"""Run one job through a private supervisor and worker: what the CLI's ``generate`` uses.

The job gets the server's guarantees (worker process, OOM ladder, crash/hang handling, memory
back to baseline) without a server: a temporary job store, one worker, stopped afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from steadyframe.contracts import JobHooks, JobResult
from steadyframe.errors import ErrorKind, SteadyframeError
from steadyframe.jobs.base import JobRecord, JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

_POLL_S = 0.05


class JobFailedError(SteadyframeError):
    """A job that ended failed or cancelled; ``kind`` is the job's error kind.

    The message carries the error id; the worker's traceback is attached as a note
    (``traceback.print_exception`` shows it, e.g. under ``--debug``).
    """

    def __init__(self, kind: str, message: str, advice: str, error_id: str, traceback_text: str | None) -> None:
        super().__init__(f"{message} (error id {error_id})", advice=advice)
        self.kind = ErrorKind(kind)
        self.error_id = error_id
        if traceback_text:
            self.add_note(f"worker traceback:\n{traceback_text}")


def _relay(record: JobRecord, hooks: JobHooks, shown: list[str | None]) -> None:
    """Replay the store's progress as hook calls: enter_stage on a new stage, then step."""
    progress = record.progress
    if progress.stage is None:
        return
    stage = Stage(progress.stage)
    if shown[0] != progress.stage:
        shown[0] = progress.stage
        hooks.enter_stage(stage, progress.total or None)
    if progress.step and progress.total:
        hooks.step(stage, progress.step, progress.total)


def _move_outputs(result: JobResult, out_dir: Path) -> JobResult:
    """Move the job's files from the data folder into ``out_dir``; paths updated."""
    out_dir.mkdir(parents=True, exist_ok=True)
    moved = {}
    for name in ("video_path", "gif_path", "sidecar_path"):
        source = getattr(result, name)
        if source:
            target = out_dir / Path(source).name
            shutil.move(source, target)
            moved[name] = str(target)
    data = {**result.to_dict(), **moved}
    return JobResult.from_dict(data)


def run_one(spec: JobSpec, settings: Settings, out_dir: Path, hooks: JobHooks, *, runner: str | None = None) -> JobResult:
    """Run ``spec`` in a fresh worker under a private dispatcher; files end up in ``out_dir``.

    Raises JobFailedError (with kind, message, advice and error id) when the job fails or is
    cancelled; Ctrl-C cancels the job, waits for the worker to stop, then re-raises.
    """
    from steadyframe.supervisor.dispatcher import Dispatcher
    from steadyframe.supervisor.local import LocalProcessPool
    from steadyframe.supervisor.slots import default_slots

    settings = settings.model_copy(update={"workers": 1, "ray_address": None})  # one job, on this machine
    with tempfile.TemporaryDirectory(prefix="steadyframe-job-") as tmp:
        store = SqliteJobStore(Path(tmp) / "jobs.sqlite3")
        pool = None
        if runner is not None:
            pool = LocalProcessPool(settings, default_slots(settings)[:1], runner=runner)
        dispatcher = Dispatcher(settings, store, pool=pool)
        try:
            dispatcher.start()
            job, _ = store.submit(spec.model_dump(mode="json"))
            dispatcher.wake()
            record = _follow(store, job.id, hooks, dispatcher, settings)
        finally:
            dispatcher.stop()
            store.close()
    if record.status == JobStatus.SUCCEEDED:
        assert record.result is not None
        result = _move_outputs(JobResult.from_dict(record.result), out_dir)
        shutil.rmtree(settings.outputs_dir / record.id, ignore_errors=True)
        return result
    if record.status == JobStatus.CANCELLED:
        raise JobFailedError("cancelled", "The job was cancelled.", "", "none", None)
    error = record.error
    assert error is not None
    raise JobFailedError(error.kind, error.message, error.advice, error.error_id, error.traceback)


def _follow(store: SqliteJobStore, job_id: str, hooks: JobHooks, dispatcher: object, settings: Settings) -> JobRecord:
    shown: list[str | None] = [None]
    try:
        while True:
            record = store.get(job_id)
            assert record is not None
            _relay(record, hooks, shown)
            if record.status.terminal:
                return record
            time.sleep(_POLL_S)
    except KeyboardInterrupt:
        store.request_cancel(job_id)
        dispatcher.wake()  # type: ignore[attr-defined]
        deadline = time.monotonic() + settings.cancel_grace_s + 5
        while time.monotonic() < deadline:
            record = store.get(job_id)
            if record is None or record.status.terminal:
                break
            time.sleep(_POLL_S)
        raise
