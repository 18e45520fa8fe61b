"""The CLI's path: one job through a private supervisor and worker, files moved to the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from steadyframe.errors import ErrorKind
from steadyframe.logs import find_error
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage
from steadyframe.supervisor.oneshot import JobFailedError, run_one

from .conftest import SYNTHETIC, make_settings


class Recorder:
    def __init__(self) -> None:
        self.stages: list[str] = []
        self.steps: list[tuple[str, int, int]] = []

    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        self.stages.append(stage.value)

    def step(self, stage: Stage, step: int, total: int) -> None:
        self.steps.append((stage.value, step, total))


def test_a_job_runs_in_a_worker_and_its_files_land_in_the_output_folder(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data", log_to_stderr=False)
    hooks = Recorder()
    result = run_one(JobSpec(prompt="a cat", steps=3), settings, tmp_path / "out", hooks, runner=SYNTHETIC)
    assert Path(result.video_path).parent == tmp_path / "out" and Path(result.video_path).exists()
    assert hooks.stages and hooks.stages[-1] == "save"  # progress relayed through the store
    assert not any(settings.outputs_dir.iterdir())  # nothing left behind in the data folder


@pytest.mark.parametrize(
    "fault,kind",
    [
        ({"stage": "decode", "kind": "crash"}, ErrorKind.WORKER_LOST),
        ({"stage": "denoise", "kind": "oom"}, ErrorKind.OUT_OF_MEMORY),
    ],
)
def test_a_failure_raises_one_error_with_kind_advice_and_a_logged_error_id(
    tmp_path: Path, fault: dict[str, Any], kind: ErrorKind
) -> None:
    settings = make_settings(tmp_path / "data", log_to_stderr=False, max_attempts=1)
    with pytest.raises(JobFailedError) as caught:
        run_one(JobSpec(prompt="x", fault=fault), settings, tmp_path / "out", Recorder(), runner=SYNTHETIC)
    error = caught.value
    assert error.kind == kind and error.advice and f"(error id {error.error_id})" in error.message
    assert find_error(settings.logs_dir, error.error_id)
    assert not (tmp_path / "out").exists()
