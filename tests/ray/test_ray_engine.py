"""The real engine on Ray actors: t2v, i2v and v2v with upscaling and interpolation through the
REST API give the same frames as the local pool; the fault matrix's crash, hang and device_error
cells hold on the Ray pool too.

Each node has its own data folder: it builds its own tiny model and finds the post-processing
weights in its own models folder (named, not a path), and the uploads reach it as bytes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.logs import find_error, setup_logging
from steadyframe.server.app import create_app
from steadyframe.stages import Stage
from steadyframe.supervisor import Dispatcher
from steadyframe.supervisor.local import LocalProcessPool
from steadyframe.supervisor.pool import WorkerSlot
from steadyframe.testing.tiny_weights import save_practical_rife_v4, save_realesrgan_x2plus

from .conftest import ENGINE, LocalCluster, RayHarness, ray_settings

LOOPBACK_URL = "http://127.0.0.1"  # the Host the request guard answers to (TestClient's default is "testserver")

POST = {"upscale": 2, "interpolate": 2}  # weights: the models folder's RealESRGAN_x2plus.pth and flownet.pkl
SPECS = {
    "t2v": {"mode": "t2v", "prompt": "a red ball rolling", "steps": 2, "seed": 7, **POST},
    "i2v": {"mode": "i2v", "prompt": "the gradient wakes up", "steps": 2, "seed": 8, **POST},
    "v2v": {"mode": "v2v", "prompt": "make it winter", "steps": 4, "strength": 0.5, "seed": 9, **POST},
}
# kind -> (error kind, text expected in the logged traceback)
FAULTS = {"crash": ("worker_lost", "Segmentation fault"), "hang": ("timeout", "faults.py"), "device_error": ("device_error", "illegal memory access")}


def _post_weights(models_dir: Path) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    save_realesrgan_x2plus(models_dir / "RealESRGAN_x2plus.pth")
    save_practical_rife_v4(models_dir / "flownet.pkl")


def _gradient(width: int, height: int, shift: int) -> np.ndarray:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    rgb = np.concatenate([(x + shift) % 256 + 0 * y, (y + 2 * shift) % 256 + 0 * x, (x + y) / 2 + 0 * x], axis=2)
    return rgb.astype(np.uint8)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    Image.fromarray(_gradient(96, 64, 0)).save(folder / "input.png")
    with av.open(str(folder / "input.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        for index in range(12):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(_gradient(96, 64, index * 10), format="rgb24")))
        container.mux(stream.encode())
    return {"image": folder / "input.png", "video": folder / "input.mp4"}


@pytest.fixture(scope="module")
def ray_engine(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHarness]:
    for node_dir in cluster.node_dirs:
        _post_weights(node_dir / "models")  # each node's own copy, found by name
    # 15 s without progress = hung: a normal tiny job's longest quiet gap is about 1 s on an idle machine.
    settings = ray_settings(tmp_path_factory.mktemp("ray-server"), max_attempts=1, stall_timeout_s=15.0)
    _post_weights(settings.resolved_models_dir)  # the server checks names at submit
    harness = RayHarness(settings, ENGINE).start(workers=2)
    harness.node_dirs = cluster.node_dirs  # type: ignore[attr-defined]
    yield harness
    harness.stop()


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _gif_frames(path: Path) -> list[np.ndarray]:
    frames = []
    with Image.open(path) as gif:
        for index in range(getattr(gif, "n_frames", 1)):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("RGB")))
    return frames


def _run_through_api(client: TestClient, media: dict[str, Path]) -> dict[str, dict[str, Any]]:
    uploads = {}
    for kind, path in media.items():
        with path.open("rb") as handle:
            response = client.post("/v1/uploads", files={"file": (path.name, handle)})
        assert response.status_code == 201, response.text
        uploads[kind] = response.json()["id"]
    ids = {}
    for name, spec in SPECS.items():
        body = dict(spec)
        if name == "i2v":
            body["image_upload"] = uploads["image"]
        if name == "v2v":
            body["video_upload"] = uploads["video"]
        response = client.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        ids[name] = response.json()["id"]
    jobs = {}
    deadline = time.monotonic() + 400
    for name, job_id in ids.items():
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "succeeded", job
        video = client.get(f"/v1/jobs/{job_id}/video")
        gif = client.get(f"/v1/jobs/{job_id}/gif")
        assert video.status_code == 200 and gif.status_code == 200
        jobs[name] = {"job": job, "video": video.content, "gif": gif.content}
    return jobs


def _sidecars(store: SqliteJobStore, jobs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each job's sidecar (in the server's data folder) without what differs run to run."""
    out = {}
    for name, job in jobs.items():
        record = store.get(job["job"]["id"])
        assert record is not None and record.result is not None
        sidecar = json.loads(Path(record.result["sidecar_path"]).read_text())
        out[name] = {k: v for k, v in sidecar.items() if k not in ("timings", "created_at", "memory_profile")}
    return out


SAME_OUTPUT_DB = 30.0


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))


