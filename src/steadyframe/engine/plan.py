"""Validate a job spec and fill in everything it left open (no torch: the server may call it).

``plan_job`` is the "validate first" step: it raises InvalidInputError (or ModelUnavailableError)
for anything wrong with the spec, its inputs or its model before any weights are touched, and
returns a ``JobPlan`` holding every value the run and the sidecar use.
"""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steadyframe.errors import InvalidInputError
from steadyframe.families import Family, ModelRef, resolve_model
from steadyframe.media import ImageInfo, VideoInfo, probe_image, probe_video
from steadyframe.presets import get_preset
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec

MAX_PROMPT_TOKENS = 226  # the CogVideoX text encoder's sequence length


@dataclass(frozen=True)
class JobPlan:
    """A validated job with every setting filled in (from the spec, the preset and the family)."""

    spec: JobSpec
    ref: ModelRef
    seed: int
    steps: int
    guidance: float
    use_dynamic_cfg: bool
    num_frames: int
    width: int
    height: int
    fps: int
    crf: int
    image_info: ImageInfo | None = None
    video_info: VideoInfo | None = None
    upscale_weights: Path | None = None
    rife_weights: Path | None = None

    @property
    def family(self) -> Family:
        return self.ref.family

    @property
    def mode(self) -> str:
        return self.spec.mode

    @property
    def denoise_steps(self) -> int:
        """Steps the denoise loop really runs: video-to-video skips the first (1 - strength)."""
        if self.spec.mode == "v2v":
            return min(int(self.steps * self.spec.strength), self.steps)
        return self.steps

    def settings_dict(self) -> dict[str, Any]:
        """The generation settings as recorded in the sidecar and job result."""
        spec = self.spec
        return {
            "mode": spec.mode,
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt,
            "preset": spec.preset,
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "use_dynamic_cfg": self.use_dynamic_cfg,
            "num_frames": self.num_frames,
            "width": self.width,
            "height": self.height,
            "strength": spec.strength if spec.mode == "v2v" else None,
            "upscale": spec.upscale,
            "interpolate": spec.interpolate,
            "crf": self.crf,
            "speed": spec.speed,
            "image": Path(spec.image_path).name if spec.image_path else None,
            "video": Path(spec.video_path).name if spec.video_path else None,
        }


def check_prompt_text(prompt: str, settings: Settings, *, what: str = "prompt") -> None:
    """Reject prompts that are not text: not a string, empty, control bytes, no letters, too long."""
    if not isinstance(prompt, str):
        raise InvalidInputError(f"The {what} must be text, not {type(prompt).__name__}.")
    if what == "prompt" and not prompt.strip():
        raise InvalidInputError("The prompt is empty.", advice="Describe the video you want.")
    if any(unicodedata.category(ch) in ("Cc", "Cs", "Co") and ch not in "\n\r\t" for ch in prompt):
        raise InvalidInputError(
            f"The {what} contains control or binary characters.", advice="Type the prompt as plain text."
        )
    if what == "prompt" and not any(ch.isalnum() for ch in prompt):
        raise InvalidInputError("The prompt has no words in it.", advice="Describe the video you want in words.")
    if len(prompt) > settings.max_prompt_chars:
        raise InvalidInputError(
            f"The {what} is {len(prompt)} characters long, over the {settings.max_prompt_chars} limit.",
            advice=f"Shorten it; the model reads at most {MAX_PROMPT_TOKENS} tokens (about 150 words).",
        )


def check_prompt_tokens(count: int, *, what: str = "prompt") -> None:
    """Reject a prompt the text encoder would truncate (``count`` tokens including the end token)."""
    if count > MAX_PROMPT_TOKENS:
        raise InvalidInputError(
            f"The {what} is {count} tokens long; the model reads at most {MAX_PROMPT_TOKENS}.",
            advice="Shorten it to about 150 words; the rest would be silently cut off.",
        )


def _resolve_post_weights(spec: JobSpec, settings: Settings) -> tuple[Path | None, Path | None]:
    """Find upscale / RIFE weight files now, so a missing file fails before any model loads."""
    upscale = rife = None
    if spec.upscale > 1 or spec.interpolate > 1:
        from steadyframe.postprocess import weights  # the postprocess package: torch-free resolution

        if spec.upscale > 1:
            upscale = weights.resolve_upscale_weights(spec.upscale_model, settings)
        if spec.interpolate > 1:
            rife = weights.resolve_rife_weights(spec.rife_model, settings)
    return upscale, rife


def plan_job(spec: JobSpec, settings: Settings) -> JobPlan:
    """Validate ``spec`` (prompt, model, sizes, frames, inputs, post weights) -> a filled JobPlan."""
    check_prompt_text(spec.prompt, settings)
    check_prompt_text(spec.negative_prompt, settings, what="negative prompt")
    ref = resolve_model(spec.model, settings, spec.mode)
    family = ref.family
    preset = get_preset(spec.preset)
    width = spec.width or family.default_width
    height = spec.height or family.default_height
    family.check_resolution(width, height)
    num_frames = spec.num_frames or family.default_frames_for(spec.mode)
    family.check_frames(num_frames, spec.mode)
    steps = spec.steps or preset.steps
    if spec.mode == "v2v" and int(steps * spec.strength) < 1:
        raise InvalidInputError(
            f"With {steps} steps and strength {spec.strength} no denoising step would run.",
            advice="Raise the strength or the number of steps.",
        )
    image_info = probe_image(spec.image_path, settings) if spec.image_path else None
    video_info = probe_video(spec.video_path, settings) if spec.video_path else None
    upscale_weights, rife_weights = _resolve_post_weights(spec, settings)
    return JobPlan(
        spec=spec,
        ref=ref,
        seed=spec.seed if spec.seed is not None else secrets.randbelow(2**31),
        steps=steps,
        guidance=spec.guidance if spec.guidance is not None else preset.guidance,
        use_dynamic_cfg=spec.use_dynamic_cfg if spec.use_dynamic_cfg is not None else preset.use_dynamic_cfg,
        num_frames=num_frames,
        width=width,
        height=height,
        fps=family.fps,
        crf=spec.crf if spec.crf is not None else settings.crf,
        image_info=image_info,
        video_info=video_info,
        upscale_weights=upscale_weights,
        rife_weights=rife_weights,
    )
