"""Where a job's files live inside its output folder (no torch: the server uses this too)."""

from __future__ import annotations

import shutil
from pathlib import Path

CHECKPOINTS_DIRNAME = ".checkpoints"


def checkpoints_dir(out_dir: Path) -> Path:
    """The job's stage checkpoints (see ``engine.checkpoints``), inside its output folder."""
    return Path(out_dir) / CHECKPOINTS_DIRNAME


def discard_job_scratch(outputs_dir: Path, job_id: str) -> None:
    """A job that ended without a result: its half-written outputs and checkpoints go."""
    shutil.rmtree(Path(outputs_dir) / job_id, ignore_errors=True)
