"""Everything a request handler (API or UI) needs, built once per app by ``create_app``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steadyframe.jobs.base import JobRecord, JobStatus, JobStore
from steadyframe.server.history import MemoryHistory
from steadyframe.server.job_service import JobService
from steadyframe.server.pulls import PullManager
from steadyframe.server.uploads import UploadStore
from steadyframe.settings import Settings

OUTPUT_FILES = {"video": ("video_path", "video.mp4", "video/mp4"), "gif": ("gif_path", "preview.gif", "image/gif")}


@dataclass
class ServerContext:
    settings: Settings
    store: JobStore
    uploads: UploadStore
    jobs: JobService
    dispatcher: (
        Any  # steadyframe.supervisor.Dispatcher (typed loosely: tests may pass a stand-in with the same methods)
    )
    warnings: list[str] = field(default_factory=list)  # shown in /v1/system: exposure, damaged state
    pulls: PullManager | None = None
    history: MemoryHistory | None = None  # the memory timeline (server/history.py)

    def output_file(self, record: JobRecord, which: str) -> Path | None:
        """The finished job's ``video`` or ``gif`` file, only if it exists inside that job's output folder."""
        if record.status != JobStatus.SUCCEEDED or not record.result:
            return None
        key, default_name, _ = OUTPUT_FILES[which]
        folder = (self.settings.outputs_dir / record.id).resolve()
        candidate = Path(record.result.get(key) or folder / default_name).resolve()
        if candidate.parent != folder or not candidate.is_file():
            return None  # never serve a file the job record points outside its own folder
        return candidate
