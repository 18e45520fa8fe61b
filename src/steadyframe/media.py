"""Check and load input images and videos (PIL, PyAV; no torch).

``probe_image`` / ``probe_video`` prove a file is a readable image/video within the configured
limits, raising InvalidInputError with plain text otherwise; the server's upload route and the
engine both call them. ``load_image`` / ``load_video_frames`` return RGB frames resized and
centre-cropped to a model's resolution (video frames also resampled to the model's fps).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import av
from PIL import Image, ImageOps, UnidentifiedImageError

from steadyframe.errors import InvalidInputError
from steadyframe.settings import Settings

IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
# Containers and video codecs we let FFmpeg open: common, well-fuzzed decoders only (an allowlist,
# so an exotic demuxer or decoder in the local FFmpeg build is never reached through an upload).
VIDEO_CONTAINERS = frozenset({"mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm", "avi"})
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "libdav1d", "libaom-av1", "mpeg4", "mjpeg", "prores"})
_PNG_END = b"IEND\xaeB`\x82"
_IMAGE_ADVICE = "Use a PNG, JPEG or WebP image."
_VIDEO_ADVICE = "Use an MP4, WebM, MOV or MKV video."


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str
    size_bytes: int


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    duration_s: float
    frames: int  # estimated from duration × fps when the container does not say
    codec: str
    size_bytes: int


def _check_file(path: Path, settings: Settings, what: str) -> int:
    if not path.is_file():
        raise InvalidInputError(f"The input {what} was not found.")
    size = path.stat().st_size
    if size == 0:
        raise InvalidInputError(f"The input {what} is empty (0 bytes).")
    if size > settings.max_upload_mb * 1024 * 1024:
        raise InvalidInputError(
            f"The input {what} is {size / 2**20:.0f} MB, over the {settings.max_upload_mb:.0f} MB limit.",
            advice=f"Use a smaller {what}.",
        )
    return size


def _check_pixels(width: int, height: int, settings: Settings, what: str) -> None:
    if width < 1 or height < 1:
        raise InvalidInputError(f"The input {what} has no pixels.")
    if width * height > settings.max_image_pixels:
        raise InvalidInputError(
            f"The input {what} is {width}×{height} pixels, over the limit of {settings.max_image_pixels:,} pixels.",
            advice=f"Scale the {what} down first.",
        )


def probe_image(path: str | Path, settings: Settings) -> ImageInfo:
    """Check that ``path`` is a complete image within the size and pixel limits -> its facts."""
    path = Path(path)
    size = _check_file(path, settings, "image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                fmt = img.format or "unknown"
                width, height = img.size
                if fmt not in IMAGE_FORMATS:
                    raise InvalidInputError(f"Images in {fmt} format are not supported.", advice=_IMAGE_ADVICE)
                _check_pixels(width, height, settings, "image")  # before decoding: bomb guard
                img.load()  # decodes every byte: catches truncated and corrupt files
        if fmt == "PNG":
            _check_png_ends(path)
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError(
            "The input image is too large to decode safely.", advice="Scale the image down first."
        ) from None
    except UnidentifiedImageError:
        raise InvalidInputError("The input file is not an image we can read.", advice=_IMAGE_ADVICE) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInputError(
            f"The input image is damaged or incomplete ({_short(exc)}).", advice="Re-export or re-download it."
        ) from None
    return ImageInfo(width=width, height=height, format=fmt, size_bytes=size)


def _check_png_ends(path: Path) -> None:
    """A PNG must end at its IEND chunk: bytes after it are another file riding along (a polyglot)."""
    with path.open("rb") as handle:
        handle.seek(max(0, path.stat().st_size - len(_PNG_END)))
        tail = handle.read()
    if tail != _PNG_END:
        raise InvalidInputError(
            "The input image carries extra data after its end (it may be another file in disguise).",
            advice="Re-export the image from an image editor.",
        )


def _short(exc: BaseException) -> str:
    """The first line of an exception's text, without file paths."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(": '/")[0].split(" '/")[0][:120]


