"""Frames on disk, one at a time: how a job's frames stream between decode, upscale, interpolate
and encode, so its host RAM is bounded by a few frames whatever its frame count and factors.

A frame file is a plain ``.npy`` file (``uint8 [F, H, W, 3]``, C order), so ``np.load`` reads
it too. ``FrameWriter`` appends frames with ordinary writes and ``FrameFile`` reads them back
with ``pread``: the data goes through the page cache, which the kernel reclaims, and never
counts in the process's RSS as a memory map's touched pages would (measured in
tests/resilience/test_bounded_memory.py). No torch here: the encoder and the server read it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol, overload

import numpy as np

_DTYPE = np.dtype(np.uint8)


class Frames(Protocol):
    """What the post stages and the encoder read: an ndarray or a FrameFile."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    @property
    def ndim(self) -> int: ...

    def __len__(self) -> int: ...

    def __getitem__(self, index, /): ...  # int -> [H, W, 3]; slice (step 1) -> [N, H, W, 3]


def _header(shape: Sequence[int]) -> bytes:
    """The ``.npy`` header for a uint8 C-order array of ``shape`` (numpy's own writer)."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": np.lib.format.dtype_to_descr(_DTYPE), "fortran_order": False, "shape": tuple(shape)}
    )
    return buffer.getvalue()


class FrameFile:
    """A finished frame file, read a frame (or a run of frames) at a time."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = -1
        with open(self.path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(handle)
            self._offset = handle.tell()
        if dtype != _DTYPE or fortran or len(shape) != 4 or shape[-1] != 3:
            raise ValueError(f"{self.path.name} is not a uint8 [F, H, W, 3] frame file: {dtype} {shape}")
        self._shape: tuple[int, int, int, int] = tuple(int(s) for s in shape)  # type: ignore[assignment]
        self._frame_bytes = self._shape[1] * self._shape[2] * 3
        self._fd = os.open(self.path, os.O_RDONLY)  # kept open: the file may be unlinked while read

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return self._shape

    @property
    def dtype(self) -> np.dtype:
        return _DTYPE

    @property
    def ndim(self) -> int:
        return 4

    @property
    def nbytes(self) -> int:
        return self._shape[0] * self._frame_bytes

    def __len__(self) -> int:
        return self._shape[0]

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> np.ndarray: ...

    def __getitem__(self, index: int | slice) -> np.ndarray:
        count = self._shape[0]
        if isinstance(index, slice):
            start, stop, step = index.indices(count)
            if step != 1:
                raise IndexError("a frame file reads runs of frames: use a step of 1, or index frames one by one")
            return self._read(start, max(start, stop))
        position = int(index) + count if int(index) < 0 else int(index)
        if not 0 <= position < count:
            raise IndexError(f"frame {index} of {count}")
        return self._read(position, position + 1)[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for position in range(self._shape[0]):
            yield self._read(position, position + 1)[0]

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((stop - start, *self._shape[1:]), dtype=_DTYPE)
        view, want, done = memoryview(out).cast("B"), (stop - start) * self._frame_bytes, 0
        while done < want:
            got = os.preadv(self._fd, [view[done:]], self._offset + start * self._frame_bytes + done)
            if got == 0:
                raise EOFError(f"{self.path.name} ends before frame {stop} of {self._shape[0]}")
            done += got
        return out

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FrameFile({self.path.name}, shape={self._shape})"


class FrameWriter:
    """Appends frames to ``path`` through a ``.partial`` name; ``finish()`` checks the count,
    renames into place and returns the FrameFile. A writer left unfinished removes its file."""

    def __init__(self, path: Path, shape: Sequence[int]) -> None:
        if len(shape) != 4 or shape[-1] != 3 or min(shape) < 1:
            raise ValueError(f"a frame file holds [F, H, W, 3] with every side >= 1, got {tuple(shape)}")
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.written = 0
        self._partial = self.path.with_name(self.path.name + ".partial")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = open(self._partial, "wb")
        self._handle.write(_header(self.shape))

    def append(self, frames: np.ndarray) -> None:
        """Write one frame ``[H, W, 3]`` or a run of them ``[N, H, W, 3]`` (uint8)."""
        batch = frames[None] if frames.ndim == 3 else frames
        if batch.dtype != _DTYPE or tuple(batch.shape[1:]) != self.shape[1:]:
            raise ValueError(f"frames {batch.dtype} {batch.shape[1:]} do not match the file's {self.shape[1:]}")
        if self.written + len(batch) > self.shape[0]:
            raise ValueError(f"more than the {self.shape[0]} frames this file was opened for")
        self._handle.write(np.ascontiguousarray(batch).data)
        self.written += len(batch)

    def finish(self) -> FrameFile:
        if self.written != self.shape[0]:
            raise ValueError(f"{self.path.name}: {self.written} of {self.shape[0]} frames written")
        self._handle.close()
        os.replace(self._partial, self.path)
        return FrameFile(self.path)

    def abandon(self) -> None:
        self._handle.close()
        self._partial.unlink(missing_ok=True)

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if kind is not None or not self._handle.closed:
            self.abandon()


def write_frames(path: Path, frames: np.ndarray) -> FrameFile:
    """Save a whole in-memory clip as a frame file -> the FrameFile."""
    with FrameWriter(path, frames.shape) as writer:
        writer.append(frames)
        return writer.finish()


class FrameSink:
    """Where a stage puts its output frames, in order: an in-memory array (``path`` None, as a
    library call gets) or a frame file (as a job gets). ``result()`` once all are in."""

    def __init__(self, path: Path | None, shape: Sequence[int]) -> None:
        self._writer = FrameWriter(path, shape) if path is not None else None
        self._array = np.empty(tuple(shape), dtype=_DTYPE) if path is None else None
        self._next = 0

    def append(self, frames: np.ndarray) -> None:
        if self._writer is not None:
            self._writer.append(frames)
            return
        assert self._array is not None
        batch = frames[None] if frames.ndim == 3 else frames
        self._array[self._next : self._next + len(batch)] = batch
        self._next += len(batch)

    def result(self) -> np.ndarray | FrameFile:
        if self._writer is not None:
            return self._writer.finish()
        assert self._array is not None
        if self._next != len(self._array):  # the rest would be uninitialised memory, as FrameWriter.finish refuses
            raise ValueError(f"{self._next} of {len(self._array)} frames appended")
        return self._array

    def __enter__(self) -> FrameSink:
        return self

    def __exit__(self, kind: object, *_: object) -> None:
        if self._writer is not None:
            self._writer.__exit__(kind)
