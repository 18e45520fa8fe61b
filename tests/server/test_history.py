"""The memory timeline's ring, in-process with a fake clock: bounded, thinned with peaks kept, events on one axis."""

from __future__ import annotations

from dataclasses import dataclass

from steadyframe.server.history import EVENTS_ROUTINE_MAX, MemoryHistory, Sample, SampleRing, WorkerSample, timeline_event
from steadyframe.supervisor import events as ev
from steadyframe.worker.messages import MemoryFigures

DAY_S = 86_400.0
INTERVAL_S = 2.0


class FakeClock:
    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeInfo:
    id: str
    state: str
    pid: int | None
    rss_mb: float
    vram_allocated_mb: float = 0.0
    vram_reserved_mb: float = 0.0
    node: str = "box-a"
    device: str = "cpu"


class FakeWorkers:
    def __init__(self) -> None:
        self.rss = 500.0
        self.pid: int | None = 42

    def is_ready(self) -> bool:
        return True

    def workers(self) -> list[FakeInfo]:
        return [FakeInfo("w0", "idle" if self.pid else "backoff", self.pid, self.rss, 10.0, 20.0)]


def _sample(at: float, worker_rss: float) -> Sample:
    worker = WorkerSample("w0", "", "cpu", "idle", 1, worker_rss, 0.0, 0.0)
    return Sample(at=at, server_rss_mb=200.0, swap_used_mb=0.0, workers=(worker,))


def test_three_days_of_samples_stay_within_the_bound_and_reach_back_one_day() -> None:
    ring = SampleRing(keep_s=DAY_S, interval_s=INTERVAL_S)
    start = 1_800_000_000.0
    spike_at = start + 2 * DAY_S + 3 * 3600 + 18  # a 2 s spike 21 h before the end: thinned, not lost
    now = start
    steps = int(3 * DAY_S / INTERVAL_S)
    for i in range(steps):
        now = start + i * INTERVAL_S
        ring.add(_sample(now, 3000.0 if now == spike_at else 500.0))
        assert len(ring) <= ring.max_len
    kept = ring.since(None)
    assert kept[0].at >= now - DAY_S
    assert kept[0].at <= now - DAY_S + 120  # it does reach back a day
    assert [s.at for s in kept] == sorted(s.at for s in kept)
    full_rate = [s for s in kept if s.at >= now - 3600]
    assert len(full_rate) >= 3600 / INTERVAL_S - 1  # the last hour at every sample
    older = [s for s in kept if s.at < now - 3600]
    assert len(older) <= (DAY_S - 3600) / 60 + 2  # one per minute before that
    assert max(s.workers[0].rss_mb for s in older) == 3000.0  # the spike's peak survived thinning
    assert len(ring) < 3600 / INTERVAL_S + DAY_S / 60 + 10  # about 3,200 samples for a day


def test_the_ring_is_bounded_even_when_samples_come_faster_than_the_interval() -> None:
    ring = SampleRing(keep_s=DAY_S, interval_s=INTERVAL_S)
    for i in range(200_000):
        ring.add(_sample(1_800_000_000.0 + i * 0.01, 500.0))
    assert len(ring) <= ring.max_len


