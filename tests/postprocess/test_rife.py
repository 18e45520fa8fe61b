"""RIFE interpolation: layouts, identity on still frames, sizes, counts, scene cuts, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.postprocess import interpolate_frames
from steadyframe.postprocess.rife import load_rife
from steadyframe.postprocess.runtime import frame_to_tensor, tensor_to_frame
from steadyframe.postprocess.scenecut import frame_similarity, is_scene_cut

CPU = torch.device("cpu")
LAYOUTS = ["v3", "v4"]


def no_progress(done: int, total: int) -> None:
    return None


def run(frames: np.ndarray, weights: Path, factor: int, provider, **kwargs) -> np.ndarray:
    return interpolate_frames(
        frames, weights=weights, factor=factor, device="cpu", models=provider, on_frame=no_progress, **kwargs
    )


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(("height", "width"), [(480, 720), (37, 51)])
def test_the_network_returns_the_input_for_two_identical_frames(
    weights_dir: Path, make_frame, layout: str, height: int, width: int
) -> None:
    """Zero-flow weights make every warp an identity: any grid, padding or crop error shows up here."""
    rife = load_rife(weights_dir / f"{layout}-still" / "flownet.pkl", CPU)
    frame = make_frame(height, width)
    padded = rife.pad(frame_to_tensor(frame, CPU, torch.float32), 1.0)
    with torch.inference_mode():
        middle = rife.predict(padded, padded, 0.5, 1.0)
    assert np.array_equal(tensor_to_frame(middle[:, :, :height, :width]), frame)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_identical_neighbours_are_repeated_exactly(weights_dir: Path, provider, make_frame, layout: str) -> None:
    frames = np.stack([make_frame(24, 40)] * 2)
    out = run(frames, weights_dir / layout / "flownet.pkl", 4, provider)
    assert out.shape == (5, 24, 40, 3) and all(np.array_equal(frame, frames[0]) for frame in out)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("factor", [2, 4])
def test_frame_count_and_original_frames_for_x2_and_x4(
    weights_dir: Path, provider, make_clip, layout: str, factor: int
) -> None:
    frames = make_clip(4, 32, 48)
    calls: list[tuple[int, int]] = []
    out = interpolate_frames(
        frames,
        weights=weights_dir / layout / "flownet.pkl",
        factor=factor,
        device="cpu",
        models=provider,
        on_frame=lambda done, total: calls.append((done, total)),
    )
    assert out.shape == ((4 - 1) * factor + 1, 32, 48, 3)
    for index in range(4):
        assert np.array_equal(out[index * factor], frames[index])  # originals are kept bit-exact
    inbetween = out[1]
    assert not np.array_equal(inbetween, frames[0]) and not np.array_equal(inbetween, frames[1])
    assert calls == [(done, out.shape[0]) for done in range(1, out.shape[0] + 1)]
    assert provider.keys == [f"rife:{(weights_dir / layout / 'flownet.pkl').resolve()}@cpu"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    ("height", "width", "flow_scale"), [(480, 720, 1.0), (768, 1360, 0.5), (35, 53, 1.0), (35, 53, 0.5)]
)
def test_output_size_matches_the_input_for_any_frame_size(
    weights_dir: Path, provider, make_clip, layout: str, height: int, width: int, flow_scale: float
) -> None:
    frames = make_clip(2, height, width, step=3)
    out = run(frames, weights_dir / layout / "flownet.pkl", 2, provider, flow_scale=flow_scale)
    assert out.shape == (3, height, width, 3)


def test_x4_with_a_midpoint_only_network_recurses_in_time_order(weights_dir: Path, make_clip) -> None:
    rife = load_rife(weights_dir / "v3" / "flownet.pkl", CPU)
    frames = make_clip(2, 32, 32, step=4)
    first = rife.pad(frame_to_tensor(frames[0], CPU, torch.float32), 1.0)
    last = rife.pad(frame_to_tensor(frames[1], CPU, torch.float32), 1.0)
    with torch.inference_mode():
        quarter, middle, three_quarters = list(rife.between(first, last, 4, 1.0))
        assert torch.equal(middle, rife.predict(first, last, 0.5, 1.0))
        assert torch.equal(quarter, rife.predict(first, middle, 0.5, 1.0))
        assert torch.equal(three_quarters, rife.predict(middle, last, 0.5, 1.0))
    with pytest.raises(ValueError, match="middle frame"):
        rife.predict(first, last, 0.25, 1.0)


def test_a_scene_cut_is_not_morphed(weights_dir: Path, provider, make_frame) -> None:
    shot_a = make_frame(48, 64)
    yy, xx = np.mgrid[0:48, 0:64]
    rings = 128 + 120 * np.cos(np.hypot(yy - 24, xx - 32) / 3)
    shot_b = np.stack([rings, rings, 0.5 * rings], axis=-1).astype(np.uint8)
    assert is_scene_cut(shot_a, shot_b)
    assert not is_scene_cut(shot_a, make_frame(48, 64, shift=3))  # small motion is not a cut
    frames = np.stack([shot_a, shot_b])
    out = run(frames, weights_dir / "v4" / "flownet.pkl", 4, provider)
    assert all(np.array_equal(out[i], shot_a) for i in range(4)) and np.array_equal(out[4], shot_b)


def test_similarity_is_one_for_the_same_frame_and_low_for_unrelated_ones(make_frame) -> None:
    frame = make_frame(40, 40)
    assert frame_similarity(frame, frame) == pytest.approx(1.0)
    noise = np.random.default_rng(0).integers(0, 256, frame.shape, dtype=np.uint8)
    assert frame_similarity(frame, noise) < 0.2


def test_a_non_rife_file_is_refused(weights_dir: Path, provider, make_clip) -> None:
    with pytest.raises(ModelUnavailableError, match="'RealESRGAN_x4.pth' is not a RIFE file"):
        run(make_clip(2, 16, 16), weights_dir / "RealESRGAN_x4.pth", 2, provider)


def test_a_truncated_rife_file_is_refused(weights_dir: Path, provider, make_clip, tmp_path: Path) -> None:
    truncated = tmp_path / "flownet.pkl"
    truncated.write_bytes((weights_dir / "v3" / "flownet.pkl").read_bytes()[:5000])
    with pytest.raises(ModelUnavailableError, match="'flownet.pkl' could not be read"):
        run(make_clip(2, 16, 16), truncated, 2, provider)


def test_a_file_missing_tensors_is_refused(weights_dir: Path, provider, make_clip, tmp_path: Path) -> None:
    state = torch.load(weights_dir / "v3" / "flownet.pkl", weights_only=True)
    del state["module.block2.conv1.2.weight"]
    broken = tmp_path / "flownet.pkl"
    torch.save(state, broken)
    with pytest.raises(ModelUnavailableError, match="do not match"):
        run(make_clip(2, 16, 16), broken, 2, provider)


def test_missing_weights_bad_factor_and_bad_flow_scale(weights_dir: Path, provider, make_clip, tmp_path: Path) -> None:
    frames = make_clip(2, 16, 16)
    with pytest.raises(ModelUnavailableError, match="'flownet.pkl' was not found"):
        run(frames, tmp_path / "flownet.pkl", 2, provider)
    with pytest.raises(InvalidInputError):
        run(frames, weights_dir / "v4" / "flownet.pkl", 3, provider)
    with pytest.raises(InvalidInputError):
        run(frames, weights_dir / "v4" / "flownet.pkl", 2, provider, flow_scale=0.3)
    single = make_clip(1, 16, 16)
    assert run(single, tmp_path / "absent.pkl", 4, provider) is single  # nothing to interpolate
