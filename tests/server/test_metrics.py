"""/metrics is valid Prometheus text (checked by promtool) and reflects jobs and workers."""

from __future__ import annotations

import shutil
import subprocess
from typing import TYPE_CHECKING

import pytest
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import LiveServer


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.slow
def test_metrics_pass_promtool_and_count_jobs_workers_and_stages(live_server: LiveServer) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run `make system-test-deps` (Debian package prometheus)"
    done = live_server.submit(prompt="metrics ok", steps=1)
    failed = live_server.submit(prompt="metrics fail", steps=1, fault={"stage": "decode", "kind": "error"})
    live_server.wait_for(done)
    live_server.wait_for(failed)
    with live_server.client() as http:
        text = http.get("/metrics").text
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr

    samples = _samples(text)
    assert samples[("steadyframe_ready", ())] == 1.0
    assert samples[("steadyframe_jobs", (("status", "succeeded"),))] >= 1
    assert samples[("steadyframe_jobs_failed", (("kind", "internal"),))] >= 1
    assert ("steadyframe_queue_depth", ()) in samples
    assert samples[("steadyframe_stage_duration_seconds_count", (("stage", "denoise"),))] >= 1
    assert samples[("steadyframe_stage_duration_seconds_sum", (("stage", "denoise"),))] > 0
    assert samples[("steadyframe_process_rss_bytes", (("process", "server"), ("role", "server")))] > 0
    worker_rss = [
        v
        for (name, labels), v in samples.items()
        if name == "steadyframe_process_rss_bytes" and ("role", "worker") in labels
    ]
    assert worker_rss and all(v > 0 for v in worker_rss)
    assert any(name == "steadyframe_workers" for name, _ in samples)
    info = [dict(labels) for (name, labels), v in samples.items() if name == "steadyframe_worker_info" and v == 1]
    assert info and all(i["node"] and i["device"] == "cpu" and i["state"] in ("idle", "busy") for i in info)
