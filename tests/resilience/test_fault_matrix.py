"""Every stage x every fault kind on the real engine (tiny CogVideoX, tiny upscaler and RIFE).

For each case: the supervisor stays up, the job ends with the right status and kind, its error
id is in the log next to a traceback (or the dying worker's stacks), the summed RSS of supervisor
and worker comes back to the idle baseline measured just before, and a normal job then succeeds.

Memory tolerance: 150 MB for 300 MB of ballast. Any tolerance under the ballast proves the ballast
was freed; half of it leaves room for allocator noise and for a replacement worker's first-use
growth (about 40 MB measured here), on a busy 2-core machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyframe.logs import find_error
from steadyframe.stages import FaultKind, Stage
from steadyframe.testing.tiny_weights import save_practical_rife_v4, save_realesrgan_x2plus

from .conftest import Harness, make_settings

ENGINE = "steadyframe.engine:run_job"
BALLAST_MB = 300
RSS_TOLERANCE_MB = 150

# kind -> (final status, error kind or None, worker replaced, text expected in the logged traceback)
EXPECTED: dict[FaultKind, tuple[str, str | None, bool, str]] = {
    FaultKind.OOM: ("failed", "out_of_memory", False, "OutOfMemoryError"),
    FaultKind.ERROR: ("failed", "internal", False, "Traceback (most recent call last)"),
    FaultKind.DEVICE_ERROR: ("failed", "device_error", True, "illegal memory access"),
    FaultKind.CRASH: ("failed", "worker_lost", True, "Segmentation fault"),
    FaultKind.HANG: ("failed", "timeout", True, "faults.py"),
    FaultKind.LEAK: ("succeeded", None, True, ""),
}
# An out-of-memory in these stages is recovered inside the stage (VAE tiling, smaller upscale tiles,
# a lower RIFE flow scale): the injected fault fires once, the stage's retry succeeds.
STAGE_LOCAL_OOM = {Stage.DECODE, Stage.UPSCALE, Stage.INTERPOLATE}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("matrix")
    # 5 s without progress = hung: the longest quiet gap of a normal tiny job here is about 1 s.
    settings = make_settings(data_dir, max_attempts=1, stall_timeout_s=5.0)
    harness = Harness(settings, ENGINE).start()
    spec = {
        "prompt": "a red ball rolling",
        "steps": 2,
        "upscale": 2,
        "interpolate": 2,
        "upscale_model": str(save_realesrgan_x2plus(data_dir / "RealESRGAN_x2plus.pth")),
        "rife_model": str(save_practical_rife_v4(data_dir / "flownet.pkl")),
    }
    warm = harness.run(spec)  # builds the tiny model once, warms the worker
    assert warm.status == "succeeded", warm.error
    yield harness, spec
    harness.stop()


@pytest.mark.parametrize("kind", list(FaultKind))
@pytest.mark.parametrize("stage", list(Stage))
def test_fault_in_every_stage_is_survived_and_memory_returns(
    engine: tuple[Harness, dict[str, Any]], stage: Stage, kind: FaultKind
) -> None:
    harness, spec = engine
    status, error_kind, replaced, fragment = EXPECTED[kind]
    if kind == FaultKind.OOM and stage in STAGE_LOCAL_OOM:
        status, error_kind = "succeeded", None  # recovered inside the stage (see STAGE_LOCAL_OOM)
    pid = harness.wait_ready()
    before = harness.summed_rss_mb()

    record = harness.run({**spec, "fault": {"stage": stage.value, "kind": kind.value, "ballast_mb": BALLAST_MB}})

    assert record.status == status, record.error
    if status == "succeeded" and kind == FaultKind.OOM:
        assert record.result is not None and stage.value in record.result["stage_recoveries"], record.result
    if error_kind is not None:
        assert record.error is not None and record.error.kind == error_kind
        assert record.error.stage == stage.value and record.error.message and record.error.advice
        assert "/" not in record.error.message
        lines = find_error(harness.settings.logs_dir, record.error.error_id)
        assert any(fragment in (line.get("traceback") or "") for line in lines), lines
    new_pid = harness.wait_ready(not_pid=pid if replaced else None)
    assert (new_pid != pid) == replaced
    assert harness.summed_rss_mb() - before < RSS_TOLERANCE_MB
    after = harness.run({"prompt": "the next job", "steps": 1})
    assert after.status == "succeeded", after.error


def test_the_oom_ladder_recovers_a_real_job_at_the_next_memory_level(engine: tuple[Harness, dict[str, Any]]) -> None:
    harness, spec = engine
    harness.wait_ready()
    fault = {"stage": "denoise", "kind": "oom", "ballast_mb": 100, "only_at_level": 0}
    record = harness.run({**spec, "fault": fault})
    assert record.status == "succeeded", record.error
    assert record.result is not None and record.result["memory_level"] == 1  # VAE slicing + tiling
    assert record.result["resumed_from"] is None  # denoise had not finished: nothing to resume from
    assert Path(record.result["video_path"]).exists()
