"""Stage files and checkpoints: each stage's frames stream to a frame file in the job's folder; the
file becomes a checkpoint only with its manifest, only for the same job; a stage whose frames
cannot fit the disk is refused before its first byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steadyframe.engine import checkpoints as ckpt
from steadyframe.errors import DiskFullError
from steadyframe.frame_file import FrameFile, FrameWriter
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

SPEC = JobSpec(prompt="a red ball", steps=2, seed=5)


def _random_frames(count: int, height: int = 4, width: int = 5) -> np.ndarray:
    return np.random.default_rng(count).integers(0, 255, (count, height, width, 3), dtype=np.uint8)


def _stream(saved: ckpt.StageCheckpoints, stage: Stage, frames: np.ndarray) -> FrameFile:
    """What a post stage does: write its frames one by one to the stage's file."""
    with FrameWriter(saved.frames_path(stage, frames.nbytes, stage.value), frames.shape) as writer:
        for frame in frames:
            writer.append(frame)
        return writer.finish()


def test_the_latest_stage_wins_and_earlier_files_go(tmp_path: Path) -> None:
    saved = ckpt.StageCheckpoints(tmp_path / "c", SPEC)
    assert saved.latest() is None
    saved.save_latents(torch.arange(6.0).reshape(1, 6), seed=11)
    assert saved.latest().stage == Stage.DENOISE and torch.equal(saved.latest().latents(), torch.arange(6.0).reshape(1, 6))
    frames = _random_frames(3)
    decoded = saved.write_frames(Stage.DECODE, frames, seed=11)
    latest = saved.latest()
    assert latest is not None and latest.stage == Stage.DECODE and latest.seed == 11
    assert np.array_equal(latest.frames()[:], frames) and np.array_equal(decoded[1], frames[1])
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["checkpoint.json", "decode.npy"]

    upscaled = _stream(saved, Stage.UPSCALE, _random_frames(3, 8, 10))
    saved.commit_frames(Stage.UPSCALE, upscaled, seed=11)
    assert saved.latest().stage == Stage.UPSCALE  # the stage's own file is the checkpoint: no copy
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["checkpoint.json", "upscale.npy"]
    assert np.array_equal(decoded[2], frames[2])  # a reader holding the dropped file still reads it
    saved.discard()
    assert not (tmp_path / "c").exists()


def test_without_checkpoints_stage_files_stream_but_no_retry_trusts_them(tmp_path: Path) -> None:
    saved = ckpt.StageCheckpoints(tmp_path, SPEC, keep=False)
    saved.save_latents(torch.zeros(2), seed=5)
    saved.write_frames(Stage.DECODE, _random_frames(2), seed=5)
    assert saved.latest() is None and sorted(p.name for p in tmp_path.iterdir()) == ["decode.npy"]
    saved.commit_frames(Stage.UPSCALE, _stream(saved, Stage.UPSCALE, _random_frames(2, 8, 10)), seed=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upscale.npy"]  # the decode file went


def test_another_job_or_a_fault_change_only(tmp_path: Path) -> None:
    ckpt.StageCheckpoints(tmp_path, SPEC).write_frames(Stage.DECODE, np.zeros((1, 2, 2, 3), np.uint8), seed=5)
    other = JobSpec(prompt="a blue ball", steps=2, seed=5)
    assert ckpt.StageCheckpoints(tmp_path, other).latest() is None
    with_fault = JobSpec.model_validate({**SPEC.model_dump(mode="json"), "fault": {"stage": "upscale", "kind": "crash"}})
    assert ckpt.StageCheckpoints(tmp_path, with_fault).latest() is not None


def test_a_full_disk_mid_stage_leaves_no_checkpoint_and_no_partial_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = ckpt.StageCheckpoints(tmp_path, SPEC)
    saved.write_frames(Stage.DECODE, _random_frames(2), seed=5)
    written = {"frames": 0}
    append = FrameWriter.append

    def fills_the_disk(self: FrameWriter, frames: np.ndarray) -> None:
        if written["frames"] == 1:
            raise OSError(28, "No space left on device")
        written["frames"] += 1
        append(self, frames)

    monkeypatch.setattr(FrameWriter, "append", fills_the_disk)
    with pytest.raises(OSError):
        _stream(saved, Stage.UPSCALE, _random_frames(2, 8, 10))
    assert saved.latest().stage == Stage.DECODE  # a retry resumes from what did finish
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.json", "decode.npy"]


def test_a_failed_manifest_write_only_costs_the_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = ckpt.StageCheckpoints(tmp_path, SPEC)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    saved.save_latents(torch.zeros(3), seed=5)  # no exception: the job goes on without it
    assert saved.latest() is None and list(tmp_path.iterdir()) == []


def test_frames_that_cannot_fit_the_free_disk_are_refused_before_the_first_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: type("U", (), {"free": 100})())
    saved = ckpt.StageCheckpoints(tmp_path / "c", SPEC)
    with pytest.raises(DiskFullError) as refused:
        saved.frames_path(Stage.UPSCALE, 300, "Upscaling")
    assert "Upscaling needs" in refused.value.message and "lower the frame count" in (refused.value.advice or "")
    assert not (tmp_path / "c").exists()
