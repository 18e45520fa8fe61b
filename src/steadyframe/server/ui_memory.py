"""The UI's memory pieces: the System tab's live timeline (a Plotly chart in ``gr.Plot``, drawn by
the plotly.js Gradio bundles, no CDN) and a job's memory profile for its panel.

The chart shows memory per process (server RSS, each worker's RSS) and per GPU (the VRAM each
worker reports), each finished stage's exact peak, and lifecycle events as markers: hovering one
says what happened; a failure says its kind and error id and links to its job (``?job=ID`` opens
it in the job panel).
"""

from __future__ import annotations

import html
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

import gradio as gr
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from steadyframe.server.context import ServerContext
from steadyframe.server.history import HistorySnapshot, Sample, StagePeakMark, TimelineEvent

MEMORY_CSS = """
    .sf-memory { margin-top: 8px; }
    .sf-memory-table { border-collapse: collapse; font-size: 0.9em; margin-top: 4px; }
    .sf-memory-table th, .sf-memory-table td { padding: 2px 8px; text-align: right; border-bottom: 1px solid var(--border-color-primary); }
    .sf-memory-table th:first-child, .sf-memory-table td:first-child { text-align: left; }
"""
WINDOWS = {"5 min": 300.0, "15 min": 900.0, "1 h": 3600.0, "6 h": 6 * 3600.0, "24 h": 86400.0}
DEFAULT_WINDOW = "15 min"
REFRESH_S = 3.0  # how often an open System tab looks for changes
REDRAW_AT_LEAST_S = 30.0  # an unchanged chart is redrawn this often, so its time axis moves on
FAILURES_LISTED = 8
FAILURE_LABEL_LIFT_PX = 11  # a failure marker's radius (15 px symbol, 2 px line) and a pixel more

# Marker look per event kind: (legend group, symbol, colour, size). Failures are drawn last, on top.
# Each group has a lane in the strip above the memory lines, so markers never hide each other or a line.
_MARKERS: dict[str, tuple[str, str, str, int]] = {
    "job_started": ("job started", "triangle-right", "#16a34a", 11),
    "job_stage": ("stage", "line-ns-open", "#6b7280", 10),
    "job_succeeded": ("job succeeded", "circle", "#16a34a", 11),
    "job_cancelled": ("job cancelled", "square-x-open", "#a16207", 12),
    "worker_started": ("worker", "diamond", "#7c3aed", 11),
    "worker_ready": ("worker", "diamond-open", "#7c3aed", 11),
    "worker_restarted": ("worker", "diamond", "#ea580c", 12),
    "worker_recycled": ("worker", "diamond-x", "#ea580c", 13),
    "worker_ended": ("worker", "diamond-x-open", "#ea580c", 12),
    "model_loaded": ("model", "square", "#2563eb", 9),
    "model_unloaded": ("model", "square-open", "#2563eb", 9),
    "job_requeued": ("failure", "x", "#dc2626", 15),
    "job_failed": ("failure", "x", "#dc2626", 15),
}
_LANES = {"failure": "failures", "job started": "jobs", "stage": "stages", "job succeeded": "jobs",
          "job cancelled": "jobs", "worker": "workers", "model": "models"}
_LANE_ORDER = ["models", "workers", "stages", "jobs", "failures"]  # bottom to top
_EVENT_WORDS = {
    "job_started": "job started",
    "job_stage": "stage",
    "job_succeeded": "job succeeded",
    "job_failed": "job failed",
    "job_requeued": "job requeued (worker lost)",
    "job_cancelled": "job cancelled",
    "worker_started": "worker started",
    "worker_ready": "worker ready",
    "worker_restarted": "worker restarted",
    "worker_recycled": "worker recycled",
    "worker_ended": "worker ended",
    "model_loaded": "model loaded",
    "model_unloaded": "model unloaded",
}


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _when(at: float) -> datetime:
    return datetime.fromtimestamp(at)


def job_link(job_id: str) -> str:
    """The UI address that opens ``job_id`` in the job panel (relative to the UI's own page)."""
    return f"?job={quote(job_id, safe='')}"


# --- the timeline chart ------------------------------------------------------------------


