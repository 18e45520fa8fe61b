"""The frame-count / fps / size rules, and that the server-side modules stay torch-free."""

from __future__ import annotations

import subprocess
import sys

import pytest

from steadyframe.postprocess.plan import (
    PostprocessPlan,
    interpolated_fps,
    interpolated_frame_count,
    rife_flow_scale,
)


@pytest.mark.parametrize(
    ("frames", "factor", "expected"), [(49, 1, 49), (49, 2, 97), (49, 4, 193), (81, 2, 161), (1, 4, 1)]
)
def test_interpolation_keeps_first_and_last_frame_times(frames: int, factor: int, expected: int) -> None:
    assert interpolated_frame_count(frames, factor) == expected


def test_fps_doubles_and_quadruples_for_cogvideox_1_0_and_1_5() -> None:
    assert [interpolated_fps(8, k) for k in (1, 2, 4)] == [8, 16, 32]
    assert [interpolated_fps(16, k) for k in (1, 2, 4)] == [16, 32, 64]


def test_plan_reports_both_stages_for_the_sidecar() -> None:
    plan = PostprocessPlan(upscale=4, interpolate=2, in_frames=49, in_fps=8.0, in_width=720, in_height=480)
    data = plan.to_dict()
    assert (data["out_width"], data["out_height"], data["out_frames"], data["out_fps"]) == (2880, 1920, 97, 16.0)
    assert data["flow_scale"] == 0.5
    # the clip's duration between first and last frame is unchanged
    assert (plan.out_frames - 1) / plan.out_fps == (plan.in_frames - 1) / plan.in_fps


def test_flow_scale_is_halved_only_on_upscaled_frames() -> None:
    assert rife_flow_scale(1) == 1.0
    assert rife_flow_scale(2) == rife_flow_scale(4) == 0.5


@pytest.mark.parametrize("bad", [0, 3, 8])
def test_factors_outside_1_2_4_are_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        PostprocessPlan(upscale=bad, interpolate=1, in_frames=9, in_fps=8, in_width=64, in_height=64)


def test_server_side_modules_do_not_import_torch() -> None:
    code = (
        "import sys, steadyframe.postprocess, steadyframe.postprocess.plan, steadyframe.postprocess.weights;"
        "print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