def _outcome(jobs: dict[str, dict[str, Any]], folder: Path) -> dict[str, Any]:
    """Decoded MP4 and GIF frames plus the sidecar without its timings, per mode."""
    out = {}
    for name, job in jobs.items():
        (folder / f"{name}.mp4").write_bytes(job["video"])
        (folder / f"{name}.gif").write_bytes(job["gif"])
        result = job["job"]["result"]
        out[name] = {
            "frames": _decoded(folder / f"{name}.mp4"),
            "gif": _gif_frames(folder / f"{name}.gif"),
            "facts": {k: result[k] for k in ("seed", "frames", "fps", "width", "height", "duration_s", "memory_level")},
        }
    return out


def test_t2v_i2v_v2v_with_post_stages_through_the_api_match_the_local_pool(
    ray_engine: RayHarness, media: dict[str, Path], tmp_path: Path
) -> None:
    app = create_app(ray_engine.settings, store=ray_engine.store, dispatcher=ray_engine.dispatcher)
    with TestClient(app, base_url=LOOPBACK_URL) as client:
        on_ray = _run_through_api(client, media)
        system = client.get("/v1/system").json()
    ray_sidecars = _sidecars(ray_engine.store, on_ray)
    workers = [p for p in system["processes"] if p["role"] == "worker"]
    assert len(workers) == 2 and len({w["node"] for w in workers}) == 2 and all(w["device"] == "cpu" for w in workers)
    # The same jobs through the local pool, in a data folder of their own.
    local_settings = ray_settings(tmp_path / "local", max_attempts=1)
    _post_weights(local_settings.resolved_models_dir)
    store = SqliteJobStore(local_settings.jobs_db)
    dispatcher = Dispatcher(local_settings, store, pool=LocalProcessPool(local_settings, [WorkerSlot("w0")], runner=ENGINE))
    local_app = create_app(local_settings, store=store, dispatcher=dispatcher)
    dispatcher.start()
    try:
        with TestClient(local_app, base_url=LOOPBACK_URL) as client:
            on_local = _run_through_api(client, media)
        local_sidecars = _sidecars(store, on_local)
    finally:
        dispatcher.stop(timeout=15)
        store.close()
        # Logging is per process: point the server log back at the Ray dispatcher's data folder.
        setup_logging(ray_engine.settings.logs_dir, process_name="server", level="INFO", to_stderr=True)
    (tmp_path / "r").mkdir()
    (tmp_path / "l").mkdir()
    ray_out, local_out = _outcome(on_ray, tmp_path / "r"), _outcome(on_local, tmp_path / "l")
    for name in SPECS:
        assert ray_out[name]["facts"] == local_out[name]["facts"]
        assert ray_out[name]["facts"]["frames"] == 17 and ray_out[name]["facts"]["width"] == 192
        # Equal, or all but equal: a job with post stages on two CPU threads gave another MP4 in 1
        # of 7 runs here, run in-process by the engine alone (cause not found); a different
        # seed, model or stage would be far below this bound (random content: about 10 dB).
        assert _psnr(ray_out[name]["frames"], local_out[name]["frames"]) > SAME_OUTPUT_DB, name
        assert len(ray_out[name]["gif"]) == len(local_out[name]["gif"])
        assert all(_psnr(a, b) > SAME_OUTPUT_DB for a, b in zip(ray_out[name]["gif"], local_out[name]["gif"])), name
        assert ray_sidecars[name] == local_sidecars[name], name
    assert ray_sidecars["i2v"]["settings"]["image"] == local_sidecars["i2v"]["settings"]["image"]  # same name on the node


@pytest.mark.parametrize("kind", list(FAULTS))
def test_fault_matrix_cells_on_the_ray_pool(ray_engine: RayHarness, kind: str) -> None:
    """Every stage with this fault kind: each job fails with its kind, stage, message, advice and a
    logged traceback; its actor is replaced; then a normal job succeeds. Both workers share the cells."""
    harness = ray_engine
    error_kind, fragment = FAULTS[kind]
    pids = {w.pid for w in harness.wait_idle(2)}
    spec = {"prompt": "a red ball rolling", "steps": 2, **POST}
    ids = {stage: harness.submit({**spec, "fault": {"stage": stage.value, "kind": kind, "ballast_mb": 50}}) for stage in Stage}
    for stage, job_id in ids.items():
        record = harness.wait_terminal(job_id, timeout=600)
        assert record.status == "failed" and record.error is not None, (stage, record)
        assert (record.error.kind, record.error.stage) == (error_kind, stage.value), (stage, record.error)
        assert record.error.message and record.error.advice and "/" not in record.error.message
        lines = find_error(harness.settings.logs_dir, record.error.error_id)
        assert any(fragment in (line.get("traceback") or "") for line in lines), (stage, lines)
    deadline = time.monotonic() + 60  # a dead actor's scratch is removed by a task on its node
    cluster_dirs = [Path(p) for p in harness.node_dirs]
    while time.monotonic() < deadline and any((d / "outputs" / i).exists() for d in cluster_dirs for i in ids.values()):
        time.sleep(0.5)
    assert not any((d / sub / i).exists() for d in cluster_dirs for sub in ("outputs", "ray-inputs") for i in ids.values())
    if kind == "crash":
        assert all("SIGSEGV" in harness.store.get(i).error.message for i in ids.values())  # type: ignore[union-attr]
    fresh = harness.wait_idle(2, not_pids=pids)
    assert not pids & {w.pid for w in fresh}  # every actor was replaced
    assert harness.run({"prompt": "the next job", "steps": 1}).status == "succeeded"