def _series(samples: list[Sample]) -> dict[str, tuple[list[datetime], list[float | None]]]:
    """Named lines: server RSS, each worker's RSS, each GPU's VRAM (when any was reported), swap."""
    lines: dict[str, tuple[list[datetime], list[float | None]]] = {}

    def point(name: str, at: float, value: float | None) -> None:
        xs, ys = lines.setdefault(name, ([], []))
        xs.append(_when(at))
        ys.append(value)

    gpu_workers = {w.id for s in samples for w in s.workers if (w.vram_reserved_mb or 0) > 0}
    for sample in samples:
        point("server RSS", sample.at, sample.server_rss_mb)
        for worker in sample.workers:
            where = f" @ {worker.node}" if worker.node else ""
            point(f"worker {worker.id} RSS{where}", sample.at, worker.rss_mb)
            point(f"worker {worker.id} empty (baseline)", sample.at, worker.baseline_rss_mb or None)
            if worker.id in gpu_workers:
                device = worker.device or "gpu"
                point(f"{device} VRAM allocated ({worker.id})", sample.at, worker.vram_allocated_mb)
                point(f"{device} VRAM reserved ({worker.id})", sample.at, worker.vram_reserved_mb)
        if sample.swap_used_mb:
            point("swap used", sample.at, sample.swap_used_mb)
    return lines


def _event_text(event: TimelineEvent) -> str:
    parts = [f"<b>{_esc(_EVENT_WORDS.get(event.kind, event.kind))}</b>"]
    if event.error_kind:
        parts.append(f"kind: {_esc(event.error_kind)}")
    if event.error_id:
        parts.append(f"error id: {_esc(event.error_id)}")
    if event.job_id:
        parts.append(f"job: {_esc(event.job_id)}")
    if event.stage:
        parts.append(f"stage: {_esc(event.stage)}")
    if event.detail:
        parts.append(_esc(event.detail))
    parts.append(f"worker {_esc(event.worker_id)} · {_when(event.at):%H:%M:%S}")
    return "<br>".join(parts)


def _x_start(snapshot: HistorySnapshot, window_s: float) -> float:
    """The window's left edge: ``window_s`` ago, or a little before the first sample if that is later."""
    first = snapshot.samples[0].at if snapshot.samples else snapshot.now
    return max(snapshot.now - window_s, first - 5.0)


