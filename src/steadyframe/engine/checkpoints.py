"""Stage checkpoints and stage frames: what a job finished (latents after denoise, frames after
decode, upscale and interpolate) kept in its folder, so any retry resumes after the last finished stage.

Every stage's frames go to a frame file in this folder as they are made (``frame_file``): that is
how frames stream between stages with bounded host memory, and the same file is the stage's
checkpoint, so keeping a checkpoint costs no second copy. A checkpoint counts only once its
manifest is written, last and atomically; the manifest names the job's fingerprint (its spec
without the injected fault), so a different job never resumes from it. With checkpoints off
(``keep=False``) the files are still written but no manifest is, so no retry trusts them.
The folder lies inside the job's output folder (``job_files.checkpoints_dir``): retention counts
it, and it goes with the job's outputs when the job ends.
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

from steadyframe.errors import DiskFullError
from steadyframe.frame_file import FrameFile, write_frames
from steadyframe.logs import get_logger
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

log = get_logger("engine.checkpoints")

MANIFEST = "checkpoint.json"
# The stages after which a checkpoint is written, in execution order.
CHECKPOINT_STAGES = (Stage.DENOISE, Stage.DECODE, Stage.UPSCALE, Stage.INTERPOLATE)


def check_disk_for(folder: Path, size: int, what: str) -> None:
    """Raise DiskFullError, before the first byte, when ``size`` bytes of ``what`` cannot fit the free disk."""
    probe = folder
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if size > free:
        raise DiskFullError(
            f"{what} needs {size / 2**30:.1f} GB of disk for its frames; {free / 2**30:.1f} GB is free.",
            advice="Free disk space in the data folder, or lower the frame count, upscale or interpolation factor.",
        )


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

    def frames(self) -> FrameFile:
        assert self.stage != Stage.DENOISE
        return FrameFile(self.path)  # read a frame at a time, like any stage's output


class StageCheckpoints:
    """The stage files of one job in ``folder``; ``keep`` writes the manifests that make them checkpoints."""

    def __init__(self, folder: Path, spec: JobSpec, *, keep: bool = True) -> None:
        self.folder = folder
        self.keep = keep
        self.fingerprint = fingerprint(spec)
        self.speed: dict[str, Any] = {}  # set after denoise; kept in every manifest that follows
        self._current: Path | None = None  # the newest finished stage's file, dropped when the next one is

    def latest(self) -> Checkpoint | None:
        """The checkpoint a retry resumes from, or None (none, another job's, or unreadable)."""
        if not self.keep:
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

    def frames_path(self, stage: Stage, nbytes: int, what: str) -> Path:
        """Where ``stage`` streams its ``nbytes`` of frames; DiskFullError now when they cannot fit."""
        check_disk_for(self.folder, nbytes, what)
        return self.folder / f"{stage.value}.npy"

    def save_latents(self, latents: torch.Tensor, seed: int) -> None:
        if self.keep:
            self._save(Stage.DENOISE, seed, "latents.pt", lambda path: torch.save(latents.detach().cpu(), path))

    def write_frames(self, stage: Stage, frames: np.ndarray, seed: int) -> FrameFile:
        """An in-memory stage output (the VAE's decoded clip) to its frame file, committed -> the file."""
        path = self.frames_path(stage, frames.nbytes, "Decoding")
        saved = write_frames(path, np.ascontiguousarray(frames))
        self.commit_frames(stage, saved, seed)
        return saved

    def commit_frames(self, stage: Stage, frames: FrameFile, seed: int) -> None:
        """``stage`` finished into ``frames`` (its file in this folder): make it the checkpoint, and
        drop the stage file before it, which nothing reads any more."""
        if self.keep:
            self._save(stage, seed, frames.path.name, lambda path: None)
        elif self._current is not None and self._current != frames.path:
            self._current.unlink(missing_ok=True)
        self._current = frames.path

    def _save(self, stage: Stage, seed: int, name: str, write: Any) -> None:
        """Write the data (``write`` may do nothing: a frame file is already in place), then the
        manifest (atomic rename), then drop the previous stage's file."""
        partial = self.folder / (name + ".partial")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            previous = self.latest()
            write(partial)
            if partial.exists():
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
        shutil.rmtree(self.folder, ignore_errors=True)
