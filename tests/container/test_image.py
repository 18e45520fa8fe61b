"""The image as users run it: a container with a memory limit, a token, a data volume.

One container (3 GB, no swap) serves the module in order: it starts healthy, runs a job through
its published port, survives a job the kernel's OOM killer ends (the job says out_of_memory and
names the limit; the container stays up and healthy; its memory comes back), and a `docker stop`
hands a running job back to the queue for the restarted container.
"""

from __future__ import annotations

import secrets
import subprocess
import time

import httpx

from steadyframe.testing.container import Container

from .conftest import IMAGE

# Beyond the 3 GB limit whatever the server and worker already hold: only the kernel can end it.
BALLAST_MB = 4096
# The worker the kernel killed is replaced by a fresh one (no model loaded yet); allocator noise,
# the restarted worker's import and a probe's python process stay well inside this.
MEMORY_TOLERANCE_MB = 250
# Tiny model, 96 steps: long enough to be caught running, short enough to finish after a restart.
LONG_JOB = {"prompt": "a slow pan over hills", "steps": 96, "num_frames": 9}


def test_the_container_starts_healthy_and_asks_for_the_token_it_read_from_its_secret_file(
    container: Container,
) -> None:
    assert container.health() == "healthy" and container.running()
    assert httpx.get(f"{container.url}/healthz", timeout=10).text == "ok"  # probes need no token
    assert httpx.get(f"{container.url}/v1/jobs", timeout=10).status_code == 401
    with container.client(token="wrong") as http:
        assert http.get("/v1/jobs").status_code == 401
    inspected = container.inspect()
    assert inspected["Config"]["User"] == "steadyframe"
    assert set(inspected["Config"]["Volumes"]) == {"/data", "/models", "/hf-cache"}


def test_a_job_succeeds_through_the_published_port(container: Container) -> None:
    job = container.wait_job(container.submit(prompt="a red fox in snow", steps=2, seed=7))
    assert job["status"] == "succeeded", job
    with container.client() as http:
        video = http.get(f"/v1/jobs/{job['id']}/video")
    assert video.status_code == 200 and len(video.content) > 1000


def test_a_job_beyond_the_memory_limit_is_killed_by_the_kernel_and_reported_as_out_of_memory(
    container: Container,
) -> None:
    idle = container.memory()
    assert idle.limit_mb is not None and abs(idle.limit_mb - 3072) < 1
    job_id = container.submit(
        prompt="too much", steps=4, fault={"stage": "denoise", "kind": "error", "at_step": 1, "ballast_mb": BALLAST_MB}
    )
    job = container.wait_job(job_id)
    after_kill = container.memory()
    assert after_kill.oom_kills == idle.oom_kills + 1, "the kernel's OOM killer did not strike"
    assert job["status"] == "failed" and job["attempt"] == 0, job  # not rerun into the same wall
    error = job["error"]
    assert error["kind"] == "out_of_memory" and error["stage"] == "denoise"
    assert "out-of-memory killer" in error["message"] and "3.0 GiB" in error["message"]
    assert "3.0 GiB" in error["advice"] and "--memory" in error["advice"]
    # The server was spared: the same container, never restarted, healthy again with a new worker.
    assert container.running() and container.restart_count() == 0
    container.wait_healthy(timeout=240)
    _wait_for(lambda: container.memory().anon_mb <= idle.anon_mb + MEMORY_TOLERANCE_MB, "memory back near idle", 60)
    settled = container.memory()
    assert settled.swap_mb == 0 and after_kill.peak_mb >= 0.9 * 3072
    assert "worker killed by the kernel's OOM killer; job failed" in container.logs()
    # The next job runs.
    assert container.wait_job(container.submit(prompt="fits again", steps=2))["status"] == "succeeded"


def test_docker_stop_returns_a_running_job_to_the_queue_and_the_restarted_container_runs_it(
    container: Container,
) -> None:
    job_id = container.submit(**LONG_JOB)
    container.wait_job(job_id, until=lambda job: job["status"] == "running" and job["progress"]["step"] >= 2)
    took = container.stop(timeout_s=30)
    state = container.inspect()["State"]
    # Ended by its own SIGTERM handling (uvicorn re-raises the signal after a graceful shutdown:
    # 143), well before docker's SIGKILL (137) at 30 s.
    assert not state["Running"] and state["ExitCode"] in (0, 143) and took < 30, (state, took)
    assert f"job {job_id} left queued" in container.logs()
    container.start_again()
    container.wait_healthy()
    job = container.wait_job(job_id)
    assert job["status"] == "succeeded" and job["attempt"] == 0, job  # a stop spends no attempt


def test_without_a_token_the_container_refuses_to_listen_and_says_why() -> None:
    done = subprocess.run(["docker", "run", "--rm", IMAGE], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "without an API token" in done.stderr and "STEADYFRAME_API_TOKEN" in done.stderr, done.stderr


def _wait_for(predicate, what: str, timeout: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1)


def test_the_opt_out_of_the_token_is_loud() -> None:
    name = f"steadyframe-optout-{secrets.token_hex(4)}"
    subprocess.run(
        ["docker", "run", "-d", "--name", name, "-e", "STEADYFRAME_ALLOW_UNAUTHENTICATED_REMOTE=1", IMAGE],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        logs = ""
        deadline = time.monotonic() + 60
        while "WARNING: no API token" not in logs and time.monotonic() < deadline:
            time.sleep(0.5)
            done = subprocess.run(["docker", "logs", name], capture_output=True, text=True, timeout=60)
            logs = done.stdout + done.stderr
        assert "WARNING: no API token" in logs and "anyone who can reach port 7860" in logs, logs[-2000:]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=120)
