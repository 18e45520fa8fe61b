"""Pull a model repo from the Hugging Face Hub into its own folder: resumable, verified, marked
complete last (no torch; used by the server's pull manager and by ``steadyframe pull``).

The repo's file list, sizes and LFS hashes come from ``huggingface_hub`` (``HfApi.model_info``);
each file streams through the library's HTTP session into ``.steadyframe-partial/<file>.part``,
continuing from the bytes already there with a Range request, is checked (size, sha256), then
renamed into place. The completion marker is written after the last file, so a folder is never
``present`` half-way. One pull per folder at a time, across processes (a file lock).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from steadyframe.errors import ModelUnavailableError
from steadyframe.model_files import (
    COMPLETE_MARKER,
    PART_SUFFIX,
    PARTIAL_DIR,
    PULL_MARKER,
    CompletionRecord,
    repo_folder,
    write_complete_marker,
    write_pull_marker,
)

# What a diffusers pipeline folder needs; weights in other formats are dropped beside .safetensors.
ALLOW_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.tiktoken", "*/*.safetensors", "*/*.bin"]
_DUPLICATE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
_CHUNK = 1024 * 1024
ProgressCallback = Callable[[int, int], None]  # (bytes done, bytes total)


class PullFailed(ModelUnavailableError):
    """The pull stopped (network, hub, auth, disk); the bytes already on disk are kept for a resume."""


class NotEnoughDisk(PullFailed):
    """The disk cannot hold the rest of the model; found before the first byte is fetched."""


class PullBusy(PullFailed):
    """Another process is pulling the same model right now."""


class PullCancelled(PullFailed):
    """The pull was asked to stop (a delete, a server stop); what is on disk stays resumable."""


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # LFS files carry their hash; small git files do not


@dataclass(frozen=True)
class PullPlan:
    """What a pull fetches: the exact commit, the files and how many bytes are already here."""

    repo_id: str
    commit: str
    folder: Path
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def bytes_on_disk(self) -> int:
        return sum(_held(self.folder, f) for f in self.files)


def is_offline() -> bool:
    """``HF_HUB_OFFLINE`` as ``huggingface_hub`` read it: then nothing is pulled."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def wanted_files(paths: list[str]) -> list[str]:
    """The files of a repo a diffusers pipeline loads (``ALLOW_PATTERNS``, no duplicate weights)."""
    from huggingface_hub.utils import filter_repo_objects

    allowed = list(filter_repo_objects(paths, allow_patterns=ALLOW_PATTERNS))
    with_safetensors = {p.rsplit("/", 1)[0] for p in allowed if p.endswith(".safetensors") and "/" in p}
    return [
        p for p in allowed if not (p.endswith(_DUPLICATE_WEIGHTS) and "/" in p and p.rsplit("/", 1)[0] in with_safetensors)
    ]


def _held(folder: Path, remote: RemoteFile) -> int:
    """Bytes of ``remote`` on disk: all of it when finished, else its partial file's length."""
    final = folder / remote.path
    if final.is_file() and final.stat().st_size == remote.size:
        return remote.size
    part = _part_path(folder, remote.path)
    return min(part.stat().st_size, remote.size) if part.is_file() else 0


def _part_path(folder: Path, relative: str) -> Path:
    return folder / PARTIAL_DIR / (relative + PART_SUFFIX)


