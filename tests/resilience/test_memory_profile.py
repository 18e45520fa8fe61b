"""A job's memory profile as the worker measures it: exact peaks per stage, the level after cleanup."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steadyframe.settings import Settings
from steadyframe.testing.synthetic_runner import run_job as synthetic_run_job
from steadyframe.worker.messages import JobDone, JobFailed, MemoryFigures, RunJob
from steadyframe.worker.process import Worker
from steadyframe.worker.profile import PeakMeter, StageProfiler

BALLAST_MB = 300
NOISE_MB = 100  # allocator noise and torch's thread pools on a busy machine


class Channel:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def _worker(tmp_path: Path, **overrides: Any) -> Worker:
    settings = Settings(data_dir=tmp_path, device="cpu", fault_injection=True, **overrides)
    settings.ensure_dirs()
    worker = Worker("t0", settings, Channel(), synthetic_run_job)  # type: ignore[arg-type]
    worker.measure_baseline()
    return worker


def test_a_succeeded_job_carries_a_peak_per_stage_and_the_level_after_cleanup(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    outcome = worker.run(RunJob("ok", {"prompt": "a calm lake", "steps": 3}))
    assert isinstance(outcome, JobDone)
    profile = outcome.result["memory_profile"]
    stages = [s["stage"] for s in profile["stages"]]
    assert stages == ["load", "encode_prompt", "denoise", "decode", "encode_video", "save"]
    for stage in profile["stages"]:
        assert stage["peak_rss_mb"] > 0 and stage["ended_at"] >= stage["started_at"]
        assert stage["memory_level"] == 0
    after = profile["after_cleanup"]
    assert after["rss_mb"] == round(outcome.memory.rss_mb, 1)
    assert after["baseline_rss_mb"] == round(worker.baseline_rss_mb, 1)
    assert profile["peak_rss_mb"] == max(s["peak_rss_mb"] for s in profile["stages"])


def test_a_short_lived_spike_in_a_failing_stage_shows_in_its_peak_and_is_gone_after_cleanup(tmp_path: Path) -> None:
    worker = _worker(tmp_path, max_memory_level=0)
    worker.run(RunJob("warm", {"prompt": "warm up"}))
    before = worker.figures().rss_mb
    fault = {"stage": "denoise", "kind": "oom", "at_step": 1, "ballast_mb": BALLAST_MB}
    outcome = worker.run(RunJob("oom", {"prompt": "x", "steps": 3, "fault": fault}))
    assert isinstance(outcome, JobFailed) and outcome.kind == "out_of_memory"
    profile = outcome.memory_profile
    assert profile is not None
    by_stage = {s["stage"]: s for s in profile["stages"]}
    assert list(by_stage) == ["load", "encode_prompt", "denoise"]  # it never got past denoise
    # The ballast lived for microseconds (allocated, then raised): only an exact peak sees it.
    assert by_stage["denoise"]["peak_rss_mb"] - before > BALLAST_MB - NOISE_MB
    assert by_stage["load"]["peak_rss_mb"] - before < BALLAST_MB - NOISE_MB
    assert profile["after_cleanup"]["rss_mb"] - before < NOISE_MB


def test_a_stage_rerun_by_the_oom_ladder_is_recorded_once_per_level(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    fault = {"stage": "decode", "kind": "oom", "ballast_mb": 20, "only_at_level": 0}
    outcome = worker.run(RunJob("ladder", {"prompt": "x", "fault": fault}))
    assert isinstance(outcome, JobDone) and outcome.result["memory_level"] == 1
    decodes = [s["memory_level"] for s in outcome.result["memory_profile"]["stages"] if s["stage"] == "decode"]
    assert decodes == [0, 1]


def test_the_meter_resets_between_stages() -> None:
    profiler = StageProfiler(PeakMeter())
    profiler.begin("big")
    block = bytearray(200 * 2**20)
    block[:: 4096] = b"\1" * len(block[:: 4096])  # touch every page
    del block
    profiler.begin("small")
    profiler.end()
    big, small = profiler.profile.stages
    assert big.peak_rss_mb - small.peak_rss_mb > 150
    data = profiler.after_cleanup(MemoryFigures(rss_mb=10.0, baseline_rss_mb=9.0))
    assert data["after_cleanup"]["rss_mb"] == 10.0 and len(data["stages"]) == 2
