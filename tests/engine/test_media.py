"""Input checks: corrupt, huge, truncated and wrong-type images and videos get clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from steadyframe.errors import InvalidInputError
from steadyframe.media import fit_frame, load_image, load_video_frames, probe_image, probe_video, sample_times
from steadyframe.video_io import write_mp4


def _png_bytes(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_probe_image_reports_size_and_format(image_file, settings):
    info = probe_image(image_file, settings)
    assert (info.width, info.height, info.format) == (150, 90, "PNG")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "empty"),
        (b"hello, I am a text file\n" * 10, "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "not an image"),
    ],
)
def test_unreadable_images_are_rejected_with_a_plain_message(tmp_path, settings, content, fragment):
    path = tmp_path / "upload.png"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as info:
        probe_image(path, settings)
    assert fragment in info.value.message
    assert str(tmp_path) not in info.value.message


def test_truncated_image_is_rejected_as_damaged(tmp_path, settings):
    data = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(data, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(InvalidInputError, match="damaged or incomplete"):
        probe_image(path, settings)


def test_decompression_bomb_is_rejected_before_decoding(tmp_path, settings):
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bytes(4000, 3000))  # 12 Mpx of one colour compresses to a few KB
    small = settings.model_copy(update={"max_image_pixels": 1_000_000})
    with pytest.raises(InvalidInputError, match="over the limit of 1,000,000 pixels"):
        probe_image(path, small)


def test_image_over_the_upload_size_limit_is_rejected(image_file, settings):
    tiny_limit = settings.model_copy(update={"max_upload_mb": 0.0001})
    with pytest.raises(InvalidInputError, match="over the 0 MB limit"):
        probe_image(image_file, tiny_limit)


def test_video_given_as_image_is_rejected(video_file, settings):
    with pytest.raises(InvalidInputError, match="not an image"):
        probe_image(video_file, settings)


def test_unsupported_image_format_is_named(tmp_path, settings):
    path = tmp_path / "pic.ico"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path, format="ICO")
    with pytest.raises(InvalidInputError, match="ICO format"):
        probe_image(path, settings)


def test_fit_frame_covers_then_centre_crops():
    # a wide image with a red centre column band: it must survive the crop in the middle
    wide = np.zeros((100, 400, 3), np.uint8)
    wide[:, 150:250] = (255, 0, 0)
    out = np.asarray(fit_frame(Image.fromarray(wide), 96, 64))
    assert out.shape == (64, 96, 3)
    assert out[:, 48, 0].min() > 200  # the centre stays red
    assert out[:, 2, 0].max() < 60  # the edges are the black sides, cropped down


def test_load_image_applies_exif_rotation(tmp_path, settings):
    tall = np.zeros((120, 60, 3), np.uint8)
    tall[:60] = (0, 255, 0)  # top half green
    img = Image.fromarray(tall)
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    img.save(path, exif=exif.tobytes(), quality=95)
    out = np.asarray(load_image(path, settings, 96, 64))
    assert out.shape == (64, 96, 3)
    # displayed upright the image is wide: the green half is on the right after a clockwise turn
    assert out[:, 80, 1].mean() > 200 and out[:, 10, 1].mean() < 60


def test_probe_video_reports_its_facts(video_file, settings):
    info = probe_video(video_file, settings)
    assert (info.width, info.height, info.fps, info.codec) == (128, 80, 24.0, "h264")
    assert info.duration_s == pytest.approx(2.0, abs=0.05)
    assert info.frames == 48


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not a video at all" * 100, "not a video"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200, "not a video"),
    ],
)
def test_unreadable_videos_are_rejected(tmp_path, settings, content, fragment):
    path = tmp_path / "upload.mp4"
    path.write_bytes(content)
    with pytest.raises(InvalidInputError) as info:
        probe_video(path, settings)
    assert fragment in info.value.message


def test_image_given_as_video_is_rejected(image_file, settings):
    with pytest.raises(InvalidInputError) as info:
        probe_video(image_file, settings)
    assert "video" in info.value.message


def _ramp_video(path: Path, count: int = 48) -> Path:
    """A lossless 24 fps clip whose frame i is a flat grey of value 5*i, so a picked frame names its source."""
    frames = np.stack([np.full((80, 128, 3), 5 * i, np.uint8) for i in range(count)])
    return write_mp4(frames, path, fps=24, crf=0)


def test_video_cut_inside_its_header_is_rejected(tmp_path, settings):
    data = _ramp_video(tmp_path / "ramp.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 10])
    with pytest.raises(InvalidInputError) as info:
        load_video_frames(cut, settings, 96, 64, 8, 9)
    assert "video" in info.value.message


def test_video_cut_mid_stream_keeps_the_frames_that_decode(tmp_path, settings):
    data = _ramp_video(tmp_path / "ramp.mp4").read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) * 3 // 4])
    picked = load_video_frames(cut, settings, 96, 64, 8, 9)
    sources = [round(np.asarray(f).mean() / 5) for f in picked]
    assert len(picked) == 9 and sources[0] == 0
    assert sources == sorted(sources) and sources[-1] < 24  # the lost tail repeats the last good frame


def test_video_over_the_duration_limit_is_rejected(video_file, settings):
    short = settings.model_copy(update={"max_video_seconds": 1.0})
    with pytest.raises(InvalidInputError, match="2 s long, over the 1 s limit"):
        probe_video(video_file, short)


def test_video_over_the_pixel_limit_is_rejected(video_file, settings):
    small = settings.model_copy(update={"max_image_pixels": 5000})
    with pytest.raises(InvalidInputError, match="pixels"):
        probe_video(video_file, small)


def test_video_frames_are_resampled_to_the_model_fps(tmp_path, settings):
    path = _ramp_video(tmp_path / "ramp.mp4")
    picked = load_video_frames(path, settings, 96, 64, 8, 9)
    sources = [round(np.asarray(f).mean() / 5) for f in picked]
    assert sources == [0, 3, 6, 9, 12, 15, 18, 21, 24]  # every third frame: 24 fps -> 8 fps
    assert all(f.size == (96, 64) for f in picked)


def test_short_video_is_spread_over_rather_than_rejected(tmp_path, settings):
    frames = np.stack([np.full((80, 128, 3), 20 * i, np.uint8) for i in range(6)])
    path = write_mp4(frames, tmp_path / "short.mp4", fps=24, crf=0)  # 0.25 s
    picked = load_video_frames(path, settings, 96, 64, 8, 9)
    sources = [round(np.asarray(f).mean() / 20) for f in picked]
    assert len(picked) == 9 and sources[0] == 0 and sources[-1] == 5
    assert sources == sorted(sources)


def test_sample_times_follow_fps_and_fit_short_clips():
    assert sample_times(3, 8, 10.0) == [0.0, 0.125, 0.25]
    assert sample_times(5, 8, 0.2) == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
