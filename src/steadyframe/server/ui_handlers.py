"""What the UI's events do: submit through ``JobService``, follow the job in the store, cancel,
list history and system facts. Escapes every user or job string that reaches HTML.

Generation handlers are async generators: they poll the store with ``asyncio.sleep`` so a waiting
browser holds no thread, and Cancel sets the job's cancel flag in the store (the worker really stops).
"""

from __future__ import annotations

import asyncio
import html
import json
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import gradio as gr
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from steadyframe.engine.memory_levels import describe as describe_memory_level
from steadyframe.errors import InvalidInputError
from steadyframe.jobs.base import JobRecord, JobStatus
from steadyframe.server.context import ServerContext
from steadyframe.server.job_service import IdempotencyConflict, JobRejected, QueueFull
from steadyframe.server.prompt_enhance import PromptEnhanceError, enhance_prompt
from steadyframe.server.guard import client_key
from steadyframe.server.schemas import JobCreate
from steadyframe.server.system_info import server_process, swap_and_ram_mb, worker_processes
from steadyframe.server.ui_estimate import form_estimate, summary as estimate_summary
from steadyframe.server.ui_memory import profile_html
from steadyframe.server.uploads import UnsupportedMediaType, UploadTooLarge
from steadyframe.stages import stage_words
from steadyframe.server.views import waiting_view
from steadyframe.taxonomy import user_text

DEFAULT_MODEL = "server default"
HISTORY_LIMIT = 50
POLL_S = 0.4  # store polling while a job runs: live enough, cheap for SQLite


def _esc(value: object) -> str:
    """Text for HTML: ``&``, ``<`` and ``>`` escaped (user text is never markup)."""
    return html.escape(str(value), quote=False)


class OutputStaging:
    """Per-job copies of output files for Gradio, outside the data directory Gradio is blocked from."""

    # Gradio copies what a handler returns into its own cache, so ours only needs to live briefly.
    keep_s = 3600.0

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="steadyframe-ui-"))
        self._next_prune = time.monotonic() + self.keep_s

    def copy(self, ctx: ServerContext, record: JobRecord, which: str) -> str | None:
        """A path Gradio may serve holding the job's ``video`` or ``gif``; None when it has none."""
        source = ctx.output_file(record, which)
        if source is None:
            return None
        self._prune()
        target = self.root / record.id / f"steadyframe-{record.id}{source.suffix}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            shutil.copyfile(source, partial)
            partial.replace(target)  # a concurrent reader never sees half a file
        return str(target)

    def _prune(self) -> None:
        """Drop copies older than ``keep_s`` (checked at most once per ``keep_s``)."""
        if time.monotonic() < self._next_prune:
            return
        self._next_prune = time.monotonic() + self.keep_s
        cutoff = time.time() - self.keep_s
        for folder in self.root.iterdir():
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def status_card(record: JobRecord, ctx: ServerContext, position: int | None = None) -> str:
    """The job panel as escaped HTML: status, stage and progress bar, or the kept error."""
    status = record.status
    lines = [
        f"<b>Job <span class='sf-job-id'>{_esc(record.id)}</span></b> · <span class='sf-status'>{_esc(status.value)}</span>"
    ]
    css = "sf-card"
    waiting = waiting_view(record, ctx.pulls if ctx is not None else None)
    if waiting is not None:
        download = waiting.download
        amount = ""
        if download is not None and download.bytes_total:
            amount = f": {download.bytes_done / 2**20:,.1f} of {download.bytes_total / 2**20:,.1f} MB"
        lines.append(f"<div class='sf-stage'>Waiting for the model download ({_esc(waiting.model)}){_esc(amount)}</div>")
        fraction = download.fraction if download is not None else 0.0
        lines.append(f"<div class='sf-bar'><div style='width:{fraction * 100:.0f}%'></div></div>")
    elif status == JobStatus.QUEUED:
        where = f"{position + 1} in line" if position is not None else "waiting"
        lines.append(f"<div class='sf-muted'>Queued ({_esc(where)})</div>")
    elif status == JobStatus.RUNNING:
        progress = record.progress
        stage = stage_words(progress.stage, progress.stage or "starting")
        counter = f" {progress.step}/{progress.total}" if progress.total else ""
        attempt = f" (attempt {record.attempt + 1})" if record.attempt else ""
        lines.append(f"<div class='sf-stage'>{_esc(stage)}{_esc(counter)}{_esc(attempt)}</div>")
        lines.append(f"<div class='sf-bar'><div style='width:{progress.fraction * 100:.0f}%'></div></div>")
    elif status == JobStatus.SUCCEEDED and record.result:
        result = record.result
        lines.append(
            f"<div>Done: {_esc(result.get('frames'))} frames, {_esc(result.get('width'))}×{_esc(result.get('height'))}, "
            f"{float(result.get('duration_s', 0)):.1f} s at {_esc(result.get('fps'))} fps, seed {_esc(result.get('seed'))}</div>"
        )
        level = int(result.get("memory_level", 0) or 0)
        learned = int(result.get("learned_start_level", 0) or 0)
        if learned:
            lines.append(
                f"<div class='sf-muted'>Started with {_esc(describe_memory_level(learned))} (memory-saving level "
                f"{learned}): earlier jobs of this size needed it.</div>"
            )
        if level > learned:
            lines.append(
                f"<div class='sf-muted'>Recovered from out-of-memory by {_esc(describe_memory_level(level))} "
                f"(memory-saving level {level}).</div>"
            )
        for stage, how in (result.get("stage_recoveries") or {}).items():
            lines.append(f"<div class='sf-muted'>Out of memory in {_esc(stage)}: recovered with {_esc(how)}.</div>")
        if result.get("resumed_from"):
            lines.append(
                f"<div class='sf-muted'>Resumed after {_esc(result['resumed_from'])}: an interrupted attempt's "
                "finished stages were kept.</div>"
            )
        if result.get("test_noise"):
            lines.append(
                "<div class='sf-muted'>Built-in tiny model: this output is test noise, not a real video.</div>"
            )
        lines.append(profile_html(result.get("memory_profile")))
    elif status == JobStatus.FAILED and record.error:
        error = record.error
        css += " sf-error"
        lines.append(f"<div class='sf-error-message'>{_esc(error.message)}</div>")
        lines.append(f"<div class='sf-error-advice'>{_esc(error.advice)}</div>")
        lines.append(f"<div class='sf-muted'>Error id <span class='sf-error-id'>{_esc(error.error_id)}</span></div>")
        lines.append(profile_html(error.memory_profile))
    elif status == JobStatus.CANCELLED:
        lines.append("<div class='sf-cancelled'>Cancelled.</div>")
    if record.estimate and not status.terminal:
        lines.append(f"<div class='sf-muted sf-estimate'>{_esc(estimate_summary(record.estimate))}</div>")
    return f"<div class='{css}'>" + "".join(lines) + "</div>"


