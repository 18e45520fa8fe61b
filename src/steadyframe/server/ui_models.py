"""The UI's *Models* tab: the catalog as a table, Pull and Delete buttons, a live download bar.

Pull and Delete go through the same ``PullManager`` as ``/v1/models``; the bar follows the pull
by polling it (no thread held while the browser waits).
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import AsyncIterator
from typing import Any

import gradio as gr
from fastapi.concurrency import run_in_threadpool

from steadyframe.catalog import catalog
from steadyframe.pull import PullFailed
from steadyframe.server.context import ServerContext
from steadyframe.server.model_views import catalog_model_view
from steadyframe.server.pulls import CannotDelete, CannotPull
from steadyframe.server.schemas import CatalogModelView
from steadyframe.server.system_info import worker_processes

MODEL_COLUMNS = ["model", "family", "task", "state", "downloaded", "size MB", "memory MB", "loaded", "source"]
POLL_S = 0.3


def _mb(value: int | None) -> str:
    return "?" if value is None else f"{value / 2**20:,.1f} MB"


def progress_card(model: CatalogModelView) -> str:
    """The bar for one model as escaped HTML: state, bytes done of total, the last pull error."""
    name = html.escape(model.name)
    lines = [f"<b>{name}</b> · <span class='sf-model-state'>{html.escape(model.state)}</span>"]
    if model.download is not None:
        done, total = model.download.bytes_done, model.download.bytes_total
        word = "downloading" if model.state == "downloading" else "resumable from"
        lines.append(f"<div class='sf-model-bytes'>{word} {_mb(done)} of {_mb(total)}</div>")
        lines.append(f"<div class='sf-bar'><div style='width:{model.download.fraction * 100:.0f}%'></div></div>")
    elif model.state == "present":
        lines.append(f"<div class='sf-model-bytes'>{model.size_on_disk_mb:,.1f} MB on disk</div>")
    if model.last_pull_error is not None:
        problem = model.last_pull_error
        lines.append(f"<div class='sf-error-message'>{html.escape(problem.message)}</div>")
        if problem.advice:
            lines.append(f"<div class='sf-error-advice'>{html.escape(problem.advice)}</div>")
    return "<div class='sf-card'>" + "".join(lines) + "</div>"


class ModelsTab:
    """The handlers behind the tab (each is also a named gradio_client endpoint)."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def _views(self) -> list[CatalogModelView]:
        labels = sorted({m for w in worker_processes(self.ctx.dispatcher) for m in w.loaded_models})
        return [catalog_model_view(e, self.ctx.settings, self.ctx.pulls, labels) for e in catalog(self.ctx.settings).values()]

    def _view(self, name: str) -> CatalogModelView:
        entry = catalog(self.ctx.settings).get(name or "")
        if entry is None:
            raise gr.Error("Pick a model from the list first.", title="No model selected")
        return catalog_model_view(entry, self.ctx.settings, self.ctx.pulls, [])

    def table(self) -> list[list[Any]]:
        rows = []
        for m in self._views():
            done = ""
            if m.download is not None:
                done = f"{m.download.bytes_done / 2**20:,.1f} / {_mb(m.download.bytes_total)}"
            memory = "" if m.memory_needed_mb is None else f"{m.memory_needed_mb:,.0f}"
            rows.append([m.name, m.family, m.task, m.state, done, m.size_on_disk_mb, memory, "yes" if m.loaded else "", m.source])
        return rows

    def refresh(self) -> tuple[list[list[Any]], Any]:
        rows = self.table()
        return rows, gr.update(choices=[r[0] for r in rows])

    def show(self, name: str) -> str:
        return progress_card(self._view(name)) if name else ""

    def _start(self, name: str) -> None:
        entry = catalog(self.ctx.settings).get(name or "")
        if entry is None:
            raise gr.Error("Pick a model from the list first.", title="No model selected")
        assert self.ctx.pulls is not None
        try:
            self.ctx.pulls.start(entry)
        except (CannotPull, PullFailed) as exc:
            raise gr.Error(html.escape(f"{exc.message} {exc.advice or ''}".strip()), title="Cannot pull") from None

    async def pull(self, name: str) -> AsyncIterator[tuple[str, list[list[Any]]]]:
        """Start the pull, then stream the bar and the table until the download ends."""
        if self._view(name).state != "present":
            await run_in_threadpool(self._start, name)
        while True:
            model = await run_in_threadpool(self._view, name)
            yield progress_card(model), await run_in_threadpool(self.table)
            if model.state != "downloading":
                return
            await asyncio.sleep(POLL_S)

    def delete(self, name: str) -> tuple[str, list[list[Any]]]:
        entry = catalog(self.ctx.settings).get(name or "")
        if entry is None:
            raise gr.Error("Pick a model from the list first.", title="No model selected")
        assert self.ctx.pulls is not None
        try:
            self.ctx.pulls.delete(entry)
        except CannotDelete as exc:
            raise gr.Error(html.escape(f"{exc.message} {exc.advice or ''}".strip()), title="Cannot delete") from None
        return progress_card(self._view(name)), self.table()


def build_models_tab(ctx: ServerContext) -> gr.Tab:
    """The tab, to be called inside the UI's ``gr.Tabs``."""
    handlers = ModelsTab(ctx)
    with gr.Tab("Models", id="models") as tab:
        gr.Markdown("The models this server offers. **Pull** downloads one (it resumes if cut off); **Delete** frees its disk.")
        table = gr.Dataframe(headers=MODEL_COLUMNS, interactive=False, elem_id="models-table")
        with gr.Row():
            picked = gr.Dropdown(list(catalog(ctx.settings)), label="Model", elem_id="models-pick")
            pull_btn = gr.Button("Pull", variant="primary", elem_id="models-pull")
            delete_btn = gr.Button("Delete", variant="stop", elem_id="models-delete")
            refresh_btn = gr.Button("Refresh", elem_id="models-refresh")
        card = gr.HTML("", elem_id="models-progress")
    pull_btn.click(handlers.pull, [picked], [card, table], api_name="pull_model", concurrency_limit=None)
    delete_btn.click(handlers.delete, [picked], [card, table], api_name="delete_model")
    refresh_btn.click(handlers.refresh, None, [table, picked], api_name="models")
    picked.change(handlers.show, [picked], [card], api_name=False)
    tab.select(handlers.refresh, None, [table, picked], api_name=False)
    return tab
