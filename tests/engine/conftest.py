"""Fixtures for the engine tests: one shared built-in model folder, a settings object per test,
a provider that keeps pipelines loaded across tests, and small input files."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from steadyframe.settings import Settings
from steadyframe.stages import Stage


@pytest.fixture(scope="session")
def shared_builtin_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One built-in-models folder for the whole run; xdist workers share it (builds are atomic)."""
    root = tmp_path_factory.getbasetemp()
    shared = (root.parent if root.name.startswith("popen-gw") else root) / "steadyframe-builtin-models"
    shared.mkdir(exist_ok=True)
    return shared


@pytest.fixture
def settings(tmp_path: Path, shared_builtin_dir: Path) -> Settings:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "builtin-models").symlink_to(shared_builtin_dir, target_is_directory=True)
    return Settings(data_dir=data_dir, device="cpu", model=None)


class KeepLoaded:
    """A model provider that keeps every pipeline it loads, so tests can reuse and inspect them."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}
        self.keys: list[str] = []

    def acquire(self, key: str, loader: Callable[[], Any], *, size_mb: float | None = None) -> Any:
        @contextmanager
        def _held() -> Iterator[Any]:
            if key not in self.loaded:
                self.loaded[key] = loader()
            self.keys.append(key)
            yield self.loaded[key]

        return _held()

    def last(self) -> Any:
        return self.loaded[self.keys[-1]]


@pytest.fixture(scope="session")
def keep_loaded() -> KeepLoaded:
    return KeepLoaded()


class RecordingHooks:
    """Hooks that record every call as (kind, stage, a, b)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None, int | None]] = []

    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        self.calls.append(("enter", str(stage), total, None))

    def step(self, stage: Stage, step: int, total: int) -> None:
        self.calls.append(("step", str(stage), step, total))

    @property
    def stages(self) -> list[str]:
        return [stage for kind, stage, _, _ in self.calls if kind == "enter"]

    def steps(self, stage: str) -> list[tuple[int, int]]:
        return [(a, b) for kind, s, a, b in self.calls if kind == "step" and s == stage]


@pytest.fixture
def hooks() -> RecordingHooks:
    return RecordingHooks()


def _gradient_frame(width: int, height: int, shift: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 2 + shift) % 256, (y * 3 + shift * 2) % 256, ((x + y) + shift * 5) % 256], -1).astype(np.uint8)


@pytest.fixture(scope="session")
def image_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inputs") / "input.png"
    Image.fromarray(_gradient_frame(150, 90, 7)).save(path)
    return path


@pytest.fixture(scope="session")
def video_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second 24 fps 128×80 H.264 clip whose frames differ from each other."""
    from steadyframe.video_io import write_mp4

    frames = np.stack([_gradient_frame(128, 80, i * 9) for i in range(48)])
    return write_mp4(frames, tmp_path_factory.mktemp("inputs") / "input.mp4", fps=24)
