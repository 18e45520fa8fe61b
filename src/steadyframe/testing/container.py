"""One steadyframe container driven through the ``docker`` CLI, for tests/container and
bench/container_oom.py: start it with a memory limit, wait for its healthcheck, read its memory
cgroup from the host, submit jobs through its published port, stop and start it again.

The docker CLI (not a Python SDK) because it is what the tests install anyway and what users type.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from steadyframe import oom_kill

CONTAINER_PORT = 7860
MIB = 1024 * 1024


def docker(*args: str, timeout: float = 120.0, check: bool = True) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


@dataclass
class Memory:
    """The container's memory cgroup as the host sees it, in MiB."""

    usage_mb: float  # everything charged, page cache included
    anon_mb: float  # process memory: what a ballast or a leak grows
    peak_mb: float
    swap_mb: float
    limit_mb: float | None
    oom_kills: int


@dataclass
class Container:
    """A running (or stopped) container of ``image``; ``url`` is its published port on loopback."""

    image: str
    memory_limit: str = "3g"
    env: dict[str, str] = field(default_factory=dict)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    token_file: Path | None = None  # mounted as a secret file when set; else the token goes in the env
    name: str = field(default_factory=lambda: f"steadyframe-test-{secrets.token_hex(4)}")
    volume: str = ""
    health_interval_s: int = 2
    url: str = ""

    def start(self) -> Container:
        self.volume = self.volume or f"{self.name}-data"
        docker("volume", "create", self.volume)
        args = [
            "run", "-d", "--name", self.name,
            "--restart", "unless-stopped",  # as compose.yaml: a server that died would show as a restart
            "--memory", self.memory_limit, "--memory-swap", self.memory_limit,  # no swap: the limit is the limit
            "-p", f"127.0.0.1::{CONTAINER_PORT}",
            "-v", f"{self.volume}:/data",
            f"--health-interval={self.health_interval_s}s",  # the image's check, asked more often than 10 s
            "-e", "STEADYFRAME_FAULT_INJECTION=1",
            "-e", "HF_HUB_OFFLINE=1",
        ]  # fmt: skip
        if self.token_file is not None:
            self.token_file.write_text(self.token + "\n")
            self.token_file.chmod(0o644)
            args += ["-v", f"{self.token_file}:/run/secrets/steadyframe_api_token:ro"]
            args += ["-e", "STEADYFRAME_API_TOKEN_FILE=/run/secrets/steadyframe_api_token"]
        else:
            args += ["-e", f"STEADYFRAME_API_TOKEN={self.token}"]
        for key, value in self.env.items():
            args += ["-e", f"{key}={value}"]
        docker(*args, self.image)
        self._find_port()
        return self

    def _find_port(self) -> None:
        published = docker("port", self.name, f"{CONTAINER_PORT}/tcp").splitlines()[0]  # "127.0.0.1:49153"
        self.url = f"http://{published}"

    def inspect(self) -> dict[str, Any]:
        return json.loads(docker("inspect", self.name))[0]

    def health(self) -> str:
        state = self.inspect()["State"]
        return str(state.get("Health", {}).get("Status", "none"))

    def running(self) -> bool:
        return bool(self.inspect()["State"]["Running"])

    def restart_count(self) -> int:
        return int(self.inspect()["RestartCount"])

    def wait_healthy(self, timeout: float = 300.0) -> float:
        """Wait for Docker's healthcheck to say healthy; -> seconds waited."""
        began = time.monotonic()
        while True:
            state = self.inspect()["State"]
            if not state["Running"]:
                raise AssertionError(f"container {self.name} exited ({state['ExitCode']}):\n{self.logs()[-3000:]}")
            if state.get("Health", {}).get("Status") == "healthy":
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                raise AssertionError(f"container {self.name} not healthy in {timeout} s:\n{self.logs()[-3000:]}")
            time.sleep(0.5)

    def logs(self) -> str:
        done = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return done.stdout + done.stderr

    def memory(self) -> Memory:
        """The container's cgroup, read on the host through its init process."""
        pid = int(self.inspect()["State"]["Pid"])
        cgroup = oom_kill.memory_cgroup(pid)
        if cgroup is None:
            raise RuntimeError(f"no memory cgroup found for container {self.name} (pid {pid})")
        figures = cgroup.figures()

        def mb(value: int | None) -> float:
            return (value or 0) / MIB

        return Memory(
            usage_mb=mb(figures.usage),
            anon_mb=mb(figures.anon),
            peak_mb=mb(figures.peak),
            swap_mb=mb(figures.swap),
            limit_mb=mb(figures.limit) if figures.limit is not None else None,
            oom_kills=figures.oom_kills or 0,
        )

    def client(self, *, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token if token is not None else self.token}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)

    def submit(self, **spec: Any) -> str:
        with self.client() as http:
            response = http.post("/v1/jobs", json=spec)
        if response.status_code != 202:
            raise AssertionError(f"submit answered {response.status_code}: {response.text}")
        return str(response.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        with self.client() as http:
            return dict(http.get(f"/v1/jobs/{job_id}").json())

    def wait_job(self, job_id: str, *, timeout: float = 300.0, until: Any = None) -> dict[str, Any]:
        """Poll until ``until(job)`` (default: a terminal status); -> the job JSON."""
        check = until or (lambda job: job["status"] in ("succeeded", "failed", "cancelled"))
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if check(job):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} did not get there in {timeout} s: {job}\n{self.logs()[-3000:]}")
            time.sleep(0.25)

    def stop(self, timeout_s: int = 30) -> float:
        """``docker stop`` (SIGTERM, then SIGKILL after ``timeout_s``); -> seconds it took."""
        began = time.monotonic()
        docker("stop", "-t", str(timeout_s), self.name, timeout=timeout_s + 60)
        return time.monotonic() - began

    def start_again(self) -> None:
        docker("start", self.name)
        self._find_port()  # a new host port after a restart

    def remove(self) -> None:
        docker("rm", "-f", "-v", self.name, check=False)
        if self.volume:
            docker("volume", "rm", "-f", self.volume, check=False)
