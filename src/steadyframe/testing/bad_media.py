"""Bad uploads, built locally and small: each must be refused with a 4xx, never a 5xx."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import av
import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit grayscale PNG of ``width``×``height`` (400 Mpx in ~60 KB: a decompression bomb)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    packer = zlib.compressobj(9)
    data = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


def _write_clip(path: Path, *, container: str | None = None, options: dict[str, str] | None = None) -> bytes:
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        stream = out.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(8):
            frame = np.full((64, 96, 3), index * 20, dtype=np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    return path.read_bytes()


def bad_uploads(folder: Path, png: bytes, mp4: bytes) -> dict[str, bytes]:
    """Name -> content of every bad upload in the corpus (``png``/``mp4`` are good files to damage)."""
    folder.mkdir(parents=True, exist_ok=True)
    no_duration = _write_clip(folder / "live.mkv", container="matroska", options={"live": "1"})
    return {
        "zero bytes": b"",
        "truncated png": png[: len(png) // 2],
        "truncated mp4": mp4[: len(mp4) * 2 // 3],
        "png magic over an mp4 body": png[:8] + mp4[8:],
        "png with a zip riding along": png + b"PK\x03\x04" + b"\x00" * 200,
        "unknown codec": mp4.replace(b"avc1", b"zzzz"),
        "video without a duration": no_duration,
        "20000x20000 png": huge_png(),
        "text file": b"<html><script>alert(1)</script></html>",
    }
