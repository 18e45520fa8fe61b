"""run_job end to end on the tiny models: stages, hooks, outputs, validation order, post stages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import steadyframe.postprocess as postprocess
import steadyframe.postprocess.weights as post_weights
from steadyframe.frame_file import write_frames
from steadyframe.contracts import LoadEachTime
from steadyframe.engine import job as engine_job
from steadyframe.engine import run_job
from steadyframe.engine.loading import locate_weights
from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.families import resolve_model
from steadyframe.spec import JobSpec
from steadyframe.video_io import read_video_facts

BASE_STAGES = ["load", "encode_prompt", "denoise", "decode"]
OUTPUT_STAGES = ["encode_video", "save"]


class Boom(Exception):
    pass


def test_t2v_runs_stages_in_order_and_writes_playable_outputs(settings, keep_loaded, hooks, tmp_path):
    spec = JobSpec(prompt="waves on a beach at sunset", model="tiny-t2v", steps=3, seed=7)
    result = run_job(spec, settings, tmp_path / "out", hooks=hooks, models=keep_loaded)

    assert hooks.stages == BASE_STAGES + OUTPUT_STAGES
    assert hooks.steps("denoise") == [(1, 3), (2, 3), (3, 3)]
    assert hooks.steps("encode_video") == [(i, 9) for i in range(1, 10)]
    facts = read_video_facts(Path(result.video_path))
    assert facts == {"frames": 9, "fps": 8.0, "width": 96, "height": 64, "codec": "h264", "pix_fmt": "yuv420p"}
    assert (result.frames, result.fps, result.width, result.height) == (9, 8.0, 96, 64)
    assert result.duration_s == pytest.approx(9 / 8)
    assert result.test_noise and result.family == "tiny-t2v" and result.seed == 7
    # +faststart: the index (moov) sits before the media data (mdat)
    head = Path(result.video_path).read_bytes()
    assert head.index(b"moov") < head.index(b"mdat")
    sidecar = json.loads(Path(result.sidecar_path).read_text())
    assert sidecar["settings"]["seed"] == 7 and sidecar["settings"]["steps"] == 3
    assert sidecar["settings"]["guidance"] == 6.0 and sidecar["settings"]["prompt"] == spec.prompt
    assert sidecar["frames"] == 9 and sidecar["fps"] == 8.0 and sidecar["family"] == "tiny-t2v"
    assert sidecar["test_noise"] is True and "diffusers" in sidecar["versions"]
    assert set(BASE_STAGES) <= set(sidecar["timings"])
    assert Path(result.gif_path).read_bytes()[:6] == b"GIF89a"


def test_seed_is_random_when_absent_and_recorded_so_the_run_repeats(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    encoded: list[np.ndarray] = []
    original = engine_job.write_mp4
    monkeypatch.setattr(engine_job, "write_mp4", lambda frames, path, **kw: encoded.append(frames) or original(frames, path, **kw))
    spec = JobSpec(prompt="a dog running", model="tiny-t2v", steps=2)
    first = run_job(spec, settings, tmp_path / "a", hooks=hooks, models=keep_loaded)
    second = run_job(spec, settings, tmp_path / "b", hooks=hooks, models=keep_loaded)
    assert first.seed != second.seed  # two random draws from 2**31
    assert json.loads(Path(first.sidecar_path).read_text())["settings"]["seed"] == first.seed
    again = run_job(spec.model_copy(update={"seed": first.seed}), settings, tmp_path / "c", hooks=hooks, models=keep_loaded)
    assert np.array_equal(encoded[2], encoded[0]) and not np.array_equal(encoded[1], encoded[0])


def test_hook_exception_propagates_as_the_same_object_without_chaining(settings, keep_loaded, tmp_path):
    raised = Boom("cancel at step 2")

    class CancelAtTwo:
        def enter_stage(self, stage, total=None):
            pass

        def step(self, stage, step, total):
            if stage == "denoise" and step == 2:
                raise raised

    with pytest.raises(Boom) as info:
        run_job(JobSpec(prompt="a bird", model="tiny-t2v", steps=4, seed=1), settings, tmp_path / "o",
                hooks=CancelAtTwo(), models=keep_loaded)  # fmt: skip
    assert info.value is raised
    assert info.value.__cause__ is None and info.value.__context__ is None
    assert not (tmp_path / "o" / "video.mp4").exists()


class RefusingProvider:
    """A provider that fails the test if anything is loaded."""

    def acquire(self, key, loader, *, size_mb=None):
        raise AssertionError("a model was loaded before validation finished")


@pytest.mark.parametrize(
    ("update", "fragment"),
    [
        ({"num_frames": 10}, "8N+1"),
        ({"width": 128}, "only generates 96×64"),
        ({"model": "tiny-i2v"}, "cannot do text-to-video"),
        ({"prompt": "\x00\x01binary"}, "control or binary"),
        ({"prompt": "🙂🙂🙂"}, "no words"),
        ({"negative_prompt": "x" * 3000}, "negative prompt is 3000 characters"),
    ],
)
def test_invalid_jobs_fail_before_any_model_loads(settings, hooks, tmp_path, update, fragment):
    spec = JobSpec(prompt="a cat", model="tiny-t2v", steps=2).model_copy(update=update)
    with pytest.raises(InvalidInputError) as info:
        run_job(spec, settings, tmp_path, hooks=hooks, models=RefusingProvider())
    assert fragment in info.value.message
    assert hooks.stages == []


def test_missing_input_image_fails_before_loading(settings, hooks, tmp_path):
    spec = JobSpec(mode="i2v", prompt="a cat", image_path=str(tmp_path / "nope.png"))
    with pytest.raises(InvalidInputError, match="not found"):
        run_job(spec, settings, tmp_path, hooks=hooks, models=RefusingProvider())


def test_over_long_prompt_is_rejected_by_token_count_before_weights_load(settings, hooks, tmp_path):
    locate_weights(resolve_model("tiny-t2v", settings), settings)  # built: its tokenizer is on disk
    prompt = " ".join(["a small red car driving through a busy city street at night"] * 25)  # ~300 tokens
    assert len(prompt) < settings.max_prompt_chars
    with pytest.raises(InvalidInputError) as info:
        run_job(JobSpec(prompt=prompt, model="tiny-t2v"), settings, tmp_path, hooks=hooks, models=RefusingProvider())
    assert "tokens long" in info.value.message and "226" in info.value.message
    assert hooks.stages == []


def test_v2v_reports_strength_scaled_step_count(settings, keep_loaded, hooks, video_file, tmp_path):
    spec = JobSpec(mode="v2v", prompt="a snowy street", model="tiny-t2v", video_path=str(video_file),
                   steps=10, strength=0.5, seed=3)  # fmt: skip
    result = run_job(spec, settings, tmp_path, hooks=hooks, models=keep_loaded)
    assert [s for s in hooks.calls if s[:2] == ("enter", "denoise")] == [("enter", "denoise", 5, None)]
    assert hooks.steps("denoise")[-1] == (5, 5)
    assert result.frames == 9


def test_memory_level_used_is_recorded_and_offload_levels_are_skipped_on_cpu(settings, hooks, tmp_path):
    spec = JobSpec(prompt="a forest", model="tiny-1.5-t2v", steps=2, seed=5)
    result = run_job(spec, settings, tmp_path, hooks=hooks, models=LoadEachTime(), memory_level=5)
    assert result.memory_level == 2  # levels 3-5 offload to the CPU: meaningless on a CPU; fp8 storage runs
    assert json.loads(Path(result.sidecar_path).read_text())["memory_saving"] == "fp8 weight storage"
    assert result.frames == 17 and result.fps == 16.0


def test_offline_real_model_fails_naming_what_to_download(settings, hooks, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelUnavailableError) as info:
        run_job(JobSpec(prompt="a cat", model="THUDM/CogVideoX-2b"), settings, tmp_path, hooks=hooks,
                models=RefusingProvider())  # fmt: skip
    assert "THUDM/CogVideoX-2b" in info.value.message and "not downloaded" in info.value.message
    assert "steadyframe pull THUDM/CogVideoX-2b" in info.value.advice  # workers never download: pulls do


def test_post_stages_are_wired_with_scaled_fps_and_half_flow_scale(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    calls: dict[str, dict] = {}

    def fake_upscale(frames, *, weights, scale, device, models, on_frame, tile=None, out=None, reduced_precision=False, used=None):
        calls["upscale"] = {"weights": weights, "scale": scale, "device": device, "shape": frames.shape, "tile": tile,
                            "reduced_precision": reduced_precision}  # fmt: skip
        used["dtype"] = "float32"
        for i in range(len(frames)):
            on_frame(i + 1, len(frames))
        return write_frames(out, frames[:].repeat(scale, axis=1).repeat(scale, axis=2))

    def fake_interpolate(frames, *, weights, factor, device, models, on_frame, flow_scale=1.0, out=None):
        calls["interpolate"] = {"weights": weights, "factor": factor, "flow_scale": flow_scale, "shape": frames.shape}
        made = np.concatenate([np.repeat(frames[:-1], factor, axis=0), frames[-1:]])
        for i in range(len(made)):
            on_frame(i + 1, len(made))
        return write_frames(out, made)

    monkeypatch.setattr(postprocess, "upscale_frames", fake_upscale, raising=False)
    monkeypatch.setattr(postprocess, "interpolate_frames", fake_interpolate, raising=False)
    monkeypatch.setattr(post_weights, "resolve_upscale_weights", lambda value, s: Path("/w/up.pth"))
    monkeypatch.setattr(post_weights, "resolve_rife_weights", lambda value, s: Path("/w/flownet.pkl"))

    spec = JobSpec(prompt="a horse", model="tiny-t2v", steps=2, seed=2, upscale=2, interpolate=2)
    result = run_job(spec, settings, tmp_path, hooks=hooks, models=keep_loaded)

    assert hooks.stages == BASE_STAGES + ["upscale", "interpolate"] + OUTPUT_STAGES
    assert calls["upscale"] == {
        "weights": Path("/w/up.pth"), "scale": 2, "device": "cpu", "shape": (9, 64, 96, 3), "tile": None,
        "reduced_precision": False,  # an exact job
    }  # fmt: skip
    assert calls["interpolate"]["flow_scale"] == 0.5 and calls["interpolate"]["shape"] == (9, 128, 192, 3)
    assert hooks.steps("upscale")[-1] == (9, 9) and hooks.steps("interpolate")[-1] == (17, 17)
    assert (result.frames, result.fps, result.width, result.height) == (17, 16.0, 192, 128)
    assert read_video_facts(Path(result.video_path))["frames"] == 17


def test_missing_post_weights_fail_before_any_model_loads(settings, hooks, tmp_path, monkeypatch):
    def missing(value, s):
        raise ModelUnavailableError("The upscaling weights RealESRGAN_x4plus.pth are not installed.")

    monkeypatch.setattr(post_weights, "resolve_upscale_weights", missing)
    with pytest.raises(ModelUnavailableError, match="RealESRGAN_x4plus.pth"):
        run_job(JobSpec(prompt="a cat", model="tiny-t2v", upscale=4), settings, tmp_path, hooks=hooks,
                models=RefusingProvider())  # fmt: skip


def test_real_post_stages_upscale_and_interpolate_a_tiny_job(settings, keep_loaded, hooks, tmp_path):
    from steadyframe.testing.tiny_weights import save_practical_rife_v4, save_realesrgan_x2plus

    upscale = save_realesrgan_x2plus(tmp_path / "w" / "RealESRGAN_x2plus.pth")
    rife = save_practical_rife_v4(tmp_path / "w" / "flownet.pkl")
    spec = JobSpec(prompt="a cat", model="tiny-t2v", steps=2, seed=1, upscale=2, interpolate=2,
                   upscale_model=str(upscale), rife_model=str(rife))  # fmt: skip
    result = run_job(spec, settings, tmp_path / "out", hooks=hooks, models=keep_loaded)
    assert hooks.stages == BASE_STAGES + ["upscale", "interpolate"] + OUTPUT_STAGES
    assert read_video_facts(Path(result.video_path)) == {
        "frames": 17, "fps": 16.0, "width": 192, "height": 128, "codec": "h264", "pix_fmt": "yuv420p"
    }  # fmt: skip
