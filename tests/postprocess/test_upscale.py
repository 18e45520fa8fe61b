"""Upscaling frames through spandrel: sizes, tiling, scale adaptation, refusals, progress."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.postprocess import upscale_frames


def no_progress(done: int, total: int) -> None:
    return None


def run(frames: np.ndarray, weights: Path, scale: int, provider, **kwargs) -> np.ndarray:
    return upscale_frames(
        frames, weights=weights, scale=scale, device="cpu", models=provider, on_frame=no_progress, **kwargs
    )


@pytest.mark.parametrize(
    ("name", "tile"),
    [("RealESRGAN_x4plus.pth", 64), ("realesr-general-x4v3.pth", 64), ("RealESRGAN_x2plus.pth", 64)],
)
def test_tiled_and_untiled_agree_on_structured_content(
    weights_dir: Path, provider, make_frame, name: str, tile: int
) -> None:
    frames = make_frame(121, 163)[None]
    whole = run(frames, weights_dir / name, 4, provider, tile=0).astype(np.int16)
    tiled = run(frames, weights_dir / name, 4, provider, tile=tile).astype(np.int16)
    difference = np.abs(whole - tiled)
    assert whole.std() > 5  # the network's output has structure, so agreement means something
    assert difference.mean() < 0.05
    assert difference.max() <= 4


@pytest.mark.parametrize(
    ("height", "width", "scale", "name"),
    [
        (480, 720, 2, "realesr-animevideov3.pth"),
        (768, 1360, 2, "realesr-general-x4v3.pth"),
        (33, 47, 4, "RealESRGAN_x4plus.pth"),
        (33, 47, 2, "RealESRGAN_x2plus.pth"),
        (31, 45, 4, "RealESRGAN_x4plus.safetensors"),
    ],
)
def test_output_size_is_input_times_scale(
    weights_dir: Path, provider, make_frame, height: int, width: int, scale: int, name: str
) -> None:
    frames = make_frame(height, width)[None]
    out = run(frames, weights_dir / name, scale, provider)
    assert out.shape == (1, height * scale, width * scale, 3) and out.dtype == np.uint8


def test_x2_from_an_x4_network_is_the_x4_result_resized_down(weights_dir: Path, provider, make_frame) -> None:
    frames = make_frame(40, 56)[None]
    x4 = run(frames, weights_dir / "RealESRGAN_x4.pth", 4, provider).astype(np.float64)
    x2 = run(frames, weights_dir / "RealESRGAN_x4.pth", 2, provider).astype(np.float64)
    assert x2.shape == (1, 80, 112, 3)
    box = x4.reshape(1, 80, 2, 112, 2, 3).mean(axis=(2, 4))
    assert np.abs(box - x2).mean() < 6  # an antialiased downscale stays close to a 2×2 box average


def test_x4_from_an_x2_network_runs_it_twice(weights_dir: Path, provider, make_frame) -> None:
    frames = make_frame(24, 32)[None]
    once = run(frames, weights_dir / "RealESRGAN_x2plus.pth", 2, provider)
    twice = run(once, weights_dir / "RealESRGAN_x2plus.pth", 2, provider).astype(np.int16)
    direct = run(frames, weights_dir / "RealESRGAN_x2plus.pth", 4, provider).astype(np.int16)
    assert direct.shape == (1, 96, 128, 3)
    # only the uint8 rounding between the two separate calls differs (amplified a little by pass two)
    assert np.abs(direct - twice).mean() < 0.1 and np.abs(direct - twice).max() <= 4


def test_frames_go_through_the_provider_and_progress_is_reported_per_frame(
    weights_dir: Path, provider, make_clip
) -> None:
    calls: list[tuple[int, int]] = []
    frames = make_clip(3, 16, 24)
    out = upscale_frames(
        frames,
        weights=weights_dir / "realesr-general-x4v3.pth",
        scale=4,
        device="cpu",
        models=provider,
        on_frame=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert provider.keys == [f"upscale:{(weights_dir / 'realesr-general-x4v3.pth').resolve()}@cpu"]
    assert provider.loaded == ["Upscaler"]
    assert not np.array_equal(out[0], out[1])  # each frame is its own result


def test_an_error_raised_by_progress_propagates(weights_dir: Path, provider, make_clip) -> None:
    class Stop(Exception):
        pass

    def cancel_after_first(done: int, total: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        upscale_frames(
            make_clip(3, 16, 16),
            weights=weights_dir / "realesr-general-x4v3.pth",
            scale=2,
            device="cpu",
            models=provider,
            on_frame=cancel_after_first,
        )


def test_a_restoration_model_is_refused_as_not_super_resolution(weights_dir: Path, provider, make_frame) -> None:
    with pytest.raises(ModelUnavailableError, match="restoration_x1.pth.*not a single-image super-resolution"):
        run(make_frame(16, 16)[None], weights_dir / "restoration_x1.pth", 2, provider)


def test_a_rife_file_is_refused_by_the_upscaler(weights_dir: Path, provider, make_frame, tmp_path: Path) -> None:
    renamed = tmp_path / "flownet.pth"
    renamed.write_bytes((weights_dir / "v4" / "flownet.pkl").read_bytes())
    with pytest.raises(ModelUnavailableError, match="'flownet.pth' is not an image model"):
        run(make_frame(16, 16)[None], renamed, 2, provider)


def test_a_corrupt_file_is_reported_without_its_path(provider, make_frame, tmp_path: Path) -> None:
    broken = tmp_path / "RealESRGAN_x4plus.pth"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ModelUnavailableError) as caught:
        run(make_frame(16, 16)[None], broken, 4, provider)
    assert "'RealESRGAN_x4plus.pth' could not be read" in caught.value.message
    assert str(tmp_path) not in caught.value.message


def test_a_missing_file_is_model_unavailable_before_anything_loads(provider, make_frame, tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="'RealESRGAN_x4plus.pth' was not found"):
        run(make_frame(16, 16)[None], tmp_path / "RealESRGAN_x4plus.pth", 4, provider)
    assert provider.keys == []


@pytest.mark.parametrize(
    "frames",
    [
        np.zeros((2, 8, 8, 3), np.float32),
        np.zeros((8, 8, 3), np.uint8),
        np.zeros((2, 8, 8, 4), np.uint8),
        np.zeros((0, 8, 8, 3), np.uint8),
    ],
)
def test_bad_frames_are_invalid_input(weights_dir: Path, provider, frames: np.ndarray) -> None:
    with pytest.raises(InvalidInputError):
        run(frames, weights_dir / "RealESRGAN_x4plus.pth", 4, provider)


def test_scale_one_returns_the_input_without_loading(provider, make_clip, tmp_path: Path) -> None:
    frames = make_clip(2, 8, 8)
    assert run(frames, tmp_path / "absent.pth", 1, provider) is frames
    assert provider.keys == []
    with pytest.raises(InvalidInputError, match="one of"):
        run(frames, tmp_path / "absent.pth", 3, provider)
