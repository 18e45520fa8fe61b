"""A synthetic job runner with the engine's signature: real torch work through every stage.

It lets the supervisor, worker and fault-injection machinery be tested and benchmarked without
model weights or diffusers (fast worker start). It is not a video generator: its "video" is a
tensor of numbers saved with ``torch.save``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from steadyframe.contracts import JobHooks, JobResult, ModelProvider
from steadyframe.errors import InvalidInputError
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

_WIDTH = 256  # hidden size of the synthetic "model": ~0.5 MB of weights per layer


def _build_model(layers: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(_WIDTH, _WIDTH) for _ in range(layers)]).eval()


def run_job(
    spec: JobSpec,
    settings: Settings,
    out_dir: Path,
    *,
    hooks: JobHooks,
    models: ModelProvider,
    memory_level: int = 0,
) -> JobResult:
    """Run ``spec`` through every stage with small real tensor work; returns a JobResult."""
    if spec.mode != "t2v":
        raise InvalidInputError("the synthetic runner only does text-to-video")
    steps = spec.steps or 4
    frames = spec.num_frames or 4
    started = time.monotonic()
    seed = spec.seed if spec.seed is not None else 0
    generator = torch.Generator().manual_seed(seed)

    hooks.enter_stage(Stage.LOAD)
    with models.acquire("synthetic-4", lambda: _build_model(4)) as model:
        hooks.enter_stage(Stage.ENCODE_PROMPT)
        prompt = torch.tensor([float(ord(c)) for c in spec.prompt[:64]]).mean().expand(_WIDTH)
        hooks.enter_stage(Stage.DENOISE, steps)
        latents = torch.randn(frames, _WIDTH, generator=generator)
        with torch.inference_mode():
            for i in range(steps):
                latents = latents - 0.1 * torch.tanh(model(latents + prompt / 100.0))
                hooks.step(Stage.DENOISE, i + 1, steps)
        hooks.enter_stage(Stage.DECODE, frames)
        video = torch.sigmoid(latents)
        for i in range(frames):
            hooks.step(Stage.DECODE, i + 1, frames)
    if spec.upscale > 1:
        hooks.enter_stage(Stage.UPSCALE, frames)
        video = video.repeat_interleave(spec.upscale, dim=1)
        for i in range(frames):
            hooks.step(Stage.UPSCALE, i + 1, frames)
    if spec.interpolate > 1:
        hooks.enter_stage(Stage.INTERPOLATE, frames)
        video = video.repeat_interleave(spec.interpolate, dim=0)
        for i in range(frames):
            hooks.step(Stage.INTERPOLATE, i + 1, frames)
    hooks.enter_stage(Stage.ENCODE_VIDEO, 1)
    encoded = (video * 255).to(torch.uint8)
    hooks.step(Stage.ENCODE_VIDEO, 1, 1)
    hooks.enter_stage(Stage.SAVE, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path = out_dir / "video.pt"
    torch.save(encoded, video_path)
    hooks.step(Stage.SAVE, 1, 1)
    return JobResult(
        video_path=str(video_path),
        gif_path="",
        sidecar_path="",
        seed=seed,
        frames=int(encoded.shape[0]),
        fps=8.0,
        width=int(encoded.shape[1]),
        height=1,
        duration_s=time.monotonic() - started,
        memory_level=memory_level,
        model="synthetic",
        family="synthetic",
        test_noise=True,
    )
