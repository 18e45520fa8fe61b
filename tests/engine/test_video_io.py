"""Output writers: H.264 MP4 settings, GIF preview size and label, sidecar JSON, atomic writes."""

from __future__ import annotations

import json

import av
import numpy as np
import pytest
from PIL import Image

from steadyframe.video_io import GIF_MAX_SIDE, read_video_facts, write_gif, write_mp4, write_sidecar


def _noise(count: int, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (count, height, width, 3), dtype=np.uint8)


def test_mp4_is_h264_yuv420p_faststart_with_exact_frames_and_fps(tmp_path):
    frames = _noise(17, 64, 96)
    path = write_mp4(frames, tmp_path / "v.mp4", fps=16)
    assert read_video_facts(path) == {
        "frames": 17, "fps": 16.0, "width": 96, "height": 64, "codec": "h264", "pix_fmt": "yuv420p"
    }  # fmt: skip
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")


def test_lower_crf_keeps_more_detail(tmp_path):
    frames = _noise(9, 64, 96)
    fine = write_mp4(frames, tmp_path / "fine.mp4", fps=8, crf=10)
    rough = write_mp4(frames, tmp_path / "rough.mp4", fps=8, crf=40)
    assert fine.stat().st_size > rough.stat().st_size

    def error(path):
        with av.open(str(path)) as container:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
        return np.abs(decoded.astype(int) - frames).mean()

    assert error(fine) < error(rough)


def test_bad_frames_are_refused_and_leave_no_file(tmp_path):
    with pytest.raises(ValueError, match="even width and height"):
        write_mp4(_noise(3, 63, 96), tmp_path / "odd.mp4", fps=8)
    with pytest.raises(ValueError, match="uint8"):
        write_mp4(np.zeros((3, 64, 96, 3), np.float32), tmp_path / "float.mp4", fps=8)
    assert list(tmp_path.iterdir()) == []


def test_gif_preview_is_small_and_labelled_when_test_noise(tmp_path):
    frames = _noise(32, 480, 720)
    path = write_gif(frames, tmp_path / "p.gif", fps=16, test_noise=True)
    with Image.open(path) as gif:
        assert max(gif.size) == GIF_MAX_SIDE and gif.n_frames == 16  # 16 fps thinned to 8
        gif.seek(0)
        top = np.asarray(gif.convert("RGB"))[:11]
    yellow = (top[..., 0] > 180) & (top[..., 1] > 180) & (top[..., 2] < 100)
    assert yellow.sum() > 20 and (top.max(axis=-1) < 40).mean() > 0.5  # yellow text on a dark band


def test_sidecar_is_sorted_json(tmp_path):
    path = write_sidecar({"seed": 3, "model": "tiny-t2v"}, tmp_path / "r.json")
    assert json.loads(path.read_text()) == {"model": "tiny-t2v", "seed": 3}
    assert path.read_text().index("model") < path.read_text().index("seed")