def _describe_hub_error(exc: Exception, repo_id: str) -> tuple[str, str]:
    """(message, advice) for a failure talking to the hub; never a path."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return (
            f"The repo {repo_id} is gated: this server's token may not download it.",
            "Accept the model's terms on the Hub, then set STEADYFRAME_HF_TOKEN (or HF_TOKEN) to a token that can read it.",
        )
    if isinstance(exc, RevisionNotFoundError):
        return f"The repo {repo_id} has no such revision.", "Check the @revision in STEADYFRAME_MODELS."
    if isinstance(exc, RepositoryNotFoundError):
        return (
            f"The repo {repo_id} was not found, or it is private and needs a token.",
            "Check the repo id; for a private repo set STEADYFRAME_HF_TOKEN (or HF_TOKEN).",
        )
    if isinstance(exc, HfHubHTTPError) and exc.response is not None and exc.response.status_code in (401, 403):
        return (
            f"The Hub refused to serve {repo_id} (HTTP {exc.response.status_code}).",
            "Set STEADYFRAME_HF_TOKEN (or HF_TOKEN) to a token that can read it.",
        )
    return (
        f"The download of {repo_id} stopped: {type(exc).__name__}.",
        "Check the network and pull again; it continues from the bytes already downloaded.",
    )


def plan_pull(repo_id: str, revision: str | None, folder: Path, *, token: str | None) -> PullPlan:
    """Ask the hub for the commit, the files and their sizes (one API call)."""
    from huggingface_hub import HfApi

    failure: tuple[str, str] | None = None
    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # network, auth, missing repo: all mean "cannot pull now"
        failure = _describe_hub_error(exc, repo_id)
    if failure is not None:
        raise PullFailed(failure[0], advice=failure[1])
    siblings = {s.rfilename: s for s in info.siblings or []}
    files = []
    for path in wanted_files(list(siblings)):
        sibling = siblings[path]
        size = sibling.lfs.size if sibling.lfs else sibling.size
        if size is None:
            raise PullFailed(f"The Hub did not say how big {path} is in {repo_id}.", advice="Try the pull again later.")
        files.append(RemoteFile(path, int(size), sibling.lfs.sha256 if sibling.lfs else None))
    if "model_index.json" not in siblings:
        raise PullFailed(f"The repo {repo_id} is not a diffusers pipeline (no model_index.json).")
    assert info.sha is not None
    return PullPlan(repo_id=repo_id, commit=info.sha, folder=folder, files=tuple(files))


def check_disk(plan: PullPlan, reserve_bytes: int, name: str) -> None:
    """Raise NotEnoughDisk unless the rest of the model fits, leaving ``reserve_bytes`` free."""
    probe = plan.folder if plan.folder.exists() else plan.folder.parent
    probe.mkdir(parents=True, exist_ok=True)
    needed = plan.total_bytes - plan.bytes_on_disk()
    free = shutil.disk_usage(probe).free
    if needed + reserve_bytes > free:
        gb = 1024**3
        raise NotEnoughDisk(
            f"Not enough disk space to pull {name}: it needs {needed / gb:.2f} GB more, "
            f"{free / gb:.2f} GB are free and {reserve_bytes / gb:.2f} GB must stay free.",
            advice="Free some space on the models disk, or point STEADYFRAME_MODELS_DIR at a bigger one.",
        )


class _Transfer:
    """Byte counting shared by every file of one pull, with the stop check between chunks."""

    def __init__(self, plan: PullPlan, on_progress: ProgressCallback | None, stop: threading.Event | None) -> None:
        self.total = plan.total_bytes
        self.done = plan.bytes_on_disk()
        self._on_progress = on_progress
        self._stop = stop

    def add(self, count: int) -> None:
        self.done += count
        self.report()

    def report(self) -> None:
        if self._on_progress is not None:
            self._on_progress(self.done, self.total)

    def check_stop(self) -> None:
        if self._stop is not None and self._stop.is_set():
            raise PullCancelled("The pull was stopped.", advice="Pull again to continue where it stopped.")


def _fetch_file(plan: PullPlan, remote: RemoteFile, headers: dict[str, str], transfer: _Transfer) -> None:
    """Stream one file into its .part file from where it stopped; verify; rename into place.

    Hand-written: ``hf_hub_download`` (2.x) writes each try to a process-unique temporary file and
    deletes it on failure, so it cannot continue a download after the process dies.
    """
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import get_session, hf_raise_for_status

    final = plan.folder / remote.path
    if final.is_file() and final.stat().st_size == remote.size:
        return
    part = _part_path(plan.folder, remote.path)
    part.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.is_file() else 0
    if have > remote.size:
        part.unlink()
        have = 0
    if have < remote.size:
        url = hf_hub_url(plan.repo_id, remote.path, revision=plan.commit)
        request_headers = {**headers, "Accept-Encoding": "identity"}
        if have:
            request_headers["Range"] = f"bytes={have}-"
        with get_session().stream("GET", url, headers=request_headers, follow_redirects=True) as response:
            if response.status_code >= 400:
                response.read()
            hf_raise_for_status(response)
            mode = "ab" if have and response.status_code == 206 else "wb"
            if mode == "wb" and have:
                transfer.add(-have)  # the server ignored the Range: start the file over
            with open(part, mode) as sink:
                for chunk in response.iter_bytes():
                    transfer.check_stop()
                    sink.write(chunk)
                    sink.flush()  # on disk (page cache) at once: a killed process keeps every byte it got
                    transfer.add(len(chunk))
    actual = part.stat().st_size
    if actual != remote.size:
        raise PullFailed(
            f"The download of {plan.repo_id} stopped inside a file ({actual} of {remote.size} bytes).",
            advice="Pull again; it continues from the bytes already downloaded.",
        )
    if remote.sha256 is not None and _sha256(part) != remote.sha256:
        part.unlink()
        transfer.add(-remote.size)
        raise PullFailed(
            f"A file of {plan.repo_id} arrived damaged (its checksum does not match); it was removed.",
            advice="Pull again.",
        )
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def run_pull(
    plan: PullPlan,
    *,
    token: str | None,
    revision: str | None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> CompletionRecord:
    """Fetch every file of ``plan`` not yet on disk, then write the completion marker (last)."""
    from huggingface_hub.utils import build_hf_headers

    folder = plan.folder
    (folder / COMPLETE_MARKER).unlink(missing_ok=True)  # a repair: not present until it is whole again
    write_pull_marker(folder, plan.repo_id, revision, plan.total_bytes)
    headers = build_hf_headers(token=token)
    transfer = _Transfer(plan, on_progress, stop)
    transfer.report()
    failure: tuple[str, str] | None = None
    for remote in plan.files:
        transfer.check_stop()
        try:
            _fetch_file(plan, remote, headers, transfer)
        except PullFailed:
            raise
        except OSError as exc:
            if exc.errno == 28:  # ENOSPC
                raise NotEnoughDisk(
                    f"The disk filled up while pulling {plan.repo_id}.",
                    advice="Free some space on the models disk and pull again; it continues where it stopped.",
                ) from None
            failure = _describe_hub_error(exc, plan.repo_id)
        except Exception as exc:  # network errors from the HTTP client: resumable
            failure = _describe_hub_error(exc, plan.repo_id)
        if failure is not None:
            raise PullFailed(failure[0], advice=failure[1])
    record = CompletionRecord(
        repo_id=plan.repo_id, revision=plan.commit, files={f.path: f.size for f in plan.files}, pulled_at=_now()
    )
    write_complete_marker(folder, record)
    (folder / PULL_MARKER).unlink(missing_ok=True)
    shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)
    return record


def _now() -> float:
    import time

    return time.time()


def folder_lock(models_dir: Path, folder: Path):  # -> filelock.FileLock
    """The cross-process lock that keeps one pull per folder (outside it, so a delete can remove it)."""
    from filelock import FileLock

    locks = models_dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    return FileLock(str(locks / (folder.name + ".lock")))


def pull_repo(
    repo_id: str,
    revision: str | None,
    *,
    models_dir: Path,
    name: str,
    token: str | None,
    reserve_bytes: int,
    on_plan: Callable[[PullPlan], None] | None = None,
    on_progress: ProgressCallback | None = None,
    stop: threading.Event | None = None,
) -> Path:
    """Pull ``repo_id[@revision]`` into ``MODELS_DIR/<owner>--<name>[@revision]`` -> that folder.

    Raises PullBusy (another process pulls it), NotEnoughDisk (before any byte), PullFailed
    (network, hub, auth: what arrived stays for the next try) or PullCancelled (``stop`` was set).
    """
    from filelock import Timeout

    folder = repo_folder(models_dir, repo_id, revision)
    lock = folder_lock(models_dir, folder)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise PullBusy(
            f"The model {name} is being pulled by another process.", advice="Wait for that pull to finish."
        ) from None
    try:
        plan = plan_pull(repo_id, revision, folder, token=token)
        if on_plan is not None:
            on_plan(plan)
        check_disk(plan, reserve_bytes, name)
        run_pull(plan, token=token, revision=revision, on_progress=on_progress, stop=stop)
    finally:
        lock.release()
    return folder
