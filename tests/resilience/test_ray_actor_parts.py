"""The Ray actor's pieces that need no cluster: node settings, input staging, output collection
and the channel's long poll (the cluster itself is in tests/ray)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from steadyframe.settings import Settings
from steadyframe.worker import ray_actor
from steadyframe.worker.messages import Heartbeat, JobDone, MemoryFigures, Progress, RunJob

MEMORY = MemoryFigures(rss_mb=1.0, baseline_rss_mb=1.0)


def test_a_node_keeps_its_own_folders_and_takes_everything_else_from_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = Settings(data_dir=tmp_path / "server", stall_timeout_s=7.0, upscale_model="x4.pth", fault_injection=True)
    monkeypatch.setenv("STEADYFRAME_DATA_DIR", str(tmp_path / "node"))
    monkeypatch.setenv("STEADYFRAME_RIFE_MODEL", "/opt/weights/flownet.pkl")
    here = ray_actor.node_settings(server.model_dump_json())
    assert here.data_dir == tmp_path / "node" and here.resolved_models_dir == tmp_path / "node" / "models"
    assert here.stall_timeout_s == 7.0 and here.fault_injection and here.upscale_model == Path("x4.pth")
    assert here.rife_model == Path("/opt/weights/flownet.pkl")  # this node's environment names its own


def test_inputs_are_written_on_the_node_under_their_name_and_the_spec_points_there(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    message = RunJob("j1", {"mode": "i2v", "prompt": "x", "image_path": "/server/uploads/ab12/cat.png"})
    staged = ray_actor.stage_inputs(message, {"image_path": ("cat.png", b"PNG...")}, settings)
    path = Path(staged.spec["image_path"])
    assert path == tmp_path / "ray-inputs" / "j1" / "cat.png" and path.read_bytes() == b"PNG..."
    assert message.spec["image_path"].startswith("/server")  # the original is untouched
    assert ray_actor.stage_inputs(message, None, settings) is message


def test_a_finished_jobs_files_leave_as_bytes_and_the_node_keeps_nothing(tmp_path: Path) -> None:
    out = tmp_path / "outputs" / "j1"
    out.mkdir(parents=True)
    for name, content in (("video.mp4", b"mp4"), ("preview.gif", b"gif"), ("result.json", b"{}")):
        (out / name).write_bytes(content)
    done = JobDone("j1", {"video_path": str(out / "video.mp4"), "gif_path": str(out / "preview.gif"),
                          "sidecar_path": str(out / "result.json"), "seed": 3}, MEMORY)  # fmt: skip
    shipped = ray_actor.collect_outputs(done)
    assert shipped.files == {
        "video_path": ("video.mp4", b"mp4"), "gif_path": ("preview.gif", b"gif"), "sidecar_path": ("result.json", b"{}"),
    }  # fmt: skip
    assert not out.exists()


def test_the_channel_long_polls_and_keeps_only_the_latest_heartbeat(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ray_actor, "STAGE_HANDOVER_S", 0.05)  # no taker here while sending
    channel = ray_actor.ActorChannel(Settings(data_dir=tmp_path))
    started = time.monotonic()
    assert channel.take(0.2) == [] and time.monotonic() - started >= 0.15  # nothing: waits, then empty
    channel.send(Heartbeat(MEMORY))
    channel.send(Progress("j", "denoise", 1, 2))
    channel.send(Heartbeat(MemoryFigures(rss_mb=2.0, baseline_rss_mb=1.0)))
    taken = channel.take(1.0)
    assert [type(m).__name__ for m in taken] == ["Progress", "Heartbeat"] and taken[1].memory.rss_mb == 2.0
    threading.Timer(0.1, channel.send, args=(Progress("j", "decode", 0, 1),)).start()
    assert [m.stage for m in channel.take(5.0)] == ["decode"]  # wakes as soon as something is sent
    channel.deliver("hello")
    assert channel.recv() == "hello"


def test_a_stage_change_returns_only_once_the_pool_has_taken_it(tmp_path: Path) -> None:
    """An actor that dies in a new stage must not take that stage's name with it."""
    channel = ray_actor.ActorChannel(Settings(data_dir=tmp_path))
    taken: list[object] = []
    taker = threading.Timer(0.3, lambda: taken.extend(channel.take(1.0)))
    taker.start()
    started = time.monotonic()
    channel.send(Progress("j", "upscale", 0, 4))
    waited = time.monotonic() - started
    taker.join()
    assert 0.2 <= waited < ray_actor.STAGE_HANDOVER_S and [m.stage for m in taken] == ["upscale"]
    started = time.monotonic()
    channel.send(Progress("j", "upscale", 1, 4))  # the same stage: no wait
    assert time.monotonic() - started < 0.1
