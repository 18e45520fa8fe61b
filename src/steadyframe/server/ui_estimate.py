"""The UI's words for a job's resource estimate: the line under Generate and the job panel's line."""

from __future__ import annotations

import html
from typing import Any

from steadyframe.catalog import catalog
from steadyframe.estimate import size_words
from steadyframe.server.context import ServerContext
from steadyframe.server.job_service import JobRejected
from steadyframe.spec import Mode

ESTIMATE_HINT = "*The memory and disk a job needs appear here.*"


def summary(estimate: dict[str, Any]) -> str:
    """One plain sentence from an ``EstimateView``-shaped dict (``JobEstimate.to_dict()``)."""
    parts = [f"{size_words(float(estimate['ram_mb']))} of RAM"]
    if estimate.get("vram_mb") is not None:
        parts.append(f"{size_words(float(estimate['vram_mb']))} of GPU memory")
    parts.append(f"{size_words(float(estimate['disk_mb']))} of disk")
    level = int(estimate["level"])
    described = next((row["description"] for row in estimate.get("levels", []) if row["level"] == level), "")
    at = f" at memory level {level}" + (f" ({described})" if described else "")
    return "Needs about " + ", ".join(parts) + at + "."


def _mode_for(ctx: ServerContext, model: str | None) -> Mode:
    """The mode the form's estimate is for: what the model does (text or image to video)."""
    entry = catalog(ctx.settings).get(model) if model else None
    return entry.family.modes[0] if entry is not None else "t2v"


def form_estimate(ctx: ServerContext, model: str | None, frames: Any, upscale: Any, interpolate: Any) -> str:
    """Markdown for the UI's current form values: the estimate, or why the job would be refused."""
    num_frames = int(frames) if frames not in (None, "") and int(frames) > 0 else None
    try:
        estimate = ctx.jobs.estimate_form(
            model, _mode_for(ctx, model), num_frames, int(upscale or 1), int(interpolate or 1)
        )
    except JobRejected as exc:
        return f"**Would be refused:** {html.escape(exc.message, quote=False)} {html.escape(exc.advice, quote=False)}"
    return summary(estimate.to_dict())
