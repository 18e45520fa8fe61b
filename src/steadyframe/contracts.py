"""The interfaces between the engine (stages) and whoever runs it (CLI, worker). No torch.

The engine calls ``JobHooks`` at every stage boundary and step: that is where progress is
reported, cancel is checked and (in the worker, when enabled) faults are injected. It gets
models only through a ``ModelProvider`` so the worker's model manager decides what stays loaded.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Protocol, TypeVar

from steadyframe.stages import Stage

T = TypeVar("T")


class JobHooks(Protocol):
    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        """Called once as ``stage`` begins; ``total`` is its step/frame count when known."""

    def step(self, stage: Stage, step: int, total: int) -> None:
        """Called after step ``step`` (1-based) of ``total``; may raise ``JobCancelled``."""


class NullHooks:
    """Hooks that do nothing: direct library use and tests of the bare engine."""

    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        return None

    def step(self, stage: Stage, step: int, total: int) -> None:
        return None


class ModelProvider(Protocol):
    def acquire(self, key: str, loader: Callable[[], T], *, size_mb: float | None = None) -> AbstractContextManager[T]:
        """Yield the model under ``key``, calling ``loader()`` if it is not loaded."""


class LoadEachTime:
    """A provider that keeps nothing: load on acquire, drop the reference on release."""

    def acquire(self, key: str, loader: Callable[[], T], *, size_mb: float | None = None) -> AbstractContextManager[T]:
        @contextmanager
        def _held() -> Iterator[T]:
            model = loader()
            try:
                yield model
            finally:
                del model

        return _held()


@dataclass
class JobResult:
    """What a finished job produced; JSON-serialisable through ``to_dict``."""

    video_path: str
    gif_path: str
    sidecar_path: str
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    memory_level: int = 0
    model: str = ""
    family: str = ""
    test_noise: bool = False
    timings: dict[str, float] = field(default_factory=dict)
    resumed_from: str | None = None  # the last stage an earlier attempt finished (its checkpoint)
    stage_recoveries: dict[str, str] = field(default_factory=dict)  # stage -> what got it past an OOM
    speed: dict[str, Any] = field(default_factory=dict)
    memory_profile: dict[str, Any] | None = None  # peak RSS/VRAM per stage, added by the worker  # what ran: speed, cache, its knobs, attention kernel

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JobResult":
        return cls(**data)
