"""JSON-lines logging: every line is one object; a failure line holds its error id and traceback."""

from __future__ import annotations

import json
from pathlib import Path

from steadyframe.logs import find_error, get_logger, log_failure, log_path, setup_logging


def test_failure_lines_are_json_with_error_id_and_traceback(tmp_path: Path) -> None:
    setup_logging(tmp_path, process_name="logtest", to_stderr=False)
    setup_logging(tmp_path, process_name="logtest", to_stderr=False)  # idempotent: no double lines
    log = get_logger("test")
    log.info("plain line", extra={"job_id": "j1", "stage": "denoise"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("with exc_info", extra={"job_id": "j1", "error_id": "err-aaa"})
    log_failure(log, "job failed", job_id="j2", error_id="err-bbb", kind="internal", stage="decode",
                traceback="Traceback (most recent call last):\n  ...\nValueError: x")  # fmt: skip
    for handler in log.parent.handlers:  # type: ignore[union-attr]
        handler.flush()
    lines = [json.loads(raw) for raw in log_path(tmp_path, "logtest").read_text().splitlines()]
    plain = [line for line in lines if line["message"] == "plain line"]
    assert len(plain) == 1
    assert plain[0]["job_id"] == "j1" and plain[0]["stage"] == "denoise" and plain[0]["level"] == "INFO"
    assert {"time", "level", "message", "process", "pid"} <= set(plain[0])
    (auto,) = find_error(tmp_path, "err-aaa")
    assert "ValueError: boom" in auto["traceback"]
    (explicit,) = find_error(tmp_path, "err-bbb")
    assert explicit["kind"] == "internal" and explicit["stage"] == "decode" and explicit["level"] == "ERROR"
    assert explicit["traceback"].startswith("Traceback")
