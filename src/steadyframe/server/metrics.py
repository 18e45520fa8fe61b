"""Prometheus metrics, read at scrape time from the job store and the dispatcher.

A custom collector (no counters kept in the server) so the numbers always agree with the store
and survive server restarts: jobs by status come from the table, worker restarts and stage
durations from ``Dispatcher.stats()``, memory from ``Dispatcher.workers()`` and psutil.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator

import psutil
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from steadyframe.jobs.base import JobStatus
from steadyframe.server.context import ServerContext

_MB = 1024 * 1024
# Failed jobs looked at for the error-kind breakdown: bounds the scrape cost on a long history.
FAILED_JOBS_SCANNED = 10_000


class SteadyframeCollector(Collector):
    """Yields every steadyframe metric from a fresh read of ``ctx``."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    def describe(self) -> Iterable[Metric]:
        return []  # unchecked collector: families vary with the workers present

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        yield from self._workers()
        yield from self._dispatcher_stats()

    def _jobs(self) -> Iterator[Metric]:
        store = self.ctx.store
        queue = GaugeMetricFamily("steadyframe_queue_depth", "Jobs waiting for a worker.")
        queue.add_metric([], store.count(JobStatus.QUEUED))
        yield queue
        by_status = GaugeMetricFamily("steadyframe_jobs", "Jobs in the store by status.", labels=["status"])
        for status in JobStatus:
            by_status.add_metric([status.value], store.count(status))
        yield by_status
        failed = store.list(status=JobStatus.FAILED, limit=FAILED_JOBS_SCANNED)
        kinds = Counter(r.error.kind if r.error else "unknown" for r in failed)
        by_kind = GaugeMetricFamily(
            "steadyframe_jobs_failed", "Failed jobs in the store by error kind.", labels=["kind"]
        )
        for kind, count in sorted(kinds.items()):
            by_kind.add_metric([kind], count)
        yield by_kind

    def _workers(self) -> Iterator[Metric]:
        dispatcher = self.ctx.dispatcher
        ready = GaugeMetricFamily("steadyframe_ready", "1 when at least one worker can take a job.")
        ready.add_metric([], 1.0 if dispatcher is not None and dispatcher.is_ready() else 0.0)
        yield ready
        rss = GaugeMetricFamily(
            "steadyframe_process_rss_bytes", "Resident memory per steadyframe process.", labels=["role", "process"]
        )
        rss.add_metric(["server", "server"], psutil.Process(os.getpid()).memory_info().rss)
        states = GaugeMetricFamily("steadyframe_workers", "Worker processes by state.", labels=["state"])
        vram_alloc = GaugeMetricFamily(
            "steadyframe_vram_allocated_bytes", "GPU memory held by tensors, per worker.", labels=["worker"]
        )
        vram_reserved = GaugeMetricFamily(
            "steadyframe_vram_reserved_bytes", "GPU memory reserved by the allocator, per worker.", labels=["worker"]
        )
        jobs_done = CounterMetricFamily(
            "steadyframe_worker_jobs", "Jobs run by the current process of each worker.", labels=["worker"]
        )
        info_metric = GaugeMetricFamily(
            "steadyframe_worker_info",
            "1 per worker: where it runs (node, device) and its state.",
            labels=["worker", "node", "device", "state"],
        )
        state_counts: Counter[str] = Counter()
        for info in dispatcher.workers() if dispatcher is not None else []:
            worker = str(info.id)
            state_counts[str(info.state)] += 1
            node = str(getattr(info, "node", "") or "")
            info_metric.add_metric([worker, node, str(getattr(info, "device", "") or ""), str(info.state)], 1.0)
            if info.pid is not None:  # a worker between processes has no memory to report
                rss.add_metric(["worker", worker], info.rss_mb * _MB)
            if info.vram_allocated_mb is not None:
                vram_alloc.add_metric([worker], info.vram_allocated_mb * _MB)
            if info.vram_reserved_mb is not None:
                vram_reserved.add_metric([worker], info.vram_reserved_mb * _MB)
            jobs_done.add_metric([worker], info.jobs_done or 0)
        for state, count in sorted(state_counts.items()):
            states.add_metric([state], count)
        yield from (rss, states, info_metric, vram_alloc, vram_reserved, jobs_done)

    def _dispatcher_stats(self) -> Iterator[Metric]:
        dispatcher = self.ctx.dispatcher
        stats = dispatcher.stats() if dispatcher is not None else None
        restarts = CounterMetricFamily(
            "steadyframe_worker_restarts", "Worker processes restarted after a death, by reason.", labels=["reason"]
        )
        recycles = CounterMetricFamily(
            "steadyframe_worker_recycles", "Worker processes replaced on purpose, by reason.", labels=["reason"]
        )
        finished = CounterMetricFamily(
            "steadyframe_jobs_finished", "Jobs finished since the server started, by outcome.", labels=["outcome"]
        )
        stages = SummaryMetricFamily(
            "steadyframe_stage_duration_seconds", "Time spent in each job stage.", labels=["stage"]
        )
        oom = CounterMetricFamily(
            "steadyframe_oom_recoveries", "Jobs that succeeded after an out-of-memory retry at a lower memory level."
        )
        if stats is not None:
            for reason, count in sorted(stats.restarts.items()):
                restarts.add_metric([reason], count)
            for reason, count in sorted(stats.recycles.items()):
                recycles.add_metric([reason], count)
            for outcome, count in sorted(stats.jobs_finished.items()):
                finished.add_metric([outcome], count)
            for stage, total in sorted(stats.stage_seconds_sum.items()):
                stages.add_metric([stage], count_value=stats.stage_seconds_count.get(stage, 0), sum_value=total)
            oom.add_metric([], stats.oom_recoveries)
        yield from (restarts, recycles, finished, stages, oom)


def metrics_registry(ctx: ServerContext) -> CollectorRegistry:
    """A registry of its own (not the global one): several apps in one test process never clash."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SteadyframeCollector(ctx))
    return registry


def render_metrics(registry: CollectorRegistry) -> tuple[bytes, str]:
    """(body, content type) in the Prometheus text format."""
    return generate_latest(registry), CONTENT_TYPE_LATEST
