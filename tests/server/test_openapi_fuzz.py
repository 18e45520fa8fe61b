"""Schemathesis against the live server's own /openapi.json: no 5xx, and every response fits the schema.

Bounded (a few dozen derandomized examples per route, no shrinking) so it stays well under a minute
and a half on a busy 2-core box. Valid generated jobs are cancelled at the end so later tests find an
empty queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

if TYPE_CHECKING:  # fixtures arrive by name; the import is for readers and type checkers only
    from conftest import LiveServer

pytestmark = pytest.mark.slow

EXAMPLES_PER_ROUTE = 25
CHECKS = [not_a_server_error, response_schema_conformance]


def fuzz(base_url: str, *, examples: int = EXAMPLES_PER_ROUTE, headers: dict[str, str] | None = None) -> list[str]:
    """Run every operation of ``base_url``'s schema; -> one line per operation that failed a check."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time, the first failure is enough
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            case.call_and_validate(checks=CHECKS, headers=headers, timeout=30)

        try:
            run()
        except Exception as exc:  # a failed check: collect it, keep fuzzing the other routes
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    return failures


def test_every_route_answers_within_its_schema_and_never_5xx(live_server: LiveServer) -> None:
    try:
        failures = fuzz(live_server.url)
    finally:
        with live_server.client() as http:  # the fuzzer may have queued real jobs: leave nothing behind
            for status in ("queued", "running"):
                for job in http.get("/v1/jobs", params={"status": status, "limit": 500}).json()["jobs"]:
                    http.post(f"/v1/jobs/{job['id']}/cancel")
    assert not failures, "\n\n".join(failures)
