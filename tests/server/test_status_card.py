"""The job panel's HTML: what a person reads about one job (no server needed)."""

from __future__ import annotations

from steadyframe.jobs.base import JobError, JobRecord, JobStatus
from steadyframe.server.ui_handlers import status_card

RESULT = {"frames": 9, "width": 96, "height": 64, "duration_s": 1.1, "fps": 8.0, "seed": 7, "test_noise": True}


def test_a_job_recovered_from_out_of_memory_says_how() -> None:
    record = JobRecord("abc", JobStatus.SUCCEEDED, {}, result={**RESULT, "memory_level": 1})
    html = status_card(record, None)  # type: ignore[arg-type]
    assert "Recovered from out-of-memory by VAE slicing and tiling" in html
    assert "test noise" in html


def test_a_job_at_the_normal_level_mentions_no_recovery() -> None:
    html = status_card(JobRecord("abc", JobStatus.SUCCEEDED, {}, result={**RESULT, "memory_level": 0}), None)  # type: ignore[arg-type]
    assert "Recovered" not in html


def test_error_text_is_escaped_not_rendered() -> None:
    error = JobError("invalid_input", "<img src=x onerror=alert(1)>", "<b>advice</b>", "err-1234567890")
    html = status_card(JobRecord("abc", JobStatus.FAILED, {}, error=error), None)  # type: ignore[arg-type]
    assert "<img" not in html and "&lt;img src=x" in html and "&lt;b&gt;advice" in html
    assert "err-1234567890" in html
