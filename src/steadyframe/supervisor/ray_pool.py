"""Ray worker pool: one worker actor per GPU of an existing Ray cluster (per CPU slot on CPU-only
clusters), following nodes as they join and leave. See docs/architecture.md "Ray pool".

The dispatcher's thread only enqueues here (``.remote()`` calls never block); one pump thread
talks to the cluster: it long-polls each actor's ``take`` for messages, turns returned files into
the server's data folder, watches nodes, carries out kills (stacks first, then ``ray.kill``) and
reports every end as a ``WorkerExited``, with a bounded wait even when a node stops answering.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyframe.logs import get_logger
from steadyframe.oom_kill import counts_rose, oom_kill_description
from steadyframe.settings import Settings
from steadyframe.supervisor.pool import ExitCause, PoolEvent, WorkerExited, WorkerPool, WorkerSlot
from steadyframe.worker import ray_actor
from steadyframe.worker.messages import JobDone, JobFailed, Ready, RunJob, Shutdown, ToWorker
from steadyframe.worker.process import DEFAULT_PRELOAD, DEFAULT_RUNNER

log = get_logger("supervisor.ray")

NAMESPACE = "steadyframe"
TAKE_WAIT_S = 1.0  # an actor's long poll holds this long when it has nothing to say
PUMP_WAIT_S = 0.1  # how long the pump thread waits for any poll to answer
NODES_EVERY_S = 2.0  # how often the node list is read
STACKS_WAIT_S = 2.0  # a hung actor gets this long to hand over its stacks before the kill
KILL_CONFIRM_S = 10.0  # a killed actor whose death Ray does not confirm is reported gone after this
LAST_WORDS_WAIT_S = 15.0  # how long a dead actor's node gets to hand over its crash stacks (a task there starts a process)
UNREACHABLE_S = 30.0  # an actor unreachable this long (its node partitioned) is given up
_FATAL_SIGNALS = {
    "Segmentation fault": "SIGSEGV",
    "Aborted": "SIGABRT",
    "Bus error": "SIGBUS",
    "Floating-point exception": "SIGFPE",
    "Illegal instruction": "SIGILL",
}


@dataclass
class _Slot:
    slot: WorkerSlot
    node_id: str
    gpu: bool
    cpus: float


@dataclass
class _Actor:
    """One actor of a slot, from its creation to its reported end."""

    handle: Any
    node_id: str
    pid: int | None = None
    job_id: str | None = None  # the job it was sent and has not finished
    poll: Any = None  # the outstanding ``take`` call
    retry_poll_at: float = 0.0
    unavailable_since: float | None = None
    kill_requested: bool = False
    dump_stacks: bool = False
    stacks_ref: Any = None
    stacks_deadline: float = 0.0
    stacks: str | None = None
    killed_at: float | None = None
    death: tuple[ExitCause, str] | None = None  # seen, waiting for its last words
    start_failure: str | None = None  # the traceback of a worker that could not start
    words_ref: Any = None
    words_deadline: float = 0.0
    pending: list[PoolEvent] = field(default_factory=list)


class RayPool(WorkerPool):
    """Workers as Ray actors on the cluster at ``address`` (joined here; ``ray.init`` if needed)."""

    def __init__(
        self,
        settings: Settings,
        *,
        address: str | None = None,
        runner: str = DEFAULT_RUNNER,
        preload: tuple[str, ...] | None = None,
    ) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self._ray = ray
        self._affinity = NodeAffinitySchedulingStrategy
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=address or settings.ray_address, namespace=NAMESPACE, log_to_driver=False)
        self._settings = settings
        self._settings_json = settings.model_dump_json()
        self._outputs_dir = settings.outputs_dir
        self._runner = runner
        self._preload = preload if preload is not None else (DEFAULT_PRELOAD if runner == DEFAULT_RUNNER else ())
        self._actor_class = ray.remote(ray_actor.WorkerActor)
        self._last_words_task = ray.remote(ray_actor.read_last_words)
        self._lock = threading.Lock()  # guards _slots and _actors (dispatcher thread vs pump thread)
        self._slots: dict[str, _Slot] = {}
        self._actors: dict[str, _Actor] = {}
        self._events: queue.Queue[PoolEvent | None] = queue.Queue()
        self._closing = threading.Event()
        self._shutting_down = False
        self._next_nodes = 0.0
        self._alive_nodes: set[str] = set()
        # per node: the kernel OOM-kill counters last seen there (from an actor's Ready, then from
        # each death's reading), so a death is an OOM kill only if a counter rose since the last look
        self._oom_seen: dict[str, dict[str, int]] = {}
        self._node_names: dict[str, str] = {}  # every node seen, for words about lost ones
        self._read_nodes()
        self._pump = threading.Thread(target=self._pump_loop, name="steadyframe-ray-pump", daemon=True)
        self._pump.start()

    # --- the interface (dispatcher thread) ----------------------------------------------------

    def slots(self) -> list[WorkerSlot]:
        with self._lock:
            return [s.slot for s in self._slots.values()]

    def spawn(self, worker_id: str) -> None:
        with self._lock:
            slot = self._slots.get(worker_id)
            if slot is None or slot.node_id not in self._alive_nodes:
                raise KeyError(f"no slot {worker_id} (its node left)")
            if worker_id in self._actors:
                raise RuntimeError(f"worker {worker_id} still has an actor")
            options: dict[str, Any] = dict(
                max_restarts=0,  # the dispatcher restarts, with its backoff
                max_task_retries=0,
                max_concurrency=4,  # take, deliver and stacks run while the worker's thread runs a job
                scheduling_strategy=self._affinity(slot.node_id, soft=False),
                num_cpus=slot.cpus,
            )
            if slot.gpu:
                options["num_gpus"] = 1
            handle = self._actor_class.options(**options).remote(
                worker_id, self._settings_json, self._runner, self._preload, slot.slot.node
            )
            self._actors[worker_id] = _Actor(handle, slot.node_id)
        log.info("started actor for worker %s on %s", worker_id, slot.slot.node, extra={"worker_id": worker_id})

    def send(self, worker_id: str, message: ToWorker) -> bool:
        with self._lock:
            actor = self._actors.get(worker_id)
            if actor is None or actor.death is not None or actor.kill_requested:
                return False
            handle = actor.handle
            if isinstance(message, RunJob):
                actor.job_id = message.job_id
        inputs = _read_inputs(message) if isinstance(message, RunJob) else None
        handle.deliver.remote(message, inputs)  # inputs travel through the object store
        return True

    def wait(self, timeout: float) -> list[PoolEvent]:
        events: list[PoolEvent] = []
        try:
            first = self._events.get(timeout=timeout)
        except queue.Empty:
            return events
        if first is not None:
            events.append(first)
        while True:
            try:
                more = self._events.get_nowait()
            except queue.Empty:
                return events
            if more is not None:
                events.append(more)

    def interrupt(self) -> None:
        self._events.put(None)

    def kill(self, worker_id: str, *, dump_stacks: bool = False) -> None:
        with self._lock:
            actor = self._actors.get(worker_id)
            if actor is None or actor.kill_requested:
                return
            actor.kill_requested = True
            actor.dump_stacks = dump_stacks

    def close(self, timeout: float) -> None:
        self._shutting_down = True
        with self._lock:
            actors = list(self._actors.values())
        for actor in actors:
            try:
                actor.handle.deliver.remote(Shutdown())
            except Exception:
                pass
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if all(a.death is not None for a in self._actors.values()):
                    break
            time.sleep(0.1)
        self._closing.set()
        self._pump.join(timeout=10)
        for actor in actors:
            try:
                self._ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
        with self._lock:
            self._actors.clear()
        if self._owns_ray:
            self._ray.shutdown()

    # --- the pump thread ---------------------------------------------------------------------

    def _pump_loop(self) -> None:
        while not self._closing.is_set():
            try:
                self._pump_once()
            except Exception:  # the pool must outlive a flaky cluster; log and go on
                log.exception("ray pool pump error")
                time.sleep(0.5)

    def _pump_once(self) -> None:
        now = time.monotonic()
        if now >= self._next_nodes:
            self._next_nodes = now + NODES_EVERY_S
            self._read_nodes()
        with self._lock:
            actors = dict(self._actors)
        polls: dict[Any, str] = {}
        for worker_id, actor in actors.items():
            if actor.death is not None:
                self._settle_death(worker_id, actor, now)
                continue
            if actor.kill_requested:
                self._carry_out_kill(worker_id, actor, now)
            if actor.poll is None and actor.death is None and now >= actor.retry_poll_at:
                actor.poll = actor.handle.take.remote(TAKE_WAIT_S)
            if actor.poll is not None:
                polls[actor.poll] = worker_id
        if not polls:
            time.sleep(PUMP_WAIT_S)
            return
        ready, _ = self._ray.wait(list(polls), num_returns=len(polls), timeout=PUMP_WAIT_S)
        for ref in ready:
            worker_id = polls[ref]
            actor = actors[worker_id]
            actor.poll = None
            try:
                messages = self._ray.get(ref, timeout=5)
            except self._ray.exceptions.ActorUnavailableError:
                actor.unavailable_since = actor.unavailable_since or now
                actor.retry_poll_at = now + 0.5
                if now - actor.unavailable_since > UNREACHABLE_S:
                    self._ray.kill(actor.handle, no_restart=True)
                    self._died(worker_id, actor, ExitCause.NODE_LOST, f"stopped answering for {UNREACHABLE_S:.0f} s")
                continue
            except self._ray.exceptions.RayActorError as exc:
                self._died(worker_id, actor, *self._cause(actor, exc))
                continue
            except self._ray.exceptions.ActorUnschedulableError:  # created for a node that left meanwhile
                self._died(worker_id, actor, ExitCause.NODE_LOST, f"could not be placed: its node {self._node_words(actor.node_id)} is gone")
                continue
            except Exception:  # a message that would not unpickle, a get timeout: try again shortly
                log.exception("reading worker %s's messages failed", worker_id)
                actor.retry_poll_at = now + 0.5
                continue
            actor.unavailable_since = None
            for message in messages:
                self._relay(worker_id, actor, message)

    def _relay(self, worker_id: str, actor: _Actor, message: object) -> None:
        if isinstance(message, Ready):
            actor.pid = message.pid
            if message.oom_kills is not None:
                self._oom_seen.setdefault(actor.node_id, dict(message.oom_kills))
        if isinstance(message, ray_actor.StartFailed):
            actor.start_failure = message.traceback  # reported with its exit, which follows
            return
        if isinstance(message, ray_actor.JobDoneWithFiles):
            message = self._store_outputs(message)
        if isinstance(message, JobDone | JobFailed) and message.job_id == actor.job_id:
            actor.job_id = None
        self._events.put(PoolEvent(worker_id, message))  # type: ignore[arg-type]

    def _store_outputs(self, message: ray_actor.JobDoneWithFiles) -> JobDone | JobFailed:
        """Write the job's files into the server's data folder; -> JobDone with the server's paths."""
        done = message.done
        folder = self._outputs_dir / done.job_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            result = dict(done.result)
            for field_name, (name, content) in message.files.items():
                target = folder / Path(name).name
                target.write_bytes(content)
                result[field_name] = str(target)
        except OSError as exc:
            return ray_actor._failed_reading(done, exc)
        return JobDone(done.job_id, result, done.memory, done.stage_seconds)

    def _carry_out_kill(self, worker_id: str, actor: _Actor, now: float) -> None:
        if actor.killed_at is not None:
            if now - actor.killed_at > KILL_CONFIRM_S:  # a node that does not answer: report it gone anyway
                self._died(worker_id, actor, ExitCause.KILLED, f"was killed (not confirmed within {KILL_CONFIRM_S:.0f} s)")
            return
        if actor.dump_stacks and actor.stacks_ref is None:
            actor.stacks_ref = actor.handle.stacks.remote()
            actor.stacks_deadline = now + STACKS_WAIT_S
        if actor.stacks_ref is not None and actor.stacks is None:
            ready, _ = self._ray.wait([actor.stacks_ref], timeout=0)
            if ready:
                try:
                    actor.stacks = self._ray.get(actor.stacks_ref, timeout=1)
                except Exception:
                    actor.stacks = ""
            elif now < actor.stacks_deadline:
                return  # give it a little longer
        self._ray.kill(actor.handle, no_restart=True)
        actor.killed_at = now

    def _cause(self, actor: _Actor, exc: Exception) -> tuple[ExitCause, str]:
        text = str(exc)
        if actor.killed_at is not None or "killed by `ray.kill`" in text:
            return ExitCause.KILLED, "was killed (ray.kill)"
        if getattr(exc, "actor_init_failed", False):
            return ExitCause.EXITED, f"could not start ({_last_line(text)})"
        if not self._node_alive(actor.node_id) or any(p in text for p in ("its node has died", "node has died", "NODE_DIED")):
            return ExitCause.NODE_LOST, f"was lost with its node {self._node_words(actor.node_id)}"
        # The process ended: Ray cannot tell a crash from SIGKILL; the last words on its node can.
        return ExitCause.KILLED, "ended abruptly (its process died without a word: SIGKILL, the OOM killer or a hard exit)"

    def _oom_killed(self, node_id: str, counts: dict[str, int]) -> bool:
        """Whether the kernel's OOM killer struck on ``node_id`` since the last look there (an
        actor that ended without a word, its OOM-kill count risen: as the local pool decides)."""
        before = self._oom_seen.get(node_id)
        return before is not None and counts_rose(before, counts)

    def _died(self, worker_id: str, actor: _Actor, cause: ExitCause, words: str) -> None:
        """Seen dead: fetch the crash stacks it left on its node (bounded), then report."""
        if actor.death is not None:
            return
        if self._shutting_down:  # ends are expected now: no stacks to fetch
            cause, words = ExitCause.EXITED, "was stopped with the server"
        actor.death = (cause, words)
        now = time.monotonic()
        if not self._shutting_down and cause != ExitCause.NODE_LOST and actor.pid is not None and self._node_alive(actor.node_id):
            # Its faulthandler file (and its job's scratch) is on its node: a task there reads and removes them.
            ref = self._last_words_task.options(
                scheduling_strategy=self._affinity(actor.node_id, soft=False), num_cpus=0
            ).remote(self._settings_json, worker_id, actor.pid, actor.job_id)
            if actor.killed_at is None and actor.start_failure is None:  # unexplained: wait for its words
                actor.words_ref = ref
                actor.words_deadline = now + LAST_WORDS_WAIT_S
        self._settle_death(worker_id, actor, now)

    def _settle_death(self, worker_id: str, actor: _Actor, now: float) -> None:
        assert actor.death is not None
        words: str | None = None
        reading: dict[str, Any] | None = None
        if actor.words_ref is not None:
            ready, _ = self._ray.wait([actor.words_ref], timeout=0)
            if not ready and now < actor.words_deadline:
                return  # its node has a moment more to answer
            if ready:
                try:
                    words, reading = self._ray.get(actor.words_ref, timeout=1)
                except Exception:
                    words = None
        cause, description = actor.death
        if words and actor.killed_at is None:
            for fatal, signal_name in _FATAL_SIGNALS.items():
                if f"Fatal Python error: {fatal}" in words:
                    cause, description = ExitCause.CRASHED, f"crashed with {signal_name}"
                    break
        if actor.start_failure is not None:
            cause, description = ExitCause.EXITED, f"could not start ({_last_line(actor.start_failure)})"
            words = actor.start_failure
        memory_limit: str | None = None
        if reading is not None:  # still "ended abruptly" after its words: was it the kernel's OOM killer?
            if cause == ExitCause.KILLED and self._oom_killed(actor.node_id, reading["counts"]):
                memory_limit = f"{reading['limit']} on node {self._node_words(actor.node_id)}"
                cause, description = ExitCause.OOM_KILLED, oom_kill_description(memory_limit)
            self._oom_seen[actor.node_id] = {**self._oom_seen.get(actor.node_id, {}), **reading["counts"]}
        if actor.stacks:
            words = actor.stacks if not words else f"{actor.stacks}\n{words}"
        with self._lock:
            if self._actors.get(worker_id) is actor:
                del self._actors[worker_id]
        log.info("worker %s's actor %s", worker_id, description, extra={"worker_id": worker_id})
        self._events.put(PoolEvent(worker_id, WorkerExited(cause, description, words or None, memory_limit)))

    # --- nodes -------------------------------------------------------------------------------

    def _read_nodes(self) -> None:
        """Slots from the live nodes: one per GPU; on a CPU-only cluster, per ``ray_cpus_per_worker``."""
        nodes = [n for n in self._ray.nodes() if n.get("Alive")]
        any_gpu = any(n.get("Resources", {}).get("GPU", 0) >= 1 for n in nodes)
        per_worker = self._settings.ray_cpus_per_worker
        slots: dict[str, _Slot] = {}
        for node in sorted(nodes, key=lambda n: n["NodeID"]):
            node_id = node["NodeID"]
            resources = node.get("Resources", {})
            where = ray_actor.describe_node(node)
            if any_gpu:
                for k in range(int(resources.get("GPU", 0))):
                    worker_id = f"{node_id[:8]}-gpu{k}"
                    slots[worker_id] = _Slot(WorkerSlot(worker_id, node=where), node_id, gpu=True, cpus=0)
            else:
                cpus = resources.get("CPU", 0)
                count = int(cpus // per_worker) if per_worker else (1 if cpus >= 1 else 0)
                for k in range(count):
                    worker_id = f"{node_id[:8]}-cpu{k}"
                    slots[worker_id] = _Slot(WorkerSlot(worker_id, node=where), node_id, gpu=False, cpus=per_worker or 1)
        alive = {n["NodeID"] for n in nodes}
        with self._lock:
            self._slots = slots
            self._alive_nodes = alive
            self._node_names.update({n["NodeID"]: ray_actor.describe_node(n) for n in nodes})
            orphaned = [(wid, a) for wid, a in self._actors.items() if a.node_id not in alive and a.death is None]
        for worker_id, actor in orphaned:  # their node is gone: so are they
            try:
                self._ray.kill(actor.handle, no_restart=True)
            except Exception:
                pass
            self._died(worker_id, actor, ExitCause.NODE_LOST, f"was lost with its node {self._node_words(actor.node_id)}")

    def _node_alive(self, node_id: str) -> bool:
        with self._lock:
            return node_id in self._alive_nodes

    def _node_words(self, node_id: str) -> str:
        with self._lock:
            return self._node_names.get(node_id, node_id[:8])


def _read_inputs(message: RunJob) -> ray_actor.Files | None:
    """A RunJob's input files (server paths in its spec) as bytes for the trip to the actor."""
    files: ray_actor.Files = {}
    for field_name in ray_actor.INPUT_FIELDS:
        path = message.spec.get(field_name)
        if path:
            try:
                files[field_name] = (Path(path).name, Path(path).read_bytes())
            except OSError:
                log.warning("input %s of job %s is unreadable here", Path(path).name, message.job_id)
    return files or None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no reason given")[:200]
