"""Stage checkpoint files: a checkpoint counts only with its manifest, only for the same job, and
never fills the disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steadyframe.engine import checkpoints as ckpt
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

SPEC = JobSpec(prompt="a red ball", steps=2, seed=5)


def test_the_latest_stage_wins_and_earlier_files_go(tmp_path: Path) -> None:
    saved = ckpt.StageCheckpoints(tmp_path / "c", SPEC)
    assert saved.latest() is None
    saved.save_latents(torch.arange(6.0).reshape(1, 6), seed=11)
    assert saved.latest().stage == Stage.DENOISE and torch.equal(saved.latest().latents(), torch.arange(6.0).reshape(1, 6))
    frames = np.random.default_rng(0).integers(0, 255, (3, 4, 5, 3), dtype=np.uint8)
    saved.save_frames(Stage.DECODE, frames, seed=11)
    latest = saved.latest()
    assert latest is not None and latest.stage == Stage.DECODE and latest.seed == 11
    assert np.array_equal(latest.frames(), frames)
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["checkpoint.json", "decode.npy"]
    saved.discard()
    assert not (tmp_path / "c").exists()


def test_another_job_or_a_fault_change_only(tmp_path: Path) -> None:
    ckpt.StageCheckpoints(tmp_path, SPEC).save_frames(Stage.DECODE, np.zeros((1, 2, 2, 3), np.uint8), seed=5)
    other = JobSpec(prompt="a blue ball", steps=2, seed=5)
    assert ckpt.StageCheckpoints(tmp_path, other).latest() is None
    with_fault = JobSpec.model_validate({**SPEC.model_dump(mode="json"), "fault": {"stage": "upscale", "kind": "crash"}})
    assert ckpt.StageCheckpoints(tmp_path, with_fault).latest() is not None


def test_a_write_that_fails_leaves_no_checkpoint_and_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = ckpt.StageCheckpoints(tmp_path, SPEC)

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.np, "save", full_disk)
    saved.save_frames(Stage.DECODE, np.zeros((1, 2, 2, 3), np.uint8), seed=5)
    assert saved.latest() is None and list(tmp_path.iterdir()) == []


def test_frames_larger_than_half_the_free_disk_are_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckpt.shutil, "disk_usage", lambda path: type("U", (), {"free": 100})())
    saved = ckpt.StageCheckpoints(tmp_path / "c", SPEC)
    saved.save_frames(Stage.UPSCALE, np.zeros((1, 10, 10, 3), np.uint8), seed=5)  # 300 bytes > 50
    assert saved.latest() is None
