"""``speed`` through the server: fast and fastest jobs run end to end and record their cache."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # fixtures arrive by name
    from conftest import LiveServer


def test_fast_and_fastest_jobs_run_through_the_server_and_record_their_cache(live_server: "LiveServer") -> None:
    expected = {"fast": "pyramid_attention_broadcast", "fastest": "taylorseer", "exact": None}
    jobs = {speed: live_server.submit(prompt="a red fox running through snow", steps=6, seed=9, speed=speed)
            for speed in expected}  # fmt: skip
    for speed, job_id in jobs.items():
        job = live_server.wait_for(job_id)
        assert job["status"] == "succeeded", job
        assert job["spec"]["speed"] == speed
        ran = job["result"]["speed"]
        assert ran["speed"] == speed and ran["cache"] == expected[speed]
        sidecar = json.loads((live_server.data_dir / "outputs" / job_id / "result.json").read_text())
        assert sidecar["speed"] == ran and sidecar["settings"]["speed"] == speed


def test_an_unknown_speed_is_a_422_naming_the_field(live_server: "LiveServer") -> None:
    with live_server.client() as http:
        response = http.post("/v1/jobs", json={"prompt": "a fox", "speed": "warp"})
    assert response.status_code == 422
    assert any("speed" in [str(part) for part in err["loc"]] for err in response.json()["errors"])