def test_history_samples_every_process_and_keeps_events_and_stage_peaks_on_one_axis() -> None:
    clock = FakeClock()
    workers = FakeWorkers()
    history = MemoryHistory(interval_s=INTERVAL_S, keep_s=DAY_S, workers=workers, store=None, clock=clock)
    t0 = clock.now
    history.sample_now()
    history.on_event(ev.JobStarted(worker_id="w0", job_id="j1", attempt=0, at=t0 + 1))
    history.on_event(ev.JobStageChanged(worker_id="w0", job_id="j1", stage="denoise", at=t0 + 1.5))
    history.on_event(ev.MemorySampled(worker_id="w0", memory=MemoryFigures(1.0, 1.0), job_id="j1", at=t0 + 1.6))
    history.on_event(
        ev.JobFailed(worker_id="w0", job_id="j1", kind="out_of_memory", error_id="err-abc", stage="denoise", at=t0 + 2)
    )
    clock.now = t0 + 2
    workers.pid = None  # restarting: no process, no reading (a gap, not a zero)
    history.sample_now()
    snap = history.snapshot()
    assert [s.at for s in snap.samples] == [t0, t0 + 2]
    assert snap.samples[0].workers[0].rss_mb == 500.0 and snap.samples[0].workers[0].vram_reserved_mb == 20.0
    assert snap.samples[1].workers[0].rss_mb is None and snap.samples[0].server_rss_mb > 0
    assert [e.kind for e in snap.events] == ["job_started", "job_stage", "job_failed"]  # no per-beat events
    failed = snap.events[-1]
    assert (failed.error_kind, failed.error_id, failed.job_id, failed.stage) == ("out_of_memory", "err-abc", "j1", "denoise")
    assert [s.at for s in history.snapshot(since=t0 + 1).samples] == [t0 + 2]
    assert [e.kind for e in history.snapshot(since=t0 + 1.8).events] == ["job_failed"]


def test_failures_are_never_pushed_out_by_routine_events_and_old_events_age_out() -> None:
    clock = FakeClock()
    history = MemoryHistory(interval_s=INTERVAL_S, keep_s=DAY_S, workers=FakeWorkers(), store=None, clock=clock)
    t0 = clock.now
    history.on_event(ev.JobFailed(worker_id="w0", job_id="old", kind="internal", error_id="err-old", stage=None, at=t0))
    history.on_event(ev.JobFailed(worker_id="w0", job_id="j", kind="out_of_memory", error_id="err-1", stage=None, at=t0 + 10))
    for i in range(EVENTS_ROUTINE_MAX + 500):
        history.on_event(ev.JobStageChanged(worker_id="w0", job_id="j", stage="denoise", at=t0 + 11 + i * 0.001))
    kinds = [e.kind for e in history.snapshot().events]
    assert kinds.count("job_stage") == EVENTS_ROUTINE_MAX and kinds.count("job_failed") == 2
    clock.now = t0 + DAY_S + 5
    history.sample_now()
    errors = [e.error_id for e in history.snapshot().events if e.kind == "job_failed"]
    assert errors == ["err-1"]  # a day later the first failure aged out, the other one is still there


def test_every_lifecycle_event_the_timeline_marks_has_a_kind() -> None:
    memory = MemoryFigures(rss_mb=700.0, baseline_rss_mb=650.0)
    marked = [
        timeline_event(e)
        for e in (
            ev.WorkerStarted(worker_id="w0", node="n", restart=False),
            ev.WorkerStarted(worker_id="w0", node="n", restart=True),
            ev.WorkerReady(worker_id="w0", node="n", device="cpu", pid=7, memory=memory),
            ev.WorkerRecycled(worker_id="w0", reason="memory", excess_mb=900.0),
            ev.WorkerEnded(worker_id="w0", node="n", cause="killed", description="was killed", planned=None, job_id="j"),
            ev.ModelLoaded(worker_id="w0", model="CogVideoXPipeline:/data/models/tiny:float32:cpu:level0"),
            ev.ModelUnloaded(worker_id="w0", model="x"),
            ev.JobSucceeded(worker_id="w0", job_id="j", memory_level=1, stage_seconds={}),
            ev.JobRequeued(worker_id="w0", job_id="j", attempt=1, error_id="err-2"),
            ev.JobCancelled(worker_id="w0", job_id="j", forced=True),
        )
    ]
    assert [m.kind for m in marked if m] == [
        "worker_started", "worker_restarted", "worker_ready", "worker_recycled", "worker_ended",
        "model_loaded", "model_unloaded", "job_succeeded", "job_requeued", "job_cancelled",
    ]  # fmt: skip
    assert "/data/models" not in (marked[5].detail or "")  # no machine paths leave the server
    assert timeline_event(ev.WorkerRestarting(worker_id="w0", reason="crash", delay_s=1.0)) is None
