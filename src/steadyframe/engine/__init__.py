"""The CogVideoX generation engine: the only package (with ``postprocess``) that imports torch.

Importing ``steadyframe.engine`` itself stays torch-free (``engine.plan`` is used by the server to
validate specs); ``run_job`` imports the torch modules on first call.
"""

from __future__ import annotations

from pathlib import Path

from steadyframe.contracts import JobHooks, JobResult, ModelProvider
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec


def run_job(
    spec: JobSpec,
    settings: Settings,
    out_dir: Path,
    *,
    hooks: JobHooks,
    models: ModelProvider,
    memory_level: int = 0,
) -> JobResult:
    """Run one job end to end; see ``steadyframe.engine.job.run_job``."""
    from steadyframe.engine.job import run_job as _run_job

    return _run_job(spec, settings, out_dir, hooks=hooks, models=models, memory_level=memory_level)


__all__ = ["run_job"]
