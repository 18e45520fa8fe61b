"""Where a model's files live on disk and whether they are complete (no torch, no network).

Each Hub repo gets its own folder ``MODELS_DIR/<owner>--<name>[@revision]``. A pull writes
``.steadyframe-pull.json`` first and ``steadyframe-complete.json`` (revision, every file and its
size) at the very end, so a folder counts as ``present`` only once every byte is there:

- complete marker, files agree -> ``present``; files missing or of another size -> ``broken``;
- pull marker or partial files, no complete marker -> ``absent`` (resumable, ``partial_bytes``);
- neither marker but a ``model_index.json`` -> ``present``: the operator copied it in (air-gapped);
- nothing there -> the Hugging Face cache is asked for a snapshot of the repo, else ``absent``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from steadyframe.disk_usage import bytes_under, files_bytes, files_under

COMPLETE_MARKER = "steadyframe-complete.json"
PULL_MARKER = ".steadyframe-pull.json"
PARTIAL_DIR = ".steadyframe-partial"
PART_SUFFIX = ".part"
WEIGHT_SUFFIXES = (".safetensors", ".bin")
# `hf download --local-dir` keeps its unfinished files here (a folder copied mid-download).
_HF_LOCAL_DOWNLOADS = Path(".cache") / "huggingface" / "download"

FolderStateName = Literal["absent", "present", "broken"]
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,99}$")


@dataclass(frozen=True)
class FolderState:
    """What is on disk for one model: its state, folder (when usable), bytes held and expected."""

    state: FolderStateName
    folder: Path | None = None
    size_bytes: int = 0
    partial_bytes: int = 0  # bytes of an unfinished pull already on disk (absent only)
    total_bytes: int | None = None  # the files' full size, when a pull or marker told us
    where: Literal["models_dir", "hf_cache", "builtin", "folder"] | None = None
    problem: str | None = None  # why it is broken, in plain words without paths


@dataclass
class CompletionRecord:
    """The completion marker's content."""

    repo_id: str
    revision: str  # the commit the files came from
    files: dict[str, int] = field(default_factory=dict)  # relative path -> size in bytes
    pulled_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps(
            {"repo_id": self.repo_id, "revision": self.revision, "files": self.files, "pulled_at": self.pulled_at},
            indent=1,
        )


def split_repo_source(source: str) -> tuple[str, str | None] | None:
    """``owner/name[@revision]`` -> (repo id, revision), or None when ``source`` is not that shape."""
    repo, _, revision = source.partition("@")
    if not REPO_ID.match(repo) or ".." in repo:
        return None
    if revision and (not REVISION.match(revision) or ".." in revision):
        return None
    return repo, revision or None


def repo_folder(models_dir: Path, repo_id: str, revision: str | None) -> Path:
    """``MODELS_DIR/<owner>--<name>[@revision]``: one folder per repo (and pinned revision)."""
    name = repo_id.replace("/", "--")
    if revision:
        name += "@" + revision.replace("/", "-")
    return models_dir / name


def write_complete_marker(folder: Path, record: CompletionRecord) -> None:
    """Write the marker atomically: it is the last thing a pull does."""
    temporary = folder / (COMPLETE_MARKER + ".tmp")
    temporary.write_text(record.to_json())
    os.replace(temporary, folder / COMPLETE_MARKER)


def read_complete_marker(folder: Path) -> CompletionRecord | None:
    try:
        data = json.loads((folder / COMPLETE_MARKER).read_text())
        return CompletionRecord(
            repo_id=str(data["repo_id"]),
            revision=str(data["revision"]),
            files={str(k): int(v) for k, v in dict(data["files"]).items()},
            pulled_at=float(data.get("pulled_at", 0.0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_pull_marker(folder: Path, repo_id: str, revision: str | None, total_bytes: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"repo_id": repo_id, "revision": revision, "total_bytes": total_bytes, "started_at": time.time()}
    (folder / PULL_MARKER).write_text(json.dumps(data))


def read_pull_marker(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / PULL_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def weights_bytes(folder: Path) -> int:
    """Bytes of the weight files (safetensors, pickles) under ``folder``."""
    return bytes_under(folder, WEIGHT_SUFFIXES)


def folder_size(folder: Path) -> int:
    """Bytes held by every file under ``folder`` (symlinks followed, as the HF cache uses them)."""
    return bytes_under(folder)


def partial_bytes(folder: Path) -> int:
    """Bytes an unfinished pull holds: finished files plus ``.part`` files (marker files aside)."""
    if not folder.is_dir():
        return 0
    return folder_size(folder) - files_bytes([folder / PULL_MARKER])


def _unfinished(folder: Path) -> bool:
    """A pull (ours or `hf download`'s) was started here and did not finish."""
    if (folder / PULL_MARKER).exists() or (folder / PARTIAL_DIR).is_dir():
        return True
    downloads = folder / _HF_LOCAL_DOWNLOADS
    return bool(files_under(downloads, (".incomplete",)))


def check_complete(folder: Path, record: CompletionRecord) -> str | None:
    """None when every file in ``record`` is in ``folder`` with its size, else what is wrong."""
    for relative, size in record.files.items():
        path = folder / relative
        try:
            actual = path.stat().st_size
        except OSError:
            return f"the file {relative} is missing"
        if actual != size:
            return f"the file {relative} has {actual} bytes instead of {size}"
    return None


def inspect_folder(folder: Path) -> FolderState:
    """The state of one pull target folder (see the module docstring)."""
    record = read_complete_marker(folder)
    if record is not None:
        problem = check_complete(folder, record)
        total = sum(record.files.values())
        if problem is None:
            return FolderState("present", folder, folder_size(folder), total_bytes=total, where="models_dir")
        return FolderState("broken", None, folder_size(folder), total_bytes=total, where="models_dir", problem=problem)
    if _unfinished(folder):
        marker = read_pull_marker(folder) or {}
        total = marker.get("total_bytes")
        held = partial_bytes(folder)
        return FolderState(
            "absent", None, held, partial_bytes=held, total_bytes=int(total) if total else None, where="models_dir"
        )
    if (folder / "model_index.json").is_file():
        return FolderState("present", folder, folder_size(folder), where="models_dir")
    return FolderState("absent")


def hf_cache_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """A snapshot of ``repo_id`` (at ``revision``, else ``main`` or the newest) in the Hugging Face cache."""
    from huggingface_hub.constants import HF_HUB_CACHE

    repo_dir = Path(HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    if not repo_dir.is_dir():
        return None
    wanted = revision or "main"
    ref = repo_dir / "refs" / wanted
    commit = ref.read_text().strip() if ref.is_file() else wanted
    snapshot = repo_dir / "snapshots" / commit
    if (snapshot / "model_index.json").is_file():
        return snapshot
    if revision:  # a pinned revision is that revision or nothing
        return None
    snapshots = sorted((repo_dir / "snapshots").glob("*/model_index.json"), key=os.path.getmtime)
    return snapshots[-1].parent if snapshots else None


def inspect_repo(models_dir: Path, repo_id: str, revision: str | None) -> FolderState:
    """A repo's state: its own folder in ``models_dir`` first, else the Hugging Face cache."""
    state = inspect_folder(repo_folder(models_dir, repo_id, revision))
    if state.state != "absent" or state.partial_bytes:
        return state
    snapshot = hf_cache_snapshot(repo_id, revision)
    if snapshot is not None:
        return FolderState("present", snapshot, folder_size(snapshot), where="hf_cache")
    return state