def fit_frame(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize ``img`` to cover ``width``×``height`` keeping its aspect, then centre-crop to it."""
    img = img.convert("RGB")
    scale = max(width / img.width, height / img.height)
    new_w, new_h = max(width, math.ceil(img.width * scale)), max(height, math.ceil(img.height * scale))
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), Image.Resampling.LANCZOS)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return img.crop((left, top, left + width, top + height))


def load_image(path: str | Path, settings: Settings, width: int, height: int) -> Image.Image:
    """Validate, honour EXIF rotation, then fit to ``width``×``height`` -> an RGB image."""
    probe_image(path, settings)
    with Image.open(path) as img:
        img = ImageOps.exif_transpose(img)
        if getattr(img, "is_animated", False):
            img.seek(0)  # an animated GIF/WebP conditions on its first frame
        return fit_frame(img, width, height)


def _open_video(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError):
        raise InvalidInputError("The input file is not a video we can read.", advice=_VIDEO_ADVICE) from None
    names = set(container.format.name.split(","))
    if container.format.name.endswith("_pipe") or container.format.name == "image2":
        container.close()  # FFmpeg reads a still image as a one-frame "video"
        raise InvalidInputError("The input file is a still image, not a video.", advice=_VIDEO_ADVICE)
    if not names & VIDEO_CONTAINERS:
        container.close()
        raise InvalidInputError(f"Videos in the {container.format.name[:40]} container are not supported.", advice=_VIDEO_ADVICE)
    return container


def _check_codec(stream: av.video.stream.VideoStream) -> str:
    """The stream's decoder name, if FFmpeg has a decoder for it and it is on the allowlist."""
    context = stream.codec_context
    if context is None:  # FFmpeg knows no decoder for this codec tag
        raise InvalidInputError("The input video uses a codec that cannot be decoded.", advice=_VIDEO_ADVICE)
    if context.name not in VIDEO_CODECS:
        raise InvalidInputError(f"Videos encoded with {context.name[:40]} are not supported.", advice=_VIDEO_ADVICE)
    return str(context.name)


def probe_video(path: str | Path, settings: Settings) -> VideoInfo:
    """Check that ``path`` is a video within the size, pixel and duration limits whose first frame decodes."""
    path = Path(path)
    size = _check_file(path, settings, "video")
    container = _open_video(path)
    try:
        if not container.streams.video:
            raise InvalidInputError("The input file has no video track.", advice=_VIDEO_ADVICE)
        stream = container.streams.video[0]
        codec = _check_codec(stream)
        width, height = stream.codec_context.width, stream.codec_context.height
        _check_pixels(width, height, settings, "video")
        fps = float(stream.average_rate or stream.guessed_rate or 0)
        duration = _duration_s(container, stream)
        if not math.isfinite(duration) or duration <= 0:
            raise InvalidInputError("The input video does not say how long it is.", advice="Re-export the video.")
        if duration > settings.max_video_seconds:
            raise InvalidInputError(
                f"The input video is {duration:.0f} s long, over the {settings.max_video_seconds:.0f} s limit.",
                advice="Trim the video first.",
            )
        first = _first_frame(container, stream)
        if first is None:
            raise InvalidInputError("The input video has no frame that decodes.", advice="Re-export the video.")
        width, height = first.width, first.height
        _check_pixels(width, height, settings, "video")
        if fps <= 0:
            raise InvalidInputError("The input video does not say its frame rate.", advice="Re-export the video.")
        frames = stream.frames or max(1, round(duration * fps))
    finally:
        container.close()
    return VideoInfo(width, height, fps, duration, frames, codec, size)


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def _first_frame(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> av.VideoFrame | None:
    try:
        for frame in container.decode(stream):
            return frame
    except av.error.FFmpegError:
        raise InvalidInputError("The input video is damaged: its first frame does not decode.") from None
    return None


def sample_times(count: int, fps: float, duration_s: float) -> list[float]:
    """Times of ``count`` frames at ``fps`` from the start; spread over the video when it is shorter."""
    needed = (count - 1) / fps
    if count == 1 or duration_s <= 0 or needed <= duration_s:
        return [i / fps for i in range(count)]
    return [i * duration_s / (count - 1) for i in range(count)]


def load_video_frames(
    path: str | Path, settings: Settings, width: int, height: int, fps: float, count: int
) -> list[Image.Image]:
    """Validate, decode and resample to ``count`` frames at ``fps``, each fitted to ``width``×``height``.

    A video shorter than ``count / fps`` is spread over (frames repeat) rather than rejected;
    decoding streams, so only the frames picked are kept.
    """
    info = probe_video(path, settings)
    targets = sample_times(count, fps, info.duration_s)
    picked: list[Image.Image] = []
    showing: Image.Image | None = None  # the fitted frame on screen at the current time
    showing_frame: av.VideoFrame | None = None
    container = _open_video(Path(path))
    try:
        stream = container.streams.video[0]
        start: float | None = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = float(frame.time) if frame.time is not None else index / info.fps
                start = t if start is None else start
                while len(picked) < count and showing_frame is not None and targets[len(picked)] < t - start - 1e-6:
                    showing = showing or fit_frame(showing_frame.to_image(), width, height)
                    picked.append(showing)
                if len(picked) >= count:
                    break
                showing_frame, showing = frame, None
        except av.error.FFmpegError:
            pass  # a truncated tail: keep what decoded
    finally:
        container.close()
    if showing_frame is None:
        raise InvalidInputError("The input video has no frame that decodes.", advice="Re-export the video.")
    while len(picked) < count:  # the last frame shows until the end
        showing = showing or fit_frame(showing_frame.to_image(), width, height)
        picked.append(showing)
    return picked
