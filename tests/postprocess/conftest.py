"""Fixtures for the post-processing tests: tiny weight files in official layouts, test frames."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from steadyframe.testing import tiny_weights


class RecordingProvider:
    """A ``ModelProvider`` that loads on every acquire and records the keys it was asked for."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.loaded: list[Any] = []

    def acquire(self, key: str, loader: Callable[[], Any], *, size_mb: float | None = None) -> Any:
        @contextmanager
        def held() -> Iterator[Any]:
            self.keys.append(key)
            model = loader()
            self.loaded.append(type(model).__name__)
            yield model

        return held()


@pytest.fixture
def provider() -> RecordingProvider:
    return RecordingProvider()


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder holding every tiny weight file, under its official file name."""
    folder = tmp_path_factory.mktemp("weights")
    tiny_weights.save_realesrgan_x4plus(folder / "RealESRGAN_x4plus.pth")
    tiny_weights.save_realesrgan_x2plus(folder / "RealESRGAN_x2plus.pth")
    tiny_weights.save_realesrgan_x4plus_anime_6b(folder / "RealESRGAN_x4plus_anime_6B.pth")
    tiny_weights.save_realesr_general_x4v3(folder / "realesr-general-x4v3.pth")
    tiny_weights.save_realesr_animevideov3(folder / "realesr-animevideov3.pth")
    tiny_weights.save_cogvideo_realesrgan_x4(folder / "RealESRGAN_x4.pth")
    tiny_weights.save_realesrgan_safetensors(folder / "RealESRGAN_x4plus.safetensors")
    tiny_weights.save_restoration_model(folder / "restoration_x1.pth")
    tiny_weights.save_rife_v3_hd(folder / "v3" / "flownet.pkl")
    tiny_weights.save_rife_v3_hd(folder / "v3-still" / "flownet.pkl", zero_flow=True)
    tiny_weights.save_practical_rife_v4(folder / "v4" / "flownet.pkl")
    tiny_weights.save_practical_rife_v4(folder / "v4-still" / "flownet.pkl", zero_flow=True)
    return folder


def structured_frame(height: int, width: int, shift: int = 0) -> np.ndarray:
    """RGB ``uint8 [H, W, 3]`` with waves, a gradient and a checkerboard, moved right by ``shift``."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    xx = xx - shift
    red = 128 + 100 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    green = xx * 255.0 / max(width, 1)
    blue = np.where(((xx // 16 + yy // 16) % 2) == 0, 40.0, 220.0)
    return np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8)


def moving_clip(frames: int, height: int, width: int, step: int = 2) -> np.ndarray:
    """A clip of ``structured_frame`` panning ``step`` pixels per frame."""
    return np.stack([structured_frame(height, width, shift=i * step) for i in range(frames)])


def ignore_progress(done: int, total: int) -> None:
    return None


@pytest.fixture
def make_frame() -> Callable[..., np.ndarray]:
    return structured_frame


@pytest.fixture
def make_clip() -> Callable[..., np.ndarray]:
    return moving_clip