def timeline_figure(snapshot: HistorySnapshot, window_s: float) -> go.Figure:
    """The chart for the last ``window_s`` seconds of ``snapshot``: event lanes on top, memory below."""
    start = _x_start(snapshot, window_s)
    samples = [s for s in snapshot.samples if s.at >= start]
    figure = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.3, 0.7], vertical_spacing=0.04)
    for name, (xs, ys) in _series(samples).items():
        dash = "dot" if "reserved" in name or "baseline" in name or name == "swap used" else None
        line: dict[str, Any] = {"width": 2, "dash": dash}
        if "baseline" in name:
            line = {"width": 1.5, "dash": "dot", "color": "#6b7280"}
        figure.add_trace(
            go.Scatter(
                x=xs, y=ys, name=name, mode="lines", line=line, connectgaps=False,
                hovertemplate="%{y:,.0f} MB<extra>" + _esc(name) + "</extra>",
            ),
            row=2, col=1,
        )  # fmt: skip
    peaks = [p for p in snapshot.stage_peaks if p.ended_at >= start]
    if peaks:
        figure.add_trace(
            go.Scatter(
                x=[_when((p.started_at + p.ended_at) / 2) for p in peaks],
                y=[p.peak_rss_mb for p in peaks],
                name="stage peak (worker RSS)",
                mode="markers",
                marker={"symbol": "line-ew-open", "size": 16, "color": "#0f766e", "line": {"width": 3, "color": "#0f766e"}},
                text=[_peak_text(p) for p in peaks],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    events = [e for e in snapshot.events if e.at >= start and e.kind in _MARKERS]
    groups: dict[str, list[TimelineEvent]] = {}
    for event in events:
        groups.setdefault(_MARKERS[event.kind][0], []).append(event)
    for group in sorted(groups, key=lambda g: g == "failure"):  # failures last: drawn on top, the last trace
        chosen = groups[group]
        figure.add_trace(
            go.Scatter(
                x=[_when(e.at) for e in chosen],
                y=[_LANE_ORDER.index(_LANES[group]) for _ in chosen],
                name=group if group != "failure" else "failure (kind, error id)",
                mode="markers",
                marker={
                    "symbol": [_MARKERS[e.kind][1] for e in chosen],
                    "color": [_MARKERS[e.kind][2] for e in chosen],
                    "size": [_MARKERS[e.kind][3] for e in chosen],
                    "line": {"width": 2, "color": [_MARKERS[e.kind][2] for e in chosen]},
                },
                text=[_event_text(e) for e in chosen],
                customdata=[e.job_id or "" for e in chosen],
                hovertemplate="%{text}<extra></extra>",
            ),
            row=1,
            col=1,
        )
    failures = groups.get("failure", [])
    for failure in failures[-FAILURES_LISTED:]:
        when = _when(failure.at)
        figure.add_shape(
            type="line", x0=when, x1=when, y0=0, y1=1, xref="x", yref="paper",
            line={"color": "#dc2626", "width": 1, "dash": "dash"},
        )  # fmt: skip
        label = f"{failure.error_kind or 'failed'} · {failure.error_id or ''}"
        if failure.job_id:
            label = f"<a href='{_esc(job_link(failure.job_id))}' target='_self'>{_esc(label)}</a>"
        # Above its marker, never beside it: a label over a later failure's marker (one a few
        # seconds after it) would take that marker's hover and so hide its kind and error id.
        figure.add_annotation(
            x=when, y=_LANE_ORDER.index("failures"), xref="x", yref="y", text=label, showarrow=False,
            xanchor="left", yanchor="bottom", xshift=-4, yshift=FAILURE_LABEL_LIFT_PX,
            font={"color": "#dc2626", "size": 11}, bgcolor="rgba(255,255,255,0.7)",
        )  # fmt: skip
    figure.update_yaxes(
        tickvals=list(range(len(_LANE_ORDER))), ticktext=_LANE_ORDER, range=[-0.6, len(_LANE_ORDER) - 0.4],
        showgrid=False, zeroline=False, row=1, col=1,
    )  # fmt: skip
    figure.update_yaxes(title_text="MB", rangemode="tozero", row=2, col=1)
    figure.update_xaxes(range=[_when(start), _when(snapshot.now)], row=2, col=1)
    figure.update_xaxes(title_text="time (server clock)", row=2, col=1)
    figure.update_layout(
        height=540,
        margin={"l": 70, "r": 20, "t": 44, "b": 40},  # room above the top lane for failure labels
        hovermode="closest",
        legend={"orientation": "h", "y": -0.16},
        uirevision="memory-timeline",  # keep the user's zoom across refreshes
    )
    return figure


def _peak_text(peak: StagePeakMark) -> str:
    text = f"<b>peak in {_esc(peak.stage)}</b><br>RSS {peak.peak_rss_mb:,.0f} MB"
    if peak.peak_vram_reserved_mb:
        text += f"<br>VRAM {peak.peak_vram_allocated_mb:,.0f} allocated / {peak.peak_vram_reserved_mb:,.0f} MB reserved"
    return text + f"<br>job {_esc(peak.job_id)} · memory-saving level {peak.memory_level}"


def drawn_state(snapshot: HistorySnapshot, window: str) -> tuple[Any, ...]:
    """What the chart shows, coarsely: equal states need no redraw (a redraw drops the user's hover)."""
    last = snapshot.samples[-1] if snapshot.samples else None
    levels: tuple[Any, ...] = ()
    if last is not None:
        levels = (round(last.server_rss_mb / 25), *(round((w.rss_mb or 0) / 25) for w in last.workers))
        levels += tuple(round((w.vram_reserved_mb or 0) / 25) for w in last.workers)
    latest_event = snapshot.events[-1].at if snapshot.events else None
    return (window, latest_event, len(snapshot.stage_peaks), levels, int(snapshot.now // REDRAW_AT_LEAST_S))


def failures_markdown(snapshot: HistorySnapshot, window_s: float) -> str:
    """The window's failures as a list of links to their jobs (newest first)."""
    start = snapshot.now - window_s
    failures = [e for e in snapshot.events if e.at >= start and e.kind in ("job_failed", "job_requeued")]
    if not failures:
        return "No failures in this window."
    lines = ["**Failures in this window** (open one to see its message, advice and memory profile):"]
    for event in reversed(failures[-FAILURES_LISTED:]):
        what = f"{_when(event.at):%H:%M:%S} · {event.error_kind or 'failed'}"
        if event.stage:
            what += f" in {event.stage}"
        job = f"[job {event.job_id}]({job_link(event.job_id)})" if event.job_id else "a job"
        lines.append(f"- {_esc(what)} · error id `{_esc(event.error_id or '')}` · {job}")
    return "\n".join(lines)


# --- a job's memory profile --------------------------------------------------------------


def _mb(value: object) -> str:
    try:
        return f"{float(value):,.0f} MB"  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "–"


def profile_html(profile: dict[str, Any] | None) -> str:
    """A job's per-stage peaks and its level after cleanup as an HTML table; empty without a profile."""
    if not profile or not profile.get("stages"):
        return ""
    with_vram = any(float(s.get("peak_vram_reserved_mb") or 0) > 0 for s in profile["stages"])
    head = "<tr><th>stage</th><th>level</th><th>peak RSS</th>"
    head += "<th>peak VRAM allocated</th><th>peak VRAM reserved</th>" if with_vram else ""
    rows = []
    for stage in profile["stages"]:
        cells = f"<td>{_esc(stage.get('stage'))}</td><td>{_esc(stage.get('memory_level', 0))}</td>"
        cells += f"<td class='sf-peak-rss'>{_mb(stage.get('peak_rss_mb'))}</td>"
        if with_vram:
            cells += f"<td>{_mb(stage.get('peak_vram_allocated_mb'))}</td><td>{_mb(stage.get('peak_vram_reserved_mb'))}</td>"
        rows.append(f"<tr>{cells}</tr>")
    after = profile.get("after_cleanup") or {}
    summary = ""
    if after:
        summary = (
            f"<div class='sf-muted sf-after-cleanup'>After cleanup: {_mb(after.get('rss_mb'))} RSS "
            f"(empty worker: {_mb(after.get('baseline_rss_mb'))})"
            + (f", VRAM {_mb(after.get('vram_allocated_mb'))} allocated / {_mb(after.get('vram_reserved_mb'))} reserved" if with_vram else "")
            + "</div>"
        )
    return (
        "<details class='sf-memory' open><summary>Memory per stage (peaks measured in the worker)</summary>"
        f"<table class='sf-memory-table'>{head}</tr>{''.join(rows)}</table>{summary}</details>"
    )


# --- the System tab's panel --------------------------------------------------------------


class MemoryTimeline:
    """The timeline components of the System tab and their events."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def build(self) -> None:
        """Lay the components out (call inside the System tab)."""
        gr.Markdown("### Memory over time", elem_id="memory-timeline-title")
        self.window = gr.Radio(list(WINDOWS), value=DEFAULT_WINDOW, label="Window", elem_id="memory-window")
        self.plot = gr.Plot(label="Memory per process and GPU, with jobs and failures", elem_id="memory-timeline")
        self.failures = gr.Markdown(elem_id="memory-failures")
        self.drawn = gr.State(None)  # what this browser's chart shows now (``drawn_state``)
        self.timer = gr.Timer(REFRESH_S, active=False)

    def render(self, window: str | None = None) -> tuple[go.Figure | None, str, tuple[Any, ...] | None]:
        """The chart, the failure list and its drawn state for ``window`` (a key of ``WINDOWS``)."""
        history = self.ctx.history
        if history is None:
            return None, "The memory timeline is not running.", None
        window_s = WINDOWS.get(window or DEFAULT_WINDOW, WINDOWS[DEFAULT_WINDOW])
        snapshot = history.snapshot(since=history.now() - window_s)
        return (
            timeline_figure(snapshot, window_s),
            failures_markdown(snapshot, window_s),
            drawn_state(snapshot, window or DEFAULT_WINDOW),
        )

    def refresh(self, window: str | None, drawn: tuple[Any, ...] | None) -> tuple[Any, Any, Any]:
        """The timer's redraw, skipped when nothing visible changed (a redraw drops the hover label)."""
        history = self.ctx.history
        if history is not None:
            window_s = WINDOWS.get(window or DEFAULT_WINDOW, WINDOWS[DEFAULT_WINDOW])
            state = drawn_state(history.snapshot(since=history.now() - window_s), window or DEFAULT_WINDOW)
            if drawn is not None and tuple(drawn) == state:
                return gr.skip(), gr.skip(), gr.skip()
        return self.render(window)

    def wire(self, system_tab: gr.Tab, other_tabs: list[gr.Tab]) -> None:
        """Live while the System tab is open: drawn on select, refreshed by the timer, paused elsewhere."""
        outputs = [self.plot, self.failures, self.drawn]
        system_tab.select(self.render, [self.window], outputs, api_name=False).then(
            lambda: gr.Timer(active=True), None, [self.timer], api_name=False, queue=False
        )
        for tab in other_tabs:
            tab.select(lambda: gr.Timer(active=False), None, [self.timer], api_name=False, queue=False)
        self.timer.tick(self.refresh, [self.window, self.drawn], outputs, api_name=False, show_progress="hidden")
        self.window.change(self.render, [self.window], outputs, api_name=False)


def open_linked_job(
    follow: Callable[[str, Any], AsyncIterator[tuple[Any, ...]]], outputs_count: int
) -> Callable[..., AsyncIterator[tuple[Any, ...]]]:
    """A page-load handler: ``?job=ID`` in the address opens that job in the panel (links from the chart)."""

    async def handler(request: gr.Request, progress: gr.Progress = gr.Progress()) -> AsyncIterator[tuple[Any, ...]]:
        job_id = (request.query_params.get("job") or "").strip() if request is not None else ""
        if not job_id:
            yield tuple(gr.skip() for _ in range(outputs_count))
            return
        async for update in follow(job_id, progress):
            yield update

    return handler
