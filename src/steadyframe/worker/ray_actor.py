"""The worker as a Ray actor: the same ``Worker`` (engine, model manager, OOM ladder) as a local
process, with a channel the supervisor's Ray pool drains by calling ``take``.

Nothing is shared with the server but Ray: a job's input files arrive as bytes with its RunJob
and are written under this node's data folder; its MP4, GIF and sidecar go back as bytes with
JobDone (``JobDoneWithFiles``) and are removed here. Models come from this node's own models
folder and Hugging Face cache. Importing this module imports neither torch nor ray.
"""

from __future__ import annotations

import faulthandler
import json
import os
import queue
import shutil
import tempfile
import threading
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from steadyframe.logs import get_logger
from steadyframe.settings import Settings
from steadyframe.worker.messages import Heartbeat, JobDone, JobFailed, Progress, RunJob

log = get_logger("worker.ray")

INPUT_FIELDS = ("image_path", "video_path")
OUTPUT_FIELDS = ("video_path", "gif_path", "sidecar_path")
# Location settings a node decides for itself from its own environment (STEADYFRAME_*).
_NODE_LOCAL_FIELDS = ("data_dir", "models_dir")
_NODE_OVERRIDABLE_FIELDS = ("upscale_model", "rife_model")

Files = dict[str, tuple[str, bytes]]  # spec/result field -> (file name, content)
# A stage change waits (up to this long) until the pool has taken it: if the actor dies in the new
# stage, the server already knows which stage that was, as it does with a local worker's pipe.
STAGE_HANDOVER_S = 2.0


@dataclass(frozen=True)
class JobDoneWithFiles:
    """JobDone as it leaves the actor: its result's files travel as bytes (no shared filesystem)."""

    done: JobDone
    files: Files


@dataclass(frozen=True)
class StartFailed:
    """The worker could not start in the actor (an import, the device): sent just before it ends."""

    traceback: str


def node_settings(server_settings_json: str) -> Settings:
    """The server's settings with this node's own places: its data and models folders (and
    post-processing weight files when this node's environment names them)."""
    data = json.loads(server_settings_json)
    here = Settings().model_dump(mode="json")  # this node's STEADYFRAME_* environment and defaults
    for name in _NODE_LOCAL_FIELDS:
        data[name] = here[name]
    for name in _NODE_OVERRIDABLE_FIELDS:
        if f"STEADYFRAME_{name.upper()}" in os.environ:
            data[name] = here[name]
    return Settings.model_validate(data)


def stage_inputs(message: RunJob, inputs: Files | None, settings: Settings) -> RunJob:
    """Write the job's input files under this node's data folder; -> the RunJob pointing at them."""
    if not inputs:
        return message
    folder = inputs_dir(settings, message.job_id)
    folder.mkdir(parents=True, exist_ok=True)
    spec = dict(message.spec)
    for field, (name, content) in inputs.items():
        target = folder / Path(name).name  # the same file name: the sidecar records it
        target.write_bytes(content)
        spec[field] = str(target)
    return replace(message, spec=spec)


def inputs_dir(settings: Settings, job_id: str) -> Path:
    return settings.data_dir / "ray-inputs" / job_id


def collect_outputs(done: JobDone) -> JobDoneWithFiles:
    """Read the files a finished job wrote (then remove them here: the server keeps the copy)."""
    files: Files = {}
    folders = set()
    for field in OUTPUT_FIELDS:
        path = done.result.get(field)
        if path:
            files[field] = (Path(path).name, Path(path).read_bytes())
            folders.add(Path(path).parent)
    for folder in folders:
        shutil.rmtree(folder, ignore_errors=True)
    return JobDoneWithFiles(done, files)


class ActorChannel:
    """The worker's end inside the actor: ``send`` buffers for ``take`` (the pool's long poll),
    ``deliver`` feeds ``recv``. Heartbeats are coalesced: only the latest waits in the buffer."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._out: list[object] = []
        self._cond = threading.Condition()
        self._in: queue.Queue[object] = queue.Queue()
        self._stage: tuple[str, str] | None = None  # (job id, stage) of the last Progress sent

    def send(self, message: object) -> None:
        if isinstance(message, JobDone | JobFailed):
            shutil.rmtree(inputs_dir(self._settings, message.job_id), ignore_errors=True)
        if isinstance(message, JobDone):
            try:
                message = collect_outputs(message)
            except OSError as exc:  # files unreadable here: the job fails with what happened
                message = _failed_reading(message, exc)
        with self._cond:
            if isinstance(message, Heartbeat):
                self._out = [m for m in self._out if not isinstance(m, Heartbeat)]
            self._out.append(message)
            self._cond.notify_all()
        if isinstance(message, Progress) and (message.job_id, message.stage) != self._stage:
            self._stage = (message.job_id, message.stage)
            self.drained(timeout=STAGE_HANDOVER_S)

    def recv(self) -> object:
        return self._in.get()

    def deliver(self, message: object) -> None:
        self._in.put(message)

    def take(self, wait_s: float) -> list[object]:
        with self._cond:
            if not self._out:
                self._cond.wait(wait_s)
            out, self._out = self._out, []
            self._cond.notify_all()
        return out

    def drained(self, timeout: float) -> bool:
        """Wait until everything sent was taken (or ``timeout``); -> whether it was."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._out, timeout)


