"""Stage checkpoints: what a job finished (latents after denoise, frames after decode, upscale and
interpolate) kept in its folder, so any retry resumes after the last finished stage.

A checkpoint counts only once its manifest is written, last and atomically; the manifest names the
job's fingerprint (its spec without the injected fault), so a different job never resumes from it.
Frames are saved as ``.npy`` and read back memory-mapped, so resuming does not double host memory.
The folder lies inside the job's output folder (``job_files.checkpoints_dir``): retention counts it,
and it goes with the job's outputs when the job ends.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steadyframe.logs import get_logger
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

log = get_logger("engine.checkpoints")

MANIFEST = "checkpoint.json"
# The stages after which a checkpoint is written, in execution order.
CHECKPOINT_STAGES = (Stage.DENOISE, Stage.DECODE, Stage.UPSCALE, Stage.INTERPOLATE)


def _fits_on_disk(folder: Path, size: int) -> bool:
    """A checkpoint may take at most half the free disk (a 4K ×4 interpolation is tens of GB)."""
    probe = folder if folder.exists() else folder.parent
    while not probe.exists():
        probe = probe.parent
    return size <= shutil.disk_usage(probe).free // 2


def fingerprint(spec: JobSpec) -> str:
    """What makes two runs produce the same output: the spec, less the injected fault."""
    data = spec.model_dump(mode="json", exclude={"fault"})
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Checkpoint:
    """The last finished stage of an earlier attempt and what it left."""

    stage: Stage
    seed: int  # the seed that attempt drew (a spec without a seed draws one per attempt)
    path: Path
    speed: dict[str, Any] = field(default_factory=dict)  # what that attempt's denoise ran (speed option, cache)

    def latents(self) -> torch.Tensor:
        assert self.stage == Stage.DENOISE
        return torch.load(self.path, map_location="cpu", weights_only=True)

    def frames(self) -> np.ndarray:
        assert self.stage != Stage.DENOISE
        return np.load(self.path, mmap_mode="c")  # copy-on-write: writable, read lazily


class StageCheckpoints:
    """The checkpoints of one job in ``folder`` (``None``: keep none, e.g. the bare engine)."""

    def __init__(self, folder: Path | None, spec: JobSpec) -> None:
        self.folder = folder
        self.fingerprint = fingerprint(spec)
        self.speed: dict[str, Any] = {}  # set after denoise; kept in every manifest that follows

    def latest(self) -> Checkpoint | None:
        """The checkpoint a retry resumes from, or None (none, another job's, or unreadable)."""
        if self.folder is None:
            return None
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
            stage = Stage(manifest["stage"])
            path = self.folder / manifest["file"]
            if manifest["fingerprint"] != self.fingerprint or not path.is_file():
                return None
            return Checkpoint(stage=stage, seed=int(manifest["seed"]), path=path, speed=dict(manifest.get("speed") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def save_latents(self, latents: torch.Tensor, seed: int) -> None:
        self._save(Stage.DENOISE, seed, "latents.pt", lambda path: torch.save(latents.detach().cpu(), path))

    def save_frames(self, stage: Stage, frames: np.ndarray, seed: int) -> None:
        if self.folder is not None and not _fits_on_disk(self.folder, frames.nbytes):
            log.info("skipping the %s checkpoint: %.0f MB would take more than half the free disk", stage.value, frames.nbytes / 2**20)
            return

        def write(path: Path) -> None:
            with open(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(frames), allow_pickle=False)

        self._save(stage, seed, f"{stage.value}.npy", write)

    def _save(self, stage: Stage, seed: int, name: str, write: Any) -> None:
        """Write the data, then the manifest (atomic rename), then drop the previous stage's file."""
        if self.folder is None:
            return
        partial = self.folder / (name + ".partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            previous = self.latest()
            write(partial)
            os.replace(partial, self.folder / name)
            manifest = {
                "stage": stage.value, "file": name, "seed": seed, "fingerprint": self.fingerprint, "speed": self.speed,
            }  # fmt: skip
            staged = self.folder / (MANIFEST + ".partial")
            staged.write_text(json.dumps(manifest))
            os.replace(staged, self.folder / MANIFEST)
            if previous is not None and previous.path.name != name:
                previous.path.unlink(missing_ok=True)
        except (OSError, RuntimeError):  # torch.save reports a full disk as RuntimeError
            # A checkpoint is an optimisation: a full disk here must not fail a job that can go on.
            partial.unlink(missing_ok=True)
            log.warning("could not write the %s checkpoint; a retry would start earlier", stage.value, exc_info=True)

    def discard(self) -> None:
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
