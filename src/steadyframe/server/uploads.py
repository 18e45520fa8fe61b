"""Uploaded inputs: streamed to disk under a size cap, typed by content, probed, then kept by id.

Layout: ``uploads_dir/<id>/input.<ext>`` plus ``meta.json``. Jobs refer to uploads by id only;
the server resolves the id to a path when it builds the job spec, so no path ever crosses the API.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from steadyframe.errors import InvalidInputError
from steadyframe.server.schemas import UploadView
from steadyframe.settings import Settings

UploadKind = Literal["image", "video"]
_ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
_CHUNK = 1 << 20


class UploadTooLarge(Exception):
    """The body passed ``settings.max_upload_mb``."""


class UnsupportedMediaType(Exception):
    """The content is neither an image nor a video format we read."""


@dataclass(frozen=True)
class Sniffed:
    kind: UploadKind
    extension: str


def sniff(head: bytes) -> Sniffed | None:
    """The file type from its first bytes (never from its name or declared content type).

    Hand-written: a dozen fixed signatures do not justify a libmagic dependency.
    """
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return Sniffed("image", "png")
    if head.startswith(b"\xff\xd8\xff"):
        return Sniffed("image", "jpg")
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return Sniffed("image", "webp")
    if head[:2] == b"BM" and len(head) >= 26:
        return Sniffed("image", "bmp")
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return Sniffed("video", "mov" if brand == b"qt  " else "mp4")
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return Sniffed("video", "webm" if b"webm" in head[:64] else "mkv")
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return Sniffed("video", "avi")
    return None


class UploadStore:
    """Saves, validates and resolves uploads under ``settings.uploads_dir``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.uploads_dir
        self.root.mkdir(parents=True, exist_ok=True)

    @property
    def max_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 1024 * 1024)

    def save(self, source: BinaryIO) -> UploadView:
        """Copy ``source`` to disk, check it and return its description.

        Raises ``UploadTooLarge``, ``UnsupportedMediaType`` or ``InvalidInputError`` (does not decode,
        too many pixels, too long); nothing is kept on failure.
        """
        upload_id = uuid.uuid4().hex
        folder = self.root / upload_id
        folder.mkdir(parents=True)
        try:
            partial = folder / "partial"
            head = self._copy_capped(source, partial)
            sniffed = sniff(head)
            if sniffed is None:
                raise UnsupportedMediaType(
                    "the file is not an image (PNG, JPEG, WebP, BMP) or a video (MP4, MOV, WebM, MKV, AVI)"
                )
            final = folder / f"input.{sniffed.extension}"
            partial.rename(final)
            view = self._probe(upload_id, sniffed.kind, final)
            (folder / "meta.json").write_text(json.dumps(view.model_dump()))
            return view
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _copy_capped(self, source: BinaryIO, target: Path) -> bytes:
        """Stream ``source`` into ``target``, stopping as soon as it passes the cap. -> its first bytes."""
        written = 0
        head = b""
        with target.open("wb") as out:
            while chunk := source.read(_CHUNK):
                if not head:
                    head = chunk[:64]
                written += len(chunk)
                if written > self.max_bytes:
                    raise UploadTooLarge(f"the file is larger than {self.settings.max_upload_mb:g} MB")
                out.write(chunk)
        if written == 0:
            raise InvalidInputError("the uploaded file is empty", advice="Choose a non-empty image or video file.")
        return head

    def _probe(self, upload_id: str, kind: UploadKind, path: Path) -> UploadView:
        try:
            return self._probe_checked(upload_id, kind, path)
        except InvalidInputError:
            raise
        except Exception as exc:  # a decoder choking on the client's bytes is still the client's bad file
            from steadyframe.logs import get_logger

            get_logger("server.uploads").warning("upload %s did not decode: %r", upload_id, exc)
            raise InvalidInputError(
                f"The {kind} could not be read ({type(exc).__name__}).",
                advice="Check the file opens in an image viewer or video player, or re-export it.",
            ) from None

    def _probe_checked(self, upload_id: str, kind: UploadKind, path: Path) -> UploadView:
        from steadyframe import media  # torch-free; imported late so the server starts fast

        if kind == "image":
            image = media.probe_image(path, self.settings)
            return UploadView(id=upload_id, kind="image", width=image.width, height=image.height)
        video = media.probe_video(path, self.settings)
        return UploadView(
            id=upload_id,
            kind="video",
            width=video.width,
            height=video.height,
            frames=video.frames,
            fps=float(video.fps),
            duration_s=float(video.duration_s),
        )

    def describe(self, upload_id: str) -> UploadView | None:
        """The stored description of an upload, or None when the id is unknown or malformed."""
        if not _ID_PATTERN.match(upload_id):
            return None
        meta = self.root / upload_id / "meta.json"
        if not meta.is_file():
            return None
        return UploadView.model_validate_json(meta.read_text())

    def resolve(self, upload_id: str, kind: UploadKind) -> Path:
        """The file of upload ``upload_id``; raises ``InvalidInputError`` if unknown or of another kind."""
        view = self.describe(upload_id)
        if view is None:
            raise InvalidInputError(
                f"no upload with id {upload_id!r}", advice="Upload the file first with POST /v1/uploads and use its id."
            )
        if view.kind != kind:
            needed = "an image" if kind == "image" else "a video"
            raise InvalidInputError(f"upload {upload_id} is not {needed}", advice=f"Upload {needed} for this mode.")
        found = sorted((self.root / upload_id).glob("input.*"))
        if not found:
            raise InvalidInputError(f"upload {upload_id} has no file any more", advice="Upload it again.")
        return found[0]

    def id_of(self, path: str) -> str | None:
        """The upload id that owns ``path`` (a spec's image/video path), or None when it is not an upload."""
        candidate = Path(path)
        if candidate.parent.parent == self.root and _ID_PATTERN.match(candidate.parent.name):
            return candidate.parent.name
        return None
