"""Memory over time: samples of every process's memory and the lifecycle events on one time axis.

The server samples, every ``history_sample_s`` seconds (and right after a job ends), its own RSS,
swap, and each worker's RSS, node and VRAM as the worker last reported it. Samples live in a
bounded ring: the last hour at full rate, older ones thinned to one per minute that keeps each
series' peak, nothing older than ``history_keep_hours``. Events come from the dispatcher
(``supervisor.events``); the per-stage peaks of each finished job come from its stored profile.
No torch here. Read with ``MemoryHistory.snapshot(since)``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import psutil

from steadyframe.jobs.base import JobStore
from steadyframe.logs import get_logger
from steadyframe.server.system_info import WorkerSource, model_label
from steadyframe.supervisor import events as ev

log = get_logger("history")

_MB = 1024 * 1024
FULL_RATE_S = 3600.0  # the last hour keeps every sample
THINNED_STEP_S = 60.0  # older samples: one per minute, holding the minute's peaks
MIN_SAMPLE_GAP_S = 0.25  # samples asked for by job ends come at most this often
EVENTS_ROUTINE_MAX = 20_000  # starts, stages, successes, model loads
EVENTS_NOTABLE_MAX = 5_000  # failures, requeues, cancels, worker ends, recycles: never pushed out by routine ones
STAGE_PEAKS_MAX = 20_000

T = TypeVar("T")


# --- what is kept ------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerSample:
    id: str
    node: str
    device: str
    state: str
    pid: int | None
    rss_mb: float | None  # None while the worker has no live process (starting, restarting)
    vram_allocated_mb: float | None
    vram_reserved_mb: float | None
    baseline_rss_mb: float | None = None  # its RSS when empty, measured after its imports


def _peak(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


@dataclass(frozen=True)
class Sample:
    at: float
    server_rss_mb: float
    swap_used_mb: float
    workers: tuple[WorkerSample, ...]

    def with_peaks_of(self, other: Sample) -> Sample:
        """This sample (its time) holding, per series, the higher value of the two (thinning)."""
        theirs = {w.id: w for w in other.workers}
        merged = []
        for mine in self.workers:
            twin = theirs.pop(mine.id, None)
            if twin is None:
                merged.append(mine)
                continue
            merged.append(
                replace(
                    mine,
                    rss_mb=_peak(mine.rss_mb, twin.rss_mb),
                    vram_allocated_mb=_peak(mine.vram_allocated_mb, twin.vram_allocated_mb),
                    vram_reserved_mb=_peak(mine.vram_reserved_mb, twin.vram_reserved_mb),
                )
            )
        merged.extend(theirs.values())
        return Sample(
            at=self.at,
            server_rss_mb=max(self.server_rss_mb, other.server_rss_mb),
            swap_used_mb=max(self.swap_used_mb, other.swap_used_mb),
            workers=tuple(merged),
        )


@dataclass(frozen=True)
class TimelineEvent:
    at: float
    kind: str  # job_started, job_stage, job_succeeded, job_failed, job_requeued, job_cancelled, worker_*, model_*
    worker_id: str
    job_id: str | None = None
    stage: str | None = None
    error_kind: str | None = None
    error_id: str | None = None
    detail: str | None = None

    @property
    def notable(self) -> bool:
        return self.kind in _NOTABLE


_NOTABLE = frozenset(
    {"job_failed", "job_requeued", "job_cancelled", "worker_ended", "worker_recycled", "worker_restarted"}
)


@dataclass(frozen=True)
class StagePeakMark:
    """One stage of one finished job as its worker measured it (``worker.profile.StagePeak``)."""

    job_id: str
    worker_id: str
    stage: str
    memory_level: int
    started_at: float
    ended_at: float
    peak_rss_mb: float
    peak_vram_allocated_mb: float
    peak_vram_reserved_mb: float


@dataclass(frozen=True)
class HistorySnapshot:
    now: float
    interval_s: float
    keep_s: float
    samples: list[Sample]
    events: list[TimelineEvent]
    stage_peaks: list[StagePeakMark]
    sampler_cpu_s: float  # CPU time the sampling thread used since it started
    sampler_running_s: float


# --- the ring ----------------------------------------------------------------------------


class SampleRing:
    """Samples of the last ``keep_s`` seconds: every one of the last ``full_rate_s``, then one per
    ``thinned_step_s`` holding that step's peaks. ``max_len`` bounds it whatever the clock does."""

    def __init__(
        self,
        *,
        keep_s: float,
        interval_s: float,
        full_rate_s: float = FULL_RATE_S,
        thinned_step_s: float = THINNED_STEP_S,
    ) -> None:
        self.keep_s = keep_s
        self.full_rate_s = min(full_rate_s, keep_s)
        self.thinned_step_s = thinned_step_s
        # Job ends add samples between ticks (at most one per MIN_SAMPLE_GAP_S): room for twice the rate.
        self._recent_max = int(self.full_rate_s / interval_s) * 2 + 16
        self._thinned_max = int(max(0.0, keep_s - self.full_rate_s) / thinned_step_s) + 2
        self._recent: deque[Sample] = deque()
        self._thinned: deque[Sample] = deque()

    @property
    def max_len(self) -> int:
        return self._recent_max + self._thinned_max

    def __len__(self) -> int:
        return len(self._recent) + len(self._thinned)

    def add(self, sample: Sample) -> None:
        self._recent.append(sample)
        while self._recent and (
            len(self._recent) > self._recent_max or self._recent[0].at < sample.at - self.full_rate_s
        ):
            self._thin(self._recent.popleft())
        while self._thinned and (len(self._thinned) > self._thinned_max or self._thinned[0].at < sample.at - self.keep_s):
            self._thinned.popleft()

    def _thin(self, old: Sample) -> None:
        last = self._thinned[-1] if self._thinned else None
        if last is not None and int(last.at // self.thinned_step_s) == int(old.at // self.thinned_step_s):
            self._thinned[-1] = last.with_peaks_of(old)
        else:
            self._thinned.append(old)

    def since(self, since: float | None) -> list[Sample]:
        every = [*self._thinned, *self._recent]
        return every if since is None else [s for s in every if s.at >= since]


def _bounded_since(items: Iterable[T], since: float | None, at: Callable[[T], float]) -> list[T]:
    return [i for i in items if since is None or at(i) >= since]


# --- events from the dispatcher ----------------------------------------------------------


def timeline_event(event: ev.DispatcherEvent) -> TimelineEvent | None:
    """The timeline's view of a dispatcher event; None for events the timeline does not mark."""
    base = {"at": event.at, "worker_id": event.worker_id}
    match event:
        case ev.WorkerStarted(restart=restart, node=node):
            return TimelineEvent(kind="worker_restarted" if restart else "worker_started", detail=node or None, **base)
        case ev.WorkerReady(pid=pid, device=device, memory=memory):
            return TimelineEvent(
                kind="worker_ready", detail=f"pid {pid} on {device}, empty at {memory.baseline_rss_mb:.0f} MB", **base
            )
        case ev.WorkerRecycled(reason=reason, excess_mb=excess):
            return TimelineEvent(kind="worker_recycled", detail=f"{reason} ({excess:.0f} MB above its baseline)", **base)
        case ev.WorkerEnded(description=description, planned=planned, job_id=job_id):
            return TimelineEvent(kind="worker_ended", job_id=job_id, detail=f"{description} ({planned or 'unplanned'})", **base)
        case ev.ModelLoaded(model=model):
            return TimelineEvent(kind="model_loaded", detail=model_label(model), **base)
        case ev.ModelUnloaded(model=model):
            return TimelineEvent(kind="model_unloaded", detail=model_label(model), **base)
        case ev.JobStarted(job_id=job_id, attempt=attempt):
            return TimelineEvent(kind="job_started", job_id=job_id, detail=f"attempt {attempt + 1}", **base)
        case ev.JobStageChanged(job_id=job_id, stage=stage):
            return TimelineEvent(kind="job_stage", job_id=job_id, stage=stage, **base)
        case ev.JobSucceeded(job_id=job_id, memory_level=level):
            return TimelineEvent(kind="job_succeeded", job_id=job_id, detail=f"memory-saving level {level}", **base)
        case ev.JobFailed(job_id=job_id, kind=kind, error_id=error_id, stage=stage):
            return TimelineEvent(kind="job_failed", job_id=job_id, stage=stage, error_kind=kind, error_id=error_id, **base)
        case ev.JobRequeued(job_id=job_id, attempt=attempt, error_id=error_id):
            return TimelineEvent(
                kind="job_requeued", job_id=job_id, error_kind="worker_lost", error_id=error_id,
                detail=f"runs again (attempt {attempt + 1})", **base,
            )  # fmt: skip
        case ev.JobCancelled(job_id=job_id, forced=forced):
            return TimelineEvent(kind="job_cancelled", job_id=job_id, detail="worker killed" if forced else None, **base)
    return None


def stage_peaks(job_id: str, worker_id: str, profile: dict[str, Any] | None) -> list[StagePeakMark]:
    """The marks of a stored memory profile (``worker.profile.MemoryProfile.to_dict()``)."""
    marks = []
    for stage in (profile or {}).get("stages", []):
        try:
            marks.append(
                StagePeakMark(
                    job_id=job_id,
                    worker_id=worker_id,
                    stage=str(stage["stage"]),
                    memory_level=int(stage.get("memory_level", 0)),
                    started_at=float(stage["started_at"]),
                    ended_at=float(stage["ended_at"]),
                    peak_rss_mb=float(stage["peak_rss_mb"]),
                    peak_vram_allocated_mb=float(stage.get("peak_vram_allocated_mb", 0.0)),
                    peak_vram_reserved_mb=float(stage.get("peak_vram_reserved_mb", 0.0)),
                )
            )
        except (KeyError, TypeError, ValueError):  # a profile from another version: skip what it lacks
            continue
    return marks


# --- the sampler -------------------------------------------------------------------------


class MemoryHistory:
    """The ring of samples, events and stage peaks, and the thread that fills it.

    ``on_event`` is the dispatcher callback (quick: it appends and may wake the sampler).
    ``start``/``stop`` run the sampling thread; ``sample_now`` takes one sample (tests call it).
    """

    def __init__(
        self,
        *,
        interval_s: float,
        keep_s: float,
        workers: WorkerSource | None,
        store: JobStore | None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interval_s = interval_s
        self.keep_s = keep_s
        self._workers = workers
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self._samples = SampleRing(keep_s=keep_s, interval_s=interval_s)
        self._routine: deque[TimelineEvent] = deque(maxlen=EVENTS_ROUTINE_MAX)
        self._notable: deque[TimelineEvent] = deque(maxlen=EVENTS_NOTABLE_MAX)
        self._peaks: deque[StagePeakMark] = deque(maxlen=STAGE_PEAKS_MAX)
        self._ended_jobs: queue.SimpleQueue[tuple[str, str]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._process = psutil.Process(os.getpid())
        self._cpu_s = 0.0
        self._started_at: float | None = None
        self._last_sample_at = 0.0

    # --- filling -------------------------------------------------------------------------

    def on_event(self, event: ev.DispatcherEvent) -> None:
        marked = timeline_event(event)
        if marked is None:
            return
        self.add_event(marked)
        if marked.kind in ("job_succeeded", "job_failed") and marked.job_id:
            self._ended_jobs.put((marked.job_id, marked.worker_id))
        if marked.kind in ("job_started", "job_succeeded", "job_failed", "job_cancelled", "worker_ready"):
            self._wake.set()  # a sample at the very moment memory is expected to move

    def add_event(self, event: TimelineEvent) -> None:
        with self._lock:
            (self._notable if event.notable else self._routine).append(event)

    def add_sample(self, sample: Sample) -> None:
        with self._lock:
            self._samples.add(sample)
            self._prune_events(sample.at - self.keep_s)

    def _prune_events(self, cutoff: float) -> None:
        for ring in (self._routine, self._notable, self._peaks):
            while ring and _time_of(ring[0]) < cutoff:
                ring.popleft()

    def sample_now(self) -> Sample:
        """Read every process's memory now, keep it in the ring -> the sample."""
        workers = []
        for info in self._workers.workers() if self._workers is not None else []:
            alive = info.pid is not None
            workers.append(
                WorkerSample(
                    id=str(info.id),
                    node=str(getattr(info, "node", "") or ""),
                    device=str(getattr(info, "device", "") or ""),
                    state=str(info.state),
                    pid=info.pid,
                    rss_mb=round(info.rss_mb, 1) if alive else None,
                    vram_allocated_mb=round(info.vram_allocated_mb, 1) if alive else None,
                    vram_reserved_mb=round(info.vram_reserved_mb, 1) if alive else None,
                    baseline_rss_mb=round(getattr(info, "baseline_rss_mb", 0.0), 1) if alive else None,
                )
            )
        sample = Sample(
            at=round(self._clock(), 3),
            server_rss_mb=round(self._process.memory_info().rss / _MB, 1),
            swap_used_mb=round(psutil.swap_memory().used / _MB, 1),
            workers=tuple(workers),
        )
        self.add_sample(sample)
        return sample

    def _collect_profiles(self) -> None:
        """Stage peaks of jobs that just ended, read from the store (off the dispatcher's thread)."""
        while True:
            try:
                job_id, worker_id = self._ended_jobs.get_nowait()
            except queue.Empty:
                return
            record = self._store.get(job_id) if self._store is not None else None
            if record is None:
                continue
            profile = (record.result or {}).get("memory_profile") if record.result else None
            if profile is None and record.error is not None:
                profile = record.error.memory_profile
            marks = stage_peaks(job_id, worker_id, profile)
            with self._lock:
                self._peaks.extend(marks)

    # --- the thread ----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._started_at = time.monotonic()
        self._thread = threading.Thread(target=self._run, name="steadyframe-history", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            cpu_before = time.thread_time()
            try:
                self._collect_profiles()
                self.sample_now()
            except Exception:  # the timeline must never take the server down
                log.exception("memory sampling failed; trying again next tick")
            self._cpu_s += time.thread_time() - cpu_before
            self._last_sample_at = time.monotonic()
            self._wake.wait(self.interval_s)
            self._wake.clear()
            gap = MIN_SAMPLE_GAP_S - (time.monotonic() - self._last_sample_at)
            if gap > 0:
                self._stopping.wait(gap)

    # --- reading -------------------------------------------------------------------------

    def now(self) -> float:
        """The history's clock (unix seconds)."""
        return self._clock()

    def snapshot(self, since: float | None = None) -> HistorySnapshot:
        """Everything kept at or after ``since`` (unix seconds; None = all), oldest first."""
        with self._lock:
            samples = self._samples.since(since)
            events = sorted(_bounded_since([*self._routine, *self._notable], since, _time_of), key=_time_of)
            peaks = _bounded_since(self._peaks, since, lambda p: p.ended_at)
        running = time.monotonic() - self._started_at if self._started_at is not None else 0.0
        return HistorySnapshot(
            now=self._clock(),
            interval_s=self.interval_s,
            keep_s=self.keep_s,
            samples=samples,
            events=events,
            stage_peaks=peaks,
            sampler_cpu_s=self._cpu_s,
            sampler_running_s=running,
        )

    @property
    def bound(self) -> int:
        """The most samples the ring ever holds."""
        return self._samples.max_len


def _time_of(item: TimelineEvent | StagePeakMark) -> float:
    return item.at if isinstance(item, TimelineEvent) else item.ended_at
