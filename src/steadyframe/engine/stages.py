"""The torch stages of a job, each a thin call into the pipeline's own methods.

Split this way (encode_prompt -> __call__ with embeddings and ``output_type="latent"`` ->
decode_latents + postprocess_video) the frames equal a single ``pipe(..., output_type="np")``
call bit for bit: the generator is consumed only inside ``__call__``, in the same order.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from steadyframe.engine.plan import JobPlan


def encode_prompt(pipe: Any, plan: JobPlan) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Prompt and (with guidance > 1) negative-prompt embeddings, exactly as ``__call__`` makes them."""
    with torch.no_grad():
        return pipe.encode_prompt(
            prompt=plan.spec.prompt,
            negative_prompt=plan.spec.negative_prompt or None,
            do_classifier_free_guidance=plan.guidance > 1.0,
            num_videos_per_prompt=1,
            device=pipe._execution_device,
        )


def denoise(
    pipe: Any,
    plan: JobPlan,
    embeds: tuple[torch.Tensor, torch.Tensor | None],
    *,
    image: Image.Image | None,
    video: list[Image.Image] | None,
    generator: torch.Generator,
    on_step: Callable[[int, int], None],
) -> torch.Tensor:
    """Run the pipeline's denoising loop -> latents [B, F, C, h, w]; ``on_step(i, total)`` after each step."""

    def _callback(_pipe: Any, index: int, _timestep: Any, _tensors: dict) -> dict:
        on_step(index + 1, _pipe.num_timesteps)
        return {}

    kwargs: dict[str, Any] = dict(
        prompt_embeds=embeds[0],
        negative_prompt_embeds=embeds[1],
        height=plan.height,
        width=plan.width,
        num_inference_steps=plan.steps,
        guidance_scale=plan.guidance,
        use_dynamic_cfg=plan.use_dynamic_cfg,
        generator=generator,
        output_type="latent",
        return_dict=False,
        callback_on_step_end=_callback,
        callback_on_step_end_tensor_inputs=[],
    )
    if plan.mode == "v2v":
        kwargs.update(video=video, strength=plan.spec.strength)
    else:
        kwargs["num_frames"] = plan.num_frames
    if plan.mode == "i2v":
        kwargs["image"] = image
    return pipe(**kwargs)[0]


def padding_latent_frames(pipe: Any, plan: JobPlan) -> int:
    """Latent frames a 1.5 pipeline prepends to fill its temporal patch (dropped before decoding)."""
    if plan.mode == "v2v":
        return 0  # the video-to-video pipeline refuses counts that would need padding
    patch_t = pipe.transformer.config.patch_size_t
    latent_frames = (plan.num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    if patch_t is None or latent_frames % patch_t == 0:
        return 0
    return patch_t - latent_frames % patch_t


def decode(pipe: Any, plan: JobPlan, latents: torch.Tensor) -> np.ndarray:
    """Latents -> float frames [F, H, W, 3] in [0, 1], through the pipeline's own decoder."""
    with torch.no_grad():
        latents = latents[:, padding_latent_frames(pipe, plan) :]
        video = pipe.decode_latents(latents)
        del latents
        frames = pipe.video_processor.postprocess_video(video=video, output_type="np")
    return frames[0]


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """Float frames in [0, 1] -> uint8, rounding as diffusers' ``numpy_to_pil`` does."""
    return (frames * 255).round().astype(np.uint8)