def _none_if_blank(value: Any) -> Any:
    return None if value in (None, "") else value


def build_request(
    mode: str,
    prompt: str,
    negative: str,
    model: str | None,
    preset: str,
    seed: float | None,
    steps: float | None,
    guidance: float | None,
    frames: float | None,
    upscale: Any,
    interpolate: Any,
    fault_json: str | None,
    *,
    speed: str | None = None,
    strength: float | None = None,
    image_upload: str | None = None,
    video_upload: str | None = None,
) -> JobCreate:
    """A ``JobCreate`` from UI values (blank or 0 = default, seed -1 = random); raises ``gr.Error`` on bad input."""
    fields: dict[str, Any] = {
        "mode": mode,
        "prompt": prompt or "",
        "negative_prompt": negative or "",
        "model": None if model in (None, "", DEFAULT_MODEL) else model,
        "preset": preset or None,
        "seed": None if seed is None or int(seed) < 0 else int(seed),
        "steps": None if _none_if_blank(steps) is None or int(steps) <= 0 else int(steps),
        "guidance": None if _none_if_blank(guidance) is None or float(guidance) <= 0 else float(guidance),
        "num_frames": None if _none_if_blank(frames) is None or int(frames) <= 0 else int(frames),
        "upscale": int(upscale or 1),
        "interpolate": int(interpolate or 1),
        "speed": speed or "exact",
        "strength": strength if mode == "v2v" else None,
        "image_upload": image_upload,
        "video_upload": video_upload,
    }
    if fault_json and fault_json.strip():
        try:
            fields["fault"] = json.loads(fault_json)
        except json.JSONDecodeError:
            raise gr.Error("The fault field is not valid JSON.", title="Invalid input") from None
    try:
        return JobCreate(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise gr.Error(_esc(f"{where}: {first['msg']}"), title="Invalid input") from None


def ui_client(asker: gr.Request | None) -> str | None:
    """Who submitted from the UI, as the API counts clients (the guard's verdict on Gradio's request)."""
    scope = getattr(getattr(asker, "request", None), "scope", None)  # None when called without Gradio
    return client_key(scope) if isinstance(scope, dict) else None


class UIHandlers:
    """The functions behind the UI's events (each is also a named gradio_client endpoint)."""

    def __init__(self, ctx: ServerContext, staging: OutputStaging) -> None:
        self.ctx = ctx
        self.staging = staging

    # --- submitting ---------------------------------------------------------------------

    def _upload(self, path: str | None, what: str) -> str:
        if not path:
            raise gr.Error(f"Add an input {what} first.", title="Invalid input")
        try:
            with open(path, "rb") as handle:
                return self.ctx.uploads.save(handle).id
        except (UploadTooLarge, UnsupportedMediaType) as exc:
            raise gr.Error(_esc(str(exc)), title="Invalid input") from None
        except InvalidInputError as exc:
            raise gr.Error(_esc(f"{exc.message} {exc.advice or ''}".strip()), title="Invalid input") from None

    def _submit(self, request: JobCreate, client: str | None = None) -> JobRecord:
        try:
            record, _ = self.ctx.jobs.submit(request, client=client)
        except JobRejected as exc:
            raise gr.Error(_esc(f"{exc.message.rstrip('.')}. {exc.advice}"), title="Invalid input") from None
        except QueueFull as exc:
            raise gr.Error(_esc(f"{exc}: try again in {exc.retry_after_s} s."), title="Server busy") from None
        except IdempotencyConflict as exc:  # the UI sends no key; kept for completeness of the mapping
            raise gr.Error(_esc(str(exc))) from None
        return record

    def estimate(self, model: str | None, frames: Any, upscale: Any, interpolate: Any) -> str:
        """The line under Generate: what a job with these options needs, or why it would be refused."""
        return form_estimate(self.ctx, None if model in (None, "", DEFAULT_MODEL) else model, frames, upscale, interpolate)

    # --- following a job ----------------------------------------------------------------

    async def follow(self, job_id: str, progress: gr.Progress) -> AsyncIterator[tuple[Any, ...]]:
        """Stream (job id, panel, video, mp4, gif, seed) until the job ends; a failure ends in ``gr.Error``."""
        record = await run_in_threadpool(self.ctx.store.get, job_id)
        if record is None:
            raise gr.Error(_esc(f"No job with id {job_id}."), title="Unknown job")
        last: tuple[object, ...] | None = None
        while not record.status.terminal:
            waiting = waiting_view(record, self.ctx.pulls)
            fetched = waiting.download.bytes_done if waiting is not None and waiting.download is not None else None
            state = (record.status, record.progress.stage, record.progress.step, record.progress.total, fetched)
            if state != last:
                last = state
                position = await run_in_threadpool(self.ctx.store.position, job_id)
                stage = stage_words(record.progress.stage, "queued" if record.status == JobStatus.QUEUED else "starting")
                fraction = record.progress.fraction
                if waiting is not None:
                    stage = "waiting for the model download"
                    fraction = waiting.download.fraction if waiting.download is not None else 0.0
                progress(fraction, desc=stage)
                yield job_id, status_card(record, self.ctx, position), gr.skip(), gr.skip(), gr.skip(), gr.skip()
            await asyncio.sleep(POLL_S)
            record = await run_in_threadpool(self.ctx.store.get, job_id)
            if record is None:
                raise gr.Error(_esc(f"Job {job_id} was removed."), title="Unknown job")
        yield self._final(record)
        if record.status == JobStatus.FAILED and record.error is not None:
            error = record.error
            raise gr.Error(
                _esc(user_text(error.message, error.advice, error.error_id)), title="Generation failed", duration=30
            )

    def _final(self, record: JobRecord) -> tuple[Any, ...]:
        card = status_card(record, self.ctx)
        if record.status != JobStatus.SUCCEEDED:
            return record.id, card, None, gr.update(value=None, visible=False), gr.update(value=None, visible=False), ""
        video = self.staging.copy(self.ctx, record, "video")
        gif = self.staging.copy(self.ctx, record, "gif")
        seed = str((record.result or {}).get("seed", ""))
        return (
            record.id,
            card,
            video,
            gr.update(value=video, visible=video is not None),
            gr.update(value=gif, visible=gif is not None),
            seed,
        )

    async def _run(
        self, request: JobCreate, progress: gr.Progress, asker: gr.Request | None
    ) -> AsyncIterator[tuple[Any, ...]]:
        record = await run_in_threadpool(self._submit, request, ui_client(asker))
        async for update in self.follow(record.id, progress):
            yield update

    # --- the named endpoints ------------------------------------------------------------

    async def generate_t2v(
        self, prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault,
        speed="exact", progress: gr.Progress = gr.Progress(), asker: gr.Request = None,
    ) -> AsyncIterator[tuple[Any, ...]]:  # fmt: skip
        """Text to video: queue the job and stream its progress and result."""
        request = build_request(
            "t2v", prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault,
            speed=speed,
        )  # fmt: skip
        async for update in self._run(request, progress, asker):
            yield update

    async def generate_i2v(
        self, image, prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault,
        speed="exact", progress: gr.Progress = gr.Progress(), asker: gr.Request = None,
    ) -> AsyncIterator[tuple[Any, ...]]:  # fmt: skip
        """Image to video: upload the image, queue the job, stream its progress and result."""
        upload_id = await run_in_threadpool(self._upload, image, "image")
        request = build_request(
            "i2v", prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault,
            speed=speed, image_upload=upload_id,
        )  # fmt: skip
        async for update in self._run(request, progress, asker):
            yield update

    async def generate_v2v(
        self, video, strength, prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate,
        fault, speed="exact", progress: gr.Progress = gr.Progress(), asker: gr.Request = None,
    ) -> AsyncIterator[tuple[Any, ...]]:  # fmt: skip
        """Video to video: upload the video, queue the job, stream its progress and result."""
        upload_id = await run_in_threadpool(self._upload, video, "video")
        request = build_request(
            "v2v", prompt, negative, model, preset, seed, steps, guidance, frames, upscale, interpolate, fault,
            speed=speed, strength=strength, video_upload=upload_id,
        )  # fmt: skip
        async for update in self._run(request, progress, asker):
            yield update

    async def open_job(self, job_id: str, progress: gr.Progress = gr.Progress()) -> AsyncIterator[tuple[Any, ...]]:
        """Re-open a job from the history: its result or error, or its live progress while it runs."""
        if not job_id:
            raise gr.Error("Pick a job from the history first.", title="No job selected")
        async for update in self.follow(job_id.strip(), progress):
            yield update

    def cancel(self, job_id: str | None) -> str:
        """Ask the current job to stop (queued: at once; running: at its next step). -> the panel."""
        if not job_id:
            raise gr.Error("There is no job to cancel.", title="Nothing to cancel")
        record = self.ctx.jobs.cancel(job_id)
        if record is None:
            raise gr.Error(_esc(f"No job with id {job_id}."), title="Unknown job")
        if record.status.terminal:
            return status_card(record, self.ctx)
        gr.Info("Cancel requested: the job stops at its next step.")
        return status_card(record, self.ctx) + "<div class='sf-muted'>Cancel requested…</div>"

    def history(self, only_mine: bool = False, my_jobs: list[str] | None = None) -> tuple[list[list[Any]], Any]:
        """The newest jobs (only those started from this browser when ``only_mine``) as table rows,
        and the job picker's choices."""
        rows = []
        if only_mine:
            found = (self.ctx.store.get(job_id) for job_id in reversed(my_jobs or []))
            records = [r for r in found if r is not None][:HISTORY_LIMIT]
        else:
            records = self.ctx.store.list(limit=HISTORY_LIMIT)
        for record in records:
            prompt = str(record.spec.get("prompt", ""))
            rows.append(
                [
                    record.id,
                    record.spec.get("mode", ""),
                    record.status.value,
                    record.progress.stage or "",
                    prompt if len(prompt) <= 60 else prompt[:57] + "…",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at)),
                    record.error.error_id if record.error else "",
                ]
            )
        return rows, gr.update(choices=[r[0] for r in rows])

    @staticmethod
    def remember(job_id: str | None, my_jobs: list[str] | None) -> list[str]:
        """This browser's job ids (kept in its local storage), newest last, at most ``HISTORY_LIMIT``."""
        known = list(my_jobs or [])
        if job_id and job_id not in known:
            known.append(job_id)
        return known[-HISTORY_LIMIT:]

    def pick_from_table(self, evt: gr.SelectData) -> str:
        """A click on a history row selects that job."""
        row = evt.row_value if evt.row_value else None
        return str(row[0]) if row else ""

    def system(self) -> tuple[list[list[Any]], str, dict[str, Any]]:
        """Process memory rows, a one-line summary and the model list."""
        processes = [server_process(), *worker_processes(self.ctx.dispatcher)]
        rows = [
            [
                p.id,
                p.node or "",
                p.device or "",
                p.pid,
                p.state,
                p.rss_mb,
                p.vram_allocated_mb,
                p.vram_reserved_mb,
                p.jobs_done,
                p.restarts,
                ", ".join(p.loaded_models),
            ]  # fmt: skip
            for p in processes
        ]
        swap_used, swap_total, available = swap_and_ram_mb()
        ready = self.ctx.dispatcher is not None and self.ctx.dispatcher.is_ready()
        summary = (
            f"Workers ready: {'yes' if ready else 'no'} · queued jobs: {self.ctx.store.count(JobStatus.QUEUED)} · "
            f"RAM available: {available:,.0f} MB · swap used: {swap_used:,.0f} / {swap_total:,.0f} MB"
        )
        models = {
            "default": self.ctx.settings.model or "built-in tiny model",
            "loaded": sorted({m for p in processes for m in p.loaded_models}),
        }
        return rows, summary, models

    async def enhance(self, prompt: str) -> str:
        """Rewrite the prompt through the configured chat endpoint."""
        try:
            return await enhance_prompt(prompt, self.ctx.settings)
        except PromptEnhanceError as exc:
            raise gr.Error(_esc(str(exc)), title="Enhance prompt failed") from None