def _failed_reading(done: JobDone, exc: OSError) -> JobFailed:
    from steadyframe.taxonomy import classify, new_error_id

    classified = classify(exc, "save")
    return JobFailed(
        job_id=done.job_id,
        kind=classified.kind.value,
        message=classified.message,
        advice=classified.advice,
        error_id=new_error_id(),
        stage="save",
        traceback="".join(traceback.format_exception(exc)),
        memory=done.memory,
    )


class WorkerActor:
    """Hosts one Worker in a Ray actor process. Ray calls the methods below from its threads
    (the actor is created with ``max_concurrency`` > 1) while the worker's own thread runs jobs."""

    def __init__(self, worker_id: str, settings_json: str, runner_path: str, preload: tuple[str, ...], where: str) -> None:
        self.settings = node_settings(settings_json)
        self.settings.ensure_dirs()
        self.channel = ActorChannel(self.settings)
        self.where = where
        thread = threading.Thread(
            target=self._main, args=(worker_id, runner_path, preload), name="steadyframe-worker", daemon=True
        )
        thread.start()

    def _main(self, worker_id: str, runner_path: str, preload: tuple[str, ...]) -> None:
        from steadyframe.worker.process import start_worker

        try:
            worker = start_worker(self.channel, worker_id, self.settings, runner_path, preload, where=self.where)
            worker.serve()
        except BaseException as exc:  # a worker that cannot run ends its actor; the pool reports the exit
            text = "".join(traceback.format_exception(exc))
            log.error("worker actor %s failed", worker_id, extra={"traceback": text})
            self.channel.send(StartFailed(text))
            self.channel.drained(timeout=5.0)  # let the pool fetch why, then go
            os._exit(1)
        log.info("worker %s shutting down", worker_id)
        os._exit(0)  # Shutdown: the actor ends with its worker

    def take(self, wait_s: float) -> list[object]:
        """Messages since the last call; waits up to ``wait_s`` for the first (a long poll)."""
        return self.channel.take(wait_s)

    def deliver(self, message: object, inputs: Files | None = None) -> None:
        """A message for the worker; a RunJob's input files come along as bytes."""
        if isinstance(message, RunJob):
            message = stage_inputs(message, inputs, self.settings)
        self.channel.deliver(message)

    def stacks(self) -> str:
        """Every thread's Python stack now (asked for before a hung worker is killed)."""
        with tempfile.TemporaryFile("w+") as handle:
            faulthandler.dump_traceback(file=handle, all_threads=True)
            handle.seek(0)
            return handle.read()


def read_last_words(
    server_settings_json: str, worker_id: str, pid: int, job_id: str | None = None
) -> tuple[str | None, dict[str, Any]]:
    """Run on a dead actor's node -> what its faulthandler wrote as it died (then the file goes)
    and the node's kernel OOM-kill reading (``oom_kill.node_oom_reading``); the scratch files of
    the job it died in (its inputs, half-written outputs) go too."""
    from steadyframe.oom_kill import node_oom_reading
    from steadyframe.worker.process import last_words_path

    settings = node_settings(server_settings_json)
    if job_id:
        shutil.rmtree(inputs_dir(settings, job_id), ignore_errors=True)
        shutil.rmtree(settings.outputs_dir / job_id, ignore_errors=True)
    path = last_words_path(settings.logs_dir, worker_id, pid)
    try:
        text: str | None = path.read_text(errors="replace").strip() or None
        path.unlink()
    except OSError:
        text = None
    return text, node_oom_reading()


def describe_node(node: dict[str, Any]) -> str:
    """A node as the UI shows it: its address and the start of its Ray node id."""
    return f"{node.get('NodeManagerAddress', '?')} ({str(node.get('NodeID', ''))[:8]})"
