"""``GET /v1/system/history`` on a real server: a normal job and an injected failure, both on the timeline."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = pytest.mark.slow

BALLAST_MB = 256
OOM = {"stage": "denoise", "kind": "oom", "at_step": 1, "ballast_mb": BALLAST_MB}  # fails at every ladder level


def _history(server: LiveServer, **params: Any) -> dict[str, Any]:
    with server.client() as http:
        response = http.get("/v1/system/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _wait_for_sample_after(server: LiveServer, moment: float, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        history = _history(server)
        if any(s["at"] > moment and s["workers"] and s["workers"][0]["rss_mb"] for s in history["samples"]):
            return history
        assert time.monotonic() < deadline, f"no sample after {moment}: {history['samples'][-3:]}"
        time.sleep(0.3)


def test_history_spans_a_normal_job_and_an_injected_failure_with_its_error_id(live_server: LiveServer) -> None:
    ok_id = live_server.submit(prompt="a lighthouse at dusk", steps=2)
    ok = live_server.wait_for(ok_id)
    failed_id = live_server.submit(prompt="this one runs out of memory", steps=2, fault=OOM)
    failed = live_server.wait_for(failed_id)
    assert ok["status"] == "succeeded" and failed["status"] == "failed"
    assert failed["error"]["kind"] == "out_of_memory"
    history = _wait_for_sample_after(live_server, failed["finished_at"])

    samples = history["samples"]
    assert samples == sorted(samples, key=lambda s: s["at"])
    assert samples[0]["at"] <= ok["started_at"] and samples[-1]["at"] >= failed["finished_at"]  # spans both jobs
    assert all(s["server_rss_mb"] > 50 for s in samples)
    worker_rss = [s["workers"][0]["rss_mb"] for s in samples if s["workers"] and s["workers"][0]["rss_mb"]]
    assert worker_rss and min(worker_rss) > 100  # a worker with torch imported
    during = [s for s in samples if ok["started_at"] - 5 <= s["at"] <= failed["finished_at"] + 5]
    assert during, "samples while the jobs ran"

    events = history["events"]
    mine = [e for e in events if e["job_id"] in (ok_id, failed_id)]
    kinds = {(e["job_id"], e["kind"]) for e in mine}
    assert {(ok_id, "job_started"), (ok_id, "job_succeeded"), (failed_id, "job_started"), (failed_id, "job_failed")} <= kinds
    assert {e["stage"] for e in mine if e["kind"] == "job_stage" and e["job_id"] == ok_id} >= {"load", "denoise", "save"}
    failure = next(e for e in mine if e["kind"] == "job_failed")
    assert failure["error_id"] == failed["error"]["error_id"] and failure["error_kind"] == "out_of_memory"
    assert failure["stage"] == "denoise"
    assert events == sorted(events, key=lambda e: e["at"])
    assert any(e["kind"] in ("worker_started", "worker_ready") for e in events)

    peaks = [p for p in history["stage_peaks"] if p["job_id"] == failed_id and p["stage"] == "denoise"]
    assert [p["memory_level"] for p in peaks] == [0, 1, 2]  # the CPU ladder: none, VAE tiling, fp8 storage
    baseline = failed["error"]["memory_profile"]["after_cleanup"]["baseline_rss_mb"]
    assert all(p["peak_rss_mb"] > baseline + BALLAST_MB * 0.8 for p in peaks)  # the ballast lived microseconds
    assert history["sampling"]["cpu_ms_per_minute"] >= 0 and history["interval_s"] > 0

    later = _history(live_server, since=failed["finished_at"])
    assert all(s["at"] >= failed["finished_at"] for s in later["samples"])
    assert all(e["at"] >= failed["finished_at"] for e in later["events"])


def test_each_job_carries_its_memory_profile_in_its_result_sidecar_and_error(live_server: LiveServer) -> None:
    ok_id = live_server.submit(prompt="a quiet harbour", steps=2)
    ok = live_server.wait_for(ok_id)
    profile = ok["result"]["memory_profile"]
    stages = [s["stage"] for s in profile["stages"]]
    assert stages[:4] == ["load", "encode_prompt", "denoise", "decode"] and stages[-1] == "save"
    assert all(s["peak_rss_mb"] > 0 for s in profile["stages"])
    assert profile["peak_rss_mb"] >= profile["after_cleanup"]["rss_mb"] * 0.5
    sidecar = json.loads((live_server.data_dir / "outputs" / ok_id / "result.json").read_text())
    assert sidecar["memory_profile"]["stages"] == profile["stages"]
    assert sidecar["memory_profile"]["after_cleanup"] == profile["after_cleanup"]

    failed_id = live_server.submit(prompt="fails in decode", steps=2, fault={"stage": "decode", "kind": "error"})
    error = live_server.wait_for(failed_id)["error"]
    assert [s["stage"] for s in error["memory_profile"]["stages"]][-1] == "decode"
    assert error["memory_profile"]["after_cleanup"]["rss_mb"] > 0


def test_history_rejects_a_negative_since_and_metrics_keep_their_gauges(live_server: LiveServer) -> None:
    with live_server.client() as http:
        assert http.get("/v1/system/history", params={"since": -1}).status_code == 422
        metrics = http.get("/metrics").text
        schema = http.get("/openapi.json").json()
    assert "steadyframe_process_rss_bytes" in metrics and "steadyframe_vram_reserved_bytes" in metrics
    route = schema["paths"]["/v1/system/history"]["get"]
    assert route["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/HistoryView")
    assert {"samples", "events", "stage_peaks"} <= set(schema["components"]["schemas"]["HistoryView"]["properties"])
