"""Finished work is never thrown away: stage checkpoints, stage-local out-of-memory recovery, one
loaded copy of a folder's weights, and models that outlive a cancel (tiny model, real engine)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from steadyframe.job_files import checkpoints_dir
from steadyframe.testing.tiny_weights import save_realesrgan_x2plus

from .conftest import Harness, make_settings

ENGINE = "steadyframe.engine:run_job"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Harness, dict[str, Any]]]:
    data_dir = tmp_path_factory.mktemp("checkpoints")
    harness = Harness(make_settings(data_dir, max_attempts=2, stall_timeout_s=15.0), ENGINE).start()
    spec = {
        "prompt": "a red ball rolling",
        "steps": 3,
        "seed": 7,
        "upscale": 2,
        "upscale_model": str(save_realesrgan_x2plus(data_dir / "RealESRGAN_x2plus.pth")),
    }
    warm = harness.run(spec)
    assert warm.status == "succeeded", warm.error
    yield harness, spec
    harness.stop()


def _frames(path: str) -> np.ndarray:
    with av.open(path) as container:
        return np.stack([frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)])


def _worker_log_lines(harness: Harness, start: str) -> list[dict[str, Any]]:
    lines = []
    for path in sorted(harness.settings.logs_dir.glob("*.log*")):
        for raw in path.read_text(errors="replace").splitlines():
            if start in raw:
                line = json.loads(raw)
                if str(line.get("message", "")).startswith(start):
                    lines.append(line)
    return lines


def test_a_worker_killed_in_upscale_resumes_after_decode_with_the_same_frames(
    engine: tuple[Harness, dict[str, Any]],
) -> None:
    harness, spec = engine
    reference = harness.run(spec)
    assert reference.status == "succeeded" and reference.result is not None
    pid = harness.wait_ready()

    crash = {"stage": "upscale", "kind": "crash", "only_at_attempt": 0}
    record = harness.run({**spec, "fault": crash})

    assert record.status == "succeeded", record.error
    assert record.attempt == 1 and harness.wait_ready(not_pid=pid) != pid  # it died once, then resumed
    result = record.result
    assert result is not None and result["resumed_from"] == "decode"
    assert "denoise" not in result["timings"] and "encode_prompt" not in result["timings"], result["timings"]
    assert "upscale" in result["timings"]
    assert np.array_equal(_frames(result["video_path"]), _frames(reference.result["video_path"]))
    assert not checkpoints_dir(harness.settings.outputs_dir / record.id).exists()  # gone with the job


def test_an_oom_in_upscale_recovers_with_smaller_tiles_without_rerunning_denoise(
    engine: tuple[Harness, dict[str, Any]],
) -> None:
    harness, spec = engine
    harness.wait_ready()
    record = harness.run({**spec, "fault": {"stage": "upscale", "kind": "oom", "ballast_mb": 50}})
    assert record.status == "succeeded", record.error
    result = record.result
    assert result is not None and result["memory_level"] == 0 and result["resumed_from"] is None
    assert result["stage_recoveries"]["upscale"].endswith("-px tiles")
    assert record.attempt == 0


def test_a_failure_that_ends_the_job_removes_its_checkpoints(engine: tuple[Harness, dict[str, Any]]) -> None:
    harness, spec = engine
    harness.wait_ready()
    record = harness.run({**spec, "fault": {"stage": "encode_video", "kind": "error"}})
    assert record.status == "failed" and record.error is not None and record.error.kind == "internal"
    assert not (harness.settings.outputs_dir / record.id).exists()


def test_t2v_then_v2v_on_one_folder_load_the_weights_once(
    engine: tuple[Harness, dict[str, Any]], tmp_path: Path
) -> None:
    from steadyframe.video_io import write_mp4

    harness, spec = engine
    harness.wait_ready()
    source = write_mp4(np.full((9, 64, 96, 3), 120, dtype=np.uint8), tmp_path / "in.mp4", fps=8)
    t2v = harness.run({"prompt": "a boat", "steps": 2})
    after_t2v = len(_worker_log_lines(harness, "loaded model pipeline:"))
    v2v = harness.run({"prompt": "a boat", "steps": 2, "mode": "v2v", "video_path": str(source)})
    assert (t2v.status, v2v.status) == ("succeeded", "succeeded"), (t2v.error, v2v.error)
    assert len(_worker_log_lines(harness, "loaded model pipeline:")) == after_t2v  # v2v loaded nothing
    loaded = [m for w in harness.dispatcher.workers() for m in w.loaded_models if m.startswith("pipeline:")]
    assert len(loaded) == 1, loaded


def test_a_cancelled_or_invalid_job_leaves_the_model_loaded(engine: tuple[Harness, dict[str, Any]]) -> None:
    harness, spec = engine
    harness.wait_ready()
    job_id = harness.submit({**spec, "steps": 40, "upscale": 1})
    harness.wait_status(job_id, "running")
    deadline = time.monotonic() + 120
    while (harness.store.get(job_id).progress.stage or "") != "denoise":  # type: ignore[union-attr]
        assert time.monotonic() < deadline, harness.store.get(job_id)
        time.sleep(0.02)
    harness.store.request_cancel(job_id)
    harness.dispatcher.wake()
    record = harness.wait_terminal(job_id)
    assert record.status == "cancelled"
    harness.wait_ready()
    loaded = [m for w in harness.dispatcher.workers() for m in w.loaded_models if m.startswith("pipeline:")]
    assert loaded, harness.dispatcher.workers()

    bad = harness.run({"prompt": "a kite", "steps": 2, "num_frames": 5})  # not 8N+1: refused in the worker
    assert bad.status == "failed" and bad.error is not None and bad.error.kind == "invalid_input"
    harness.wait_ready()
    still = [m for w in harness.dispatcher.workers() for m in w.loaded_models if m.startswith("pipeline:")]
    assert still == loaded  # a bad input says nothing about the loaded model


def test_the_next_job_of_the_same_shape_starts_at_the_learned_memory_level(
    engine: tuple[Harness, dict[str, Any]],
) -> None:
    harness, _ = engine
    harness.wait_ready()
    shape = {"prompt": "a kite", "steps": 2, "num_frames": 17}  # a shape no other test here uses
    first = harness.run({**shape, "fault": {"stage": "denoise", "kind": "oom", "only_at_level": 0}})
    assert first.status == "succeeded" and first.result is not None, first.error
    assert first.result["memory_level"] == 1 and not first.result.get("learned_start_level")

    second = harness.run({**shape, "prompt": "another kite"})

    assert second.status == "succeeded" and second.result is not None, second.error
    assert second.result["learned_start_level"] == 1 and second.result["memory_level"] == 1
    other = harness.run({"prompt": "a kite", "steps": 2, "num_frames": 9})  # another shape: from level 0
    assert other.result is not None and other.result["memory_level"] == 0
