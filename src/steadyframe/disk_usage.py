"""Bytes held by the files under a folder, read while other threads may be changing it.

A pull finishing removes its partial folder and retention removes job folders while the API sums
sizes for a view. ``Path.rglob`` raises when a folder it listed is gone by the time it descends
(a 500 for ``GET /v1/models/{name}``); ``os.walk`` skips it, and a file gone before its ``stat``
counts as nothing. The figure is what was there during the walk, which is all a view needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def files_bytes(paths: Iterable[Path]) -> int:
    """The sizes of ``paths`` added up (symlinks followed); a path that is missing counts 0."""
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except OSError:
            pass
    return total


def files_under(folder: Path, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """Every file under ``folder`` (or only those ending in one of ``suffixes``), at any depth.

    Symlinked files are listed (the Hugging Face cache's snapshots are made of them); symlinked
    folders are not entered, as ``Path.rglob`` does not enter them either on Python 3.11.
    """
    found: list[Path] = []
    for root, _folders, names in os.walk(folder):  # errors (a folder removed mid-walk) are skipped
        found.extend(Path(root, name) for name in names if suffixes is None or name.endswith(suffixes))
    return found


def bytes_under(folder: Path, suffixes: tuple[str, ...] | None = None) -> int:
    """Bytes held by :func:`files_under` ``folder``; 0 for a folder that is not there."""
    return files_bytes(files_under(folder, suffixes))
