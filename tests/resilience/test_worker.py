"""The worker's job loop in this process (no spawn): failures become text and free their memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steadyframe.settings import Settings
from steadyframe.worker import faults, memory
from steadyframe.worker.ladder import next_level, supported_levels
from steadyframe.worker.messages import JobDone, JobFailed, Progress, RunJob
from steadyframe.worker.process import Worker
from steadyframe.testing.synthetic_runner import run_job as synthetic_run_job

BALLAST_MB = 400
# Anything well under the ballast proves it was freed; the rest is allocator noise.
TOLERANCE_MB = 120


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


@pytest.mark.parametrize("kind", ["oom", "error", "device_error"])
def test_a_failed_job_frees_its_ballast_before_reporting(tmp_path: Path, kind: str) -> None:
    worker = _worker(tmp_path, max_memory_level=0)
    worker.run(RunJob("warm", {"prompt": "warm up"}))
    before = memory.rss_mb()
    outcome = worker.run(
        RunJob("j", {"prompt": "x", "fault": {"stage": "denoise", "kind": kind, "ballast_mb": BALLAST_MB}})
    )
    assert isinstance(outcome, JobFailed) and outcome.stage == "denoise"
    assert outcome.recycle == (kind == "device_error")
    assert "Traceback" in outcome.traceback and "injected" in outcome.traceback
    assert outcome.memory.rss_mb - before < TOLERANCE_MB
    assert worker.models.loaded() == []  # everything unloaded after a failure
    assert not (tmp_path / "outputs" / "j").exists()


def test_the_oom_ladder_retries_at_the_next_level_and_records_it(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    outcome = worker.run(
        RunJob("j", {"prompt": "x", "fault": {"stage": "decode", "kind": "oom", "ballast_mb": 50, "only_at_level": 0}})
    )
    assert isinstance(outcome, JobDone) and outcome.result["memory_level"] == 1


def test_the_oom_ladder_gives_up_at_the_configured_level(tmp_path: Path) -> None:
    worker = _worker(tmp_path, max_memory_level=0)
    outcome = worker.run(
        RunJob("j", {"prompt": "x", "fault": {"stage": "decode", "kind": "oom", "only_at_level": 0}})
    )
    assert isinstance(outcome, JobFailed) and outcome.kind == "out_of_memory"


def test_ladder_levels_skip_offload_on_cpu() -> None:
    assert supported_levels("cpu", 5) == [0, 1, 2]  # VAE tiling and fp8 storage run on a CPU; offload does not
    assert supported_levels("cuda:1", 3) == [0, 1, 2, 3]
    assert supported_levels("cuda", 2) == [0, 1, 2]
    assert next_level(1, [0, 1, 2, 3]) == 2 and next_level(1, [0, 1]) is None


def test_a_fault_is_refused_when_injection_is_off(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    worker.settings = worker.settings.model_copy(update={"fault_injection": False})
    outcome = worker.run(RunJob("j", {"prompt": "x", "fault": {"stage": "denoise", "kind": "crash"}}))
    assert isinstance(outcome, JobFailed) and outcome.kind == "invalid_input"
    assert "fault injection is off" in outcome.message


def test_cancel_stops_the_job_at_its_next_step(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    channel: Channel = worker.channel  # type: ignore[assignment]

    class CancelAtFirstStep(Channel):
        def send(self, message: Any) -> None:
            if isinstance(message, Progress) and message.stage == "denoise" and message.step == 1:
                worker.cancel.set()

    worker.channel = CancelAtFirstStep()  # type: ignore[assignment]
    worker.current_job = "j"
    outcome = worker.run(RunJob("j", {"prompt": "x", "steps": 50}))
    assert isinstance(outcome, JobFailed) and outcome.kind == "cancelled" and outcome.stage == "denoise"
    assert channel.sent == []


def test_a_leak_keeps_memory_until_the_process_goes(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    worker.run(RunJob("warm", {"prompt": "warm up"}))
    try:
        outcome = worker.run(RunJob("j", {"prompt": "x", "fault": {"stage": "decode", "kind": "leak", "ballast_mb": 200}}))
        assert isinstance(outcome, JobDone)
        assert outcome.memory.excess_mb > 150  # what the supervisor's recycle check sees
    finally:
        faults.LEAKED.clear()


def test_progress_is_reported_for_every_stage(tmp_path: Path) -> None:
    worker = _worker(tmp_path)
    outcome = worker.run(RunJob("j", {"prompt": "x", "steps": 2, "upscale": 2, "interpolate": 2}))
    assert isinstance(outcome, JobDone)
    stages = {m.stage for m in worker.channel.sent if isinstance(m, Progress)}  # type: ignore[attr-defined]
    assert stages == {"load", "encode_prompt", "denoise", "decode", "upscale", "interpolate", "encode_video", "save"}
    assert set(outcome.stage_seconds) == stages


def test_listener_cancel_only_applies_to_the_current_job(tmp_path: Path) -> None:
    from steadyframe.worker.messages import CancelJob

    worker = _worker(tmp_path)
    worker.current_job = "mine"

    def listen_to(*messages: Any) -> None:
        feed = iter(messages)

        class Feed:
            def recv(self) -> Any:
                try:
                    return next(feed)
                except StopIteration:
                    raise SystemExit from None  # ends the listener loop in this test

        worker.channel = Feed()  # type: ignore[assignment]
        with pytest.raises(SystemExit):
            worker.listen()

    listen_to(CancelJob("someone else's"))
    assert not worker.cancel.is_set()
    listen_to(CancelJob("mine"))
    assert worker.cancel.is_set()
