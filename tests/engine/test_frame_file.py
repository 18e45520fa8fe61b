"""Frame files: the .npy files frames stream through between stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from steadyframe.frame_file import FrameFile, FrameSink, FrameWriter, write_frames


def _clip(count: int = 5) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 255, (count, 6, 8, 3), dtype=np.uint8)


def test_a_frame_file_is_a_plain_npy_file_read_a_frame_or_a_run_at_a_time(tmp_path: Path) -> None:
    clip = _clip()
    saved = write_frames(tmp_path / "f.npy", clip)
    assert np.array_equal(np.load(tmp_path / "f.npy"), clip)
    assert (saved.shape, len(saved), saved.nbytes) == (clip.shape, 5, clip.nbytes)
    assert np.array_equal(saved[0], clip[0]) and np.array_equal(saved[-1], clip[-1])
    assert np.array_equal(saved[1:4], clip[1:4]) and np.array_equal(np.stack(list(saved)), clip)
    with pytest.raises(IndexError):
        saved[5]
    with pytest.raises(IndexError):
        saved[::2]


def test_a_writer_that_does_not_finish_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with FrameWriter(tmp_path / "f.npy", (3, 6, 8, 3)) as writer:
            writer.append(_clip(1)[0])
            raise RuntimeError("the stage failed")
    assert list(tmp_path.iterdir()) == []
    writer = FrameWriter(tmp_path / "g.npy", (3, 6, 8, 3))
    writer.append(_clip(2))
    with pytest.raises(ValueError, match="2 of 3"):
        writer.finish()
    with pytest.raises(ValueError, match="do not match"):
        writer.append(np.zeros((6, 9, 3), np.uint8))
    writer.abandon()
    assert list(tmp_path.iterdir()) == []


def test_a_file_that_is_not_frames_is_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "floats.npy", np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="not a uint8"):
        FrameFile(tmp_path / "floats.npy")


def test_a_sink_collects_in_memory_or_on_disk_alike(tmp_path: Path) -> None:
    clip = _clip(4)
    for path in (None, tmp_path / "s.npy"):
        with FrameSink(path, clip.shape) as sink:
            sink.append(clip[:1])
            for frame in clip[1:]:
                sink.append(frame)
            made = sink.result()
        assert isinstance(made, np.ndarray if path is None else FrameFile)
        assert np.array_equal(made[:], clip)
