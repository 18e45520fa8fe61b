"""Turns catalog entries, what is on disk and the pull manager's state into ``CatalogModelView``s."""

from __future__ import annotations

from steadyframe.catalog import CatalogEntry, entry_state
from steadyframe.model_files import FolderState, weights_bytes
from steadyframe.server.pulls import PullManager
from steadyframe.server.schemas import CatalogModelView, DownloadView, PullProblemView
from steadyframe.settings import Settings

_MB = 2**20


def label_names(label: str) -> set[str]:
    """Names a worker's loaded-model label (``Pipeline:folder-name:dtype:...``) answers to."""
    return set(label.split(":"))


def catalog_model_view(
    entry: CatalogEntry, settings: Settings, pulls: PullManager | None, loaded_labels: list[str]
) -> CatalogModelView:
    state: FolderState = entry_state(entry, settings)
    status = pulls.status(entry.name) if pulls is not None else None
    shown = state.state
    download = None
    if status is not None and status.state == "downloading":
        shown = "downloading"
        download = DownloadView(bytes_done=status.bytes_done, bytes_total=status.bytes_total, fraction=status.fraction)
    elif state.state == "absent" and state.partial_bytes:
        total = state.total_bytes
        fraction = min(1.0, state.partial_bytes / total) if total else 0.0
        download = DownloadView(bytes_done=state.partial_bytes, bytes_total=total, fraction=fraction)
    memory = None
    if state.state == "present" and state.folder is not None and state.folder.is_dir():
        memory = weights_bytes(state.folder) / _MB or None
    elif state.total_bytes:
        memory = state.total_bytes / _MB
    folder_name = state.folder.name if state.folder is not None else None
    loaded = folder_name is not None and any(folder_name in label_names(label) for label in loaded_labels)
    problem = None
    if status is not None and status.state == "failed" and shown != "present":
        problem = PullProblemView(message=status.message or "The pull failed.", advice=status.advice)
    elif state.state == "broken":
        problem = PullProblemView(
            message=f"The model {entry.name} is damaged: {state.problem}.", advice=f"Run `{entry.pull_command}` to repair it."
        )
    return CatalogModelView(
        name=entry.name,
        family=entry.family.name,
        task=entry.family.task,
        modes=list(entry.family.modes),
        source=entry.source,
        state=shown,
        download=download,
        size_on_disk_mb=round(state.size_bytes / _MB, 3),
        memory_needed_mb=round(memory, 1) if memory else None,
        loaded=loaded,
        test_noise=entry.family.test_noise,
        last_pull_error=problem,
        pull_command=entry.pull_command,
    )
