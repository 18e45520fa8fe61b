"""The engine's staged run produces exactly what one direct diffusers pipeline call gives."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from steadyframe.engine import run_job
from steadyframe.engine import stages as engine_stages
from steadyframe.families import FAMILIES
from steadyframe.media import load_image, load_video_frames
from steadyframe.spec import JobSpec

CASES = [
    ("tiny-t2v", "t2v"),
    ("tiny-1.5-t2v", "t2v"),
    ("tiny-i2v", "i2v"),
    ("tiny-1.5-i2v", "i2v"),
    ("tiny-t2v", "v2v"),
    ("tiny-1.5-t2v", "v2v"),
]


@pytest.mark.parametrize(("model", "mode"), CASES)
def test_engine_frames_equal_direct_pipeline_call_bit_for_bit(
    model, mode, settings, keep_loaded, hooks, image_file, video_file, tmp_path, monkeypatch
):
    num_frames = FAMILIES[model].default_frames_for(mode)
    spec = JobSpec(
        mode=mode,
        num_frames=num_frames,
        model=model,
        prompt="a red fox running through snow",
        negative_prompt="blurry" if mode != "v2v" else "",
        steps=3,
        seed=1234,
        use_dynamic_cfg=mode == "i2v",
        image_path=str(image_file) if mode == "i2v" else None,
        video_path=str(video_file) if mode == "v2v" else None,
        strength=0.7,
    )
    captured: list[np.ndarray] = []
    original = engine_stages.to_uint8
    monkeypatch.setattr(engine_stages, "to_uint8", lambda frames: captured.append(frames.copy()) or original(frames))

    result = run_job(spec, settings, tmp_path / "out", hooks=hooks, models=keep_loaded)

    pipe = keep_loaded.last()
    kwargs = dict(
        prompt=spec.prompt,
        negative_prompt=spec.negative_prompt or None,
        height=result.height,
        width=result.width,
        num_inference_steps=3,
        guidance_scale=6.0,
        use_dynamic_cfg=spec.use_dynamic_cfg,
        generator=torch.Generator().manual_seed(1234),
        output_type="np",
    )
    if mode == "i2v":
        kwargs.update(image=load_image(image_file, settings, result.width, result.height), num_frames=num_frames)
    elif mode == "v2v":
        frames = load_video_frames(video_file, settings, result.width, result.height, result.fps, num_frames)
        kwargs.update(video=frames, strength=0.7)
    else:
        kwargs.update(num_frames=num_frames)
    direct = pipe(**kwargs).frames[0]

    assert len(captured) == 1
    assert captured[0].shape == direct.shape
    assert captured[0].dtype == direct.dtype
    assert np.array_equal(captured[0], direct), f"max diff {np.abs(captured[0] - direct).max()}"
    assert result.frames == direct.shape[0]
