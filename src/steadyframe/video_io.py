"""Write a job's outputs: H.264 MP4, GIF preview and JSON sidecar (PyAV, PIL; no torch).

Every writer goes to a temporary name in the same folder and renames into place, so a reader
never sees half a file and a failed job leaves no partial output behind.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
from PIL import Image

from steadyframe.frame_file import Frames

GIF_MAX_SIDE = 320
GIF_MAX_FPS = 10.0
_GIF_COLOURS = 126  # leaves palette slots for the test-noise label's black and yellow


@contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it to ``path`` on success, delete it on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_frames(frames: Frames) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"frames must be a non-empty uint8 array [F, H, W, 3], got {frames.dtype} {frames.shape}")


def write_mp4(
    frames: Frames,
    path: Path,
    *,
    fps: float,
    crf: int = 18,
    on_frame: Callable[[int, int], None] | None = None,
) -> Path:
    """Encode uint8 RGB ``frames`` [F, H, W, 3] (an array or a frame file, read one frame at a time)
    as H.264 yuv420p with ``+faststart`` -> ``path``.

    ``on_frame(i, total)`` is called after each frame is encoded (1-based).
    """
    _check_frames(frames)
    count, height, width = frames.shape[:3]
    if width % 2 or height % 2:
        # yuv420p halves chroma resolution, so H.264 needs even sides
        raise ValueError(f"H.264 yuv420p needs even width and height, got {width}×{height}")
    with _atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            rate = Fraction(fps).limit_denominator(1001)
            stream = container.add_stream("libx264", rate=rate)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "medium"}
            for i, rgb in enumerate(frames, start=1):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
                frame.pts, frame.time_base = i - 1, 1 / rate  # explicit, constant frame timing
                container.mux(stream.encode(frame))
                if on_frame is not None:
                    on_frame(i, count)
            container.mux(stream.encode(None))
    return path


def write_gif(frames: Frames, path: Path, *, fps: float, test_noise: bool = False) -> Path:
    """A small looping GIF preview: at most GIF_MAX_SIDE px and GIF_MAX_FPS; labelled when ``test_noise``.
    Frames are read one at a time; only the small preview images are kept."""
    _check_frames(frames)
    stride = max(1, round(fps / GIF_MAX_FPS))
    height, width = frames.shape[1:3]
    scale = min(1.0, GIF_MAX_SIDE / max(width, height))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    images = []
    for index in range(0, len(frames), stride):
        img = Image.fromarray(frames[index])
        if img.size != size:
            img = img.resize(size, Image.Resampling.LANCZOS)
        quantized = img.quantize(colors=_GIF_COLOURS, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        if test_noise:
            _label(quantized, "TEST NOISE")
        images.append(quantized)
    with _atomic_path(path) as tmp:
        images[0].save(
            tmp, format="GIF", save_all=True, append_images=images[1:], duration=round(1000 * stride / fps), loop=0
        )
    return path


def _label(img: Image.Image, text: str) -> None:
    """Stamp ``text`` in yellow on a black band at the top of a paletted frame, so nobody mistakes
    the preview for real output; the two colours take palette slots the quantizer left free."""
    from PIL import ImageDraw

    palette = (img.getpalette() or [])[: 3 * _GIF_COLOURS]
    palette += [0, 0, 0] * (_GIF_COLOURS - len(palette) // 3) + [0, 0, 0, 255, 255, 0]
    img.putpalette(palette)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, 11), fill=_GIF_COLOURS)
    draw.text((2, 0), text, fill=_GIF_COLOURS + 1)


def write_sidecar(data: dict[str, Any], path: Path) -> Path:
    """Write ``data`` as indented, key-sorted JSON -> ``path``."""
    with _atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_video_facts(path: Path) -> dict[str, Any]:
    """Decode an MP4 fully -> {frames, fps, width, height, codec, pix_fmt} (tests and checks)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {
            "frames": frames,
            "fps": float(stream.average_rate or 0),
            "width": stream.codec_context.width,
            "height": stream.codec_context.height,
            "codec": stream.codec_context.name,
            "pix_fmt": stream.codec_context.pix_fmt,
        }
