"""The submit-time resource estimate: how its numbers scale, the machine's capacity (fake cgroup
trees), the 422 refusal with numbers and advice, and where the API and the UI show it.
In process, no model is loaded."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import pytest
from fastapi.testclient import TestClient

from steadyframe.capacity import Capacity, Figure, device_type, host_ram_bytes, machine_capacity
from steadyframe.estimate import JobShape, disk_bytes, estimate_shape, fit_problem, levels_for, pipeline_weights
from steadyframe.families import FAMILIES
from steadyframe.jobs.base import JobRecord, JobStatus
from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.server.app import create_app
from steadyframe.server.context import ServerContext
from steadyframe.server.ui_handlers import DEFAULT_MODEL, OutputStaging, UIHandlers, status_card
from steadyframe.settings import Settings

LOOPBACK_URL = "http://127.0.0.1"
GIB = 1024**3
MB = 2**20


def _estimate(name: str, device: str = "cuda", **sizes: Any):
    family = FAMILIES[name]
    fields = {"frames": family.default_frames, "width": family.default_width, "height": family.default_height, **sizes}
    shape = JobShape(family, **fields)
    return estimate_shape(shape, pipeline_weights(family, None, device), device, levels_for(device, 5))  # type: ignore[arg-type]


# --- the numbers -----------------------------------------------------------------------------


def test_disk_is_the_two_largest_stage_files_growing_with_frames_upscale_squared_and_interpolate() -> None:
    family = FAMILIES["CogVideoX1.5-5b"]
    for frames, upscale, interpolate in ((17, 2, 2), (33, 2, 2), (33, 4, 2), (33, 4, 4)):
        shape = JobShape(family, frames, 768, 768, upscale, interpolate)
        upscaled = frames * 768 * 768 * 3 * upscale**2
        interpolated = ((frames - 1) * interpolate + 1) * 768 * 768 * 3 * upscale**2
        # upscale.npy and interpolate.npy side by side, and the latents (a few % of that) on top
        assert upscaled + interpolated < disk_bytes(shape) < 1.05 * (upscaled + interpolated)
    plain = JobShape(family, 33, 768, 768)
    decoded = 33 * 768 * 768 * 3
    assert decoded * 1.02 < disk_bytes(plain) < decoded * 1.2  # the frames, the MP4 (1/50), the GIF, the latents


def test_ram_after_decode_does_not_grow_with_the_interpolation_factor_but_disk_does() -> None:
    for name, device in (("CogVideoX-5b", "cuda"), ("tiny-t2v", "cpu")):
        two, four = _estimate(name, device, interpolate=2), _estimate(name, device, interpolate=4)
        assert [(e.ram_mb, e.vram_mb) for e in two.levels] == [(e.ram_mb, e.vram_mb) for e in four.levels]
        family = FAMILIES[name]
        extra_frames = (family.default_frames - 1) * 2  # ×4 makes this many more frames than ×2
        extra_mb = extra_frames * family.default_width * family.default_height * 3 / MB
        assert four.disk_mb - two.disk_mb == pytest.approx(extra_mb, rel=0.01, abs=0.1)
    short, longer = _estimate("tiny-t2v", "cpu", frames=9), _estimate("tiny-t2v", "cpu", frames=17)
    assert longer.ram_mb > short.ram_mb  # decode holds the whole clip: the estimate can see frames


def test_levels_lower_vram_from_full_weights_to_one_block_and_keep_weights_in_ram() -> None:
    estimate = _estimate("CogVideoX-5b", "cuda")
    vram = {e.level: e.vram_mb for e in estimate.levels}
    weights_mb = estimate.weights_mb
    assert weights_mb == pytest.approx((5.57e9 + 4.76e9 + 0.215e9) * 2 / MB, rel=1e-3)  # bf16 family figure
    assert vram[0] > weights_mb and vram[0] == vram[1] > vram[2] > vram[3] > vram[4] >= vram[5]
    assert vram[2] < vram[1] - 5.57e9 / MB * 0.99  # fp8: the transformer at one byte a parameter
    assert estimate.level == 5 and estimate.vram_mb == vram[5] < 0.2 * weights_mb
    assert all(e.ram_mb > weights_mb for e in estimate.levels)  # loading passes every weight through RAM
    cpu = _estimate("CogVideoX-5b", "cpu")
    assert [e.level for e in cpu.levels] == [0, 1, 2] and cpu.vram_mb is None


def test_weights_come_from_the_files_at_the_dtype_they_load_in(tmp_path: Path) -> None:
    for component, size in (("transformer", 3 * MB), ("text_encoder", 2 * MB), ("vae", MB)):
        (tmp_path / component).mkdir()
        (tmp_path / component / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * size)
        (tmp_path / component / "config.json").write_text("{}")  # not a weight file
    family = FAMILIES["CogVideoX-2b"]  # float16 files: fp32 on a CPU doubles them
    on_gpu, on_cpu = pipeline_weights(family, tmp_path, "cuda"), pipeline_weights(family, tmp_path, "cpu")
    assert (on_gpu.transformer, on_gpu.text_encoder, on_gpu.vae, on_gpu.source) == (3 * MB, 2 * MB, MB, "files")
    assert on_cpu.pipeline == 2 * on_gpu.pipeline
    assert pipeline_weights(family, tmp_path / "absent", "cuda").transformer == 1_695_000_000 * 2


# --- the machine -----------------------------------------------------------------------------


def _fake_proc(tmp_path: Path, cgroup_line: str) -> Path:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "cgroup").write_text(cgroup_line)
    return proc


def test_host_ram_is_the_cgroup_limit_when_it_is_lower_than_the_machine(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    leaf = v2 / "job.slice"
    leaf.mkdir(parents=True)
    (leaf / "memory.events").write_text("oom_kill 0\n")
    (leaf / "memory.max").write_text(f"{6 * GIB}\n")
    proc = _fake_proc(tmp_path / "a", "0::/job.slice\n")
    assert host_ram_bytes(root=v2, proc=proc, total=16 * GIB) == (6 * GIB, "cgroup")
    assert host_ram_bytes(root=v2, proc=proc, total=4 * GIB) == (4 * GIB, "machine")
    (leaf / "memory.max").write_text("max\n")
    assert host_ram_bytes(root=v2, proc=proc, total=16 * GIB) == (16 * GIB, "machine")

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.oom_control").write_text("oom_kill 0\n")
    (v1 / "memory" / "memory.limit_in_bytes").write_text(str(3 * GIB))
    proc_v1 = _fake_proc(tmp_path / "b", "4:memory:/docker/abc\n")
    assert host_ram_bytes(root=v1, proc=proc_v1, total=16 * GIB) == (3 * GIB, "cgroup")
    assert host_ram_bytes(root=tmp_path / "none", proc=proc_v1, total=16 * GIB) == (16 * GIB, "machine")


def test_capacity_takes_the_lower_of_the_machine_and_the_job_limits(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, device="cuda", job_ram_limit_mb=2048, job_disk_limit_mb=10**9)
    capacity = machine_capacity(
        settings, ram=lambda: (8 * GIB, "machine"), gpu=lambda: 80 * GIB, disk=lambda folder: 5 * GIB
    )
    assert capacity.device_type == "cuda"
    assert capacity.ram == Figure(2048, "setting") and capacity.vram == Figure(80 * 1024, "machine")
    assert capacity.disk == Figure(5 * 1024, "machine")  # a limit above the free space changes nothing
    cpu = machine_capacity(Settings(data_dir=tmp_path, device="cpu"), ram=lambda: (GIB, "cgroup"), gpu=lambda: GIB)
    assert cpu.vram is None and cpu.ram == Figure(1024, "cgroup")
    ray = machine_capacity(Settings(data_dir=tmp_path, ray_address="head:6379", job_ram_limit_mb=500))
    assert ray.ram == Figure(500, "setting") and ray.disk is None  # the workers' machines are not this one
    assert device_type(Settings(device="auto"), gpu_count=lambda: 2) == "cuda"
    assert device_type(Settings(device="auto"), gpu_count=lambda: 0) == "cpu"


def test_a_gpu_job_that_cannot_fit_names_the_level_the_numbers_and_the_knob_that_saves_most() -> None:
    estimate = _estimate("CogVideoX1.5-5b", "cuda", frames=161, upscale=4)
    capacity = Capacity("cuda", Figure(512 * 1024, "machine"), Figure(4 * 1024, "machine"), Figure(10**7, "machine"))
    problem = fit_problem(estimate, capacity)
    assert problem is not None and problem.resource == "vram"
    assert f"about {estimate.vram_mb / 1024:.1f} GB of GPU memory even at memory level 5" in problem.message
    assert "this machine has 4.0 GB" in problem.message
    assert problem.advice.startswith("Try ") and "fewer frames (e.g. 81)" in problem.advice
    roomy = Capacity("cuda", Figure(512 * 1024, "machine"), Figure(80 * 1024, "machine"), Figure(10**7, "machine"))
    assert fit_problem(estimate, roomy) is None
    cpu_only = Capacity("cpu", Figure(512 * 1024, "machine"), None, Figure(10**7, "machine"))
    assert fit_problem(_estimate("CogVideoX1.5-5b", "cpu", frames=161), cpu_only) is None  # no VRAM check on a CPU


# --- the API and the UI ----------------------------------------------------------------------


@contextmanager
def _app(tmp_path: Path, **settings_fields: Any) -> Iterator[tuple[TestClient, SqliteJobStore, Settings]]:
    from steadyframe.supervisor import Dispatcher

    settings = Settings(data_dir=tmp_path / "data", device="cpu", **settings_fields)
    store = SqliteJobStore(settings.jobs_db)
    app = create_app(settings, store=store, dispatcher=Dispatcher(settings, store))  # never started: jobs stay queued
    with TestClient(app, base_url=LOOPBACK_URL) as client:
        yield client, store, settings
    store.close()


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[TestClient, SqliteJobStore, Settings]]:
    with _app(tmp_path) as running:
        yield running


def _post_weights(settings: Settings) -> None:
    """Stand-ins for the upscale/RIFE files: plan_job only checks they exist; nothing loads them."""
    settings.resolved_models_dir.mkdir(parents=True, exist_ok=True)
    (settings.resolved_models_dir / "RealESRGAN_x4plus.pth").write_bytes(b"\0" * 1000)
    (settings.resolved_models_dir / "flownet.pkl").write_bytes(b"\0" * 1000)


def test_the_estimate_is_in_the_accepted_job_its_view_and_the_estimate_endpoint(app) -> None:
    client, store, _ = app
    asked = client.post("/v1/jobs/estimate", json={"prompt": "a fox", "num_frames": 17})
    assert asked.status_code == 200 and store.count(JobStatus.QUEUED) == 0  # asking queues nothing
    estimate = asked.json()
    assert estimate["device"] == "cpu" and estimate["level"] == 2 and estimate["vram_mb"] is None
    assert [row["level"] for row in estimate["levels"]] == [0, 1, 2]
    assert estimate["ram_mb"] > 900 and estimate["disk_mb"] > 0  # the worker's own baseline counts
    accepted = client.post("/v1/jobs", json={"prompt": "a fox", "num_frames": 17})
    assert accepted.status_code == 202 and accepted.json()["estimate"] == estimate
    assert client.get(f"/v1/jobs/{accepted.json()['id']}").json()["estimate"] == estimate
    shorter = client.post("/v1/jobs/estimate", json={"prompt": "a fox", "num_frames": 9}).json()
    assert shorter["disk_mb"] < estimate["disk_mb"]


def test_a_job_over_the_ram_limit_is_refused_with_its_numbers_and_nothing_is_queued(tmp_path: Path) -> None:
    with _app(tmp_path, job_ram_limit_mb=500) as (client, store, _):
        for route in ("/v1/jobs", "/v1/jobs/estimate"):
            refused = client.post(route, json={"prompt": "a fox"})
            assert refused.status_code == 422
            body = refused.json()
            assert "needs about" in body["detail"] and "of RAM even at memory level 2" in body["detail"]
            assert "this server allows a job 500 MB" in body["detail"]
            assert "STEADYFRAME_JOB_RAM_LIMIT_MB" in body["advice"] and body["errors"][0]["type"] == "too_large_ram"
        assert store.list() == []


def test_a_job_over_the_disk_limit_is_refused_naming_the_factors_that_save_most(tmp_path: Path) -> None:
    with _app(tmp_path, job_disk_limit_mb=5) as (client, store, settings):
        _post_weights(settings)
        small = client.post("/v1/jobs", json={"prompt": "a fox", "upscale": 2})
        assert small.status_code == 202  # 9 frames ×2: well under 5 MB
        refused = client.post("/v1/jobs", json={"prompt": "a fox", "upscale": 4, "interpolate": 4})
        assert refused.status_code == 422
        body = refused.json()
        assert "of disk; this server allows a job 5 MB" in body["detail"]
        advice = body["advice"]
        assert "upscale ×2" in advice and "interpolate ×2" in advice
        assert advice.index("upscale ×2") < advice.index("interpolate ×2")  # ×4 → ×2 upscale saves the most
        assert [r.id for r in store.list()] == [small.json()["id"]]


def _handlers(client: TestClient) -> UIHandlers:
    ctx: ServerContext = client.app.state.ctx  # type: ignore[attr-defined]
    return UIHandlers(ctx, OutputStaging())


def test_the_ui_shows_the_estimate_for_the_form_and_the_refusal_like_other_submit_errors(tmp_path: Path) -> None:
    with _app(tmp_path / "roomy") as (client, _, settings):
        handlers = _handlers(client)
        line = handlers.estimate(DEFAULT_MODEL, 0, 1, 1)
        assert line.startswith("Needs about ") and "of RAM" in line and "at memory level 2 (fp8 weight storage)" in line
        assert "GPU memory" not in line  # a CPU worker
        assert "frame count must be" in handlers.estimate(DEFAULT_MODEL, 10, 1, 1)  # bad frames: the family's rule
        record, _ = handlers.ctx.jobs.submit(_ui_request())
        assert "Needs about" in status_card(record, handlers.ctx)  # the queued job's panel
        handlers.staging.cleanup()
    with _app(tmp_path / "tight", job_ram_limit_mb=500) as (client, store, _):
        handlers = _handlers(client)
        assert handlers.estimate(DEFAULT_MODEL, 0, 1, 1).startswith("**Would be refused:** This job needs about")
        with pytest.raises(gr.Error, match="this server allows a job 500 MB"):
            handlers._submit(_ui_request())
        assert store.list() == []
        handlers.staging.cleanup()


def _ui_request() -> Any:
    from steadyframe.server.ui_handlers import build_request

    return build_request("t2v", "a fox", "", DEFAULT_MODEL, "balanced", -1, 0, 0, 0, 1, 1, None)


def test_a_finished_job_panel_leaves_the_estimate_out() -> None:
    estimate = {"ram_mb": 2048.0, "vram_mb": None, "disk_mb": 150.0, "level": 1, "levels": []}
    queued = JobRecord("abc", JobStatus.QUEUED, {}, estimate=estimate)
    assert "Needs about 2.0 GB of RAM, 150 MB of disk at memory level 1." in status_card(queued, None)  # type: ignore[arg-type]
    done = JobRecord("abc", JobStatus.CANCELLED, {}, estimate=estimate)
    assert "Needs about" not in status_card(done, None)  # type: ignore[arg-type]


def test_a_retried_request_gets_its_job_even_when_the_disk_filled_since(tmp_path: Path) -> None:
    from steadyframe.capacity import Capacity, Figure

    with _app(tmp_path) as (client, store, settings):
        key = {"Idempotency-Key": "retry-after-the-disk-filled"}
        first = client.post("/v1/jobs", json={"prompt": "a fox"}, headers=key)
        assert first.status_code == 202
        jobs = client.app.state.ctx.jobs  # type: ignore[attr-defined]
        jobs.capacity = lambda: Capacity("cpu", Figure(64_000, "machine"), None, Figure(0.0, "machine"))
        replayed = client.post("/v1/jobs", json={"prompt": "a fox"}, headers=key)
        assert replayed.status_code == 202 and replayed.json()["id"] == first.json()["id"]
        assert replayed.headers["Idempotent-Replayed"] == "true"
        fresh = client.post("/v1/jobs", json={"prompt": "a fox"}, headers={"Idempotency-Key": "a new one"})
        assert fresh.status_code == 507 and fresh.json()["errors"][0]["type"] == "too_large_disk"
        assert [r.id for r in store.list()] == [first.json()["id"]]
