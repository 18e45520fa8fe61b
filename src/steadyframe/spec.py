"""The job spec: what one generation job asks for. Shared by CLI, API, UI and worker (no torch).

Values left ``None`` are filled from the model family and the motion preset by the engine;
the filled values are what the sidecar JSON and the job result record.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steadyframe.postprocess.plan import Factor
from steadyframe.stages import FaultKind, Stage

Mode = Literal["t2v", "i2v", "v2v"]
PresetName = Literal["balanced", "fast", "quality", "high_motion", "subtle"]
# exact: bit-exact with diffusers; fast / fastest: a diffusers step cache (engine/speed.py, README "Speed")
Speed = Literal["exact", "fast", "fastest"]


class FaultSpec(BaseModel):
    """An injected fault; honoured only when the worker runs with fault injection enabled."""

    model_config = ConfigDict(extra="forbid")

    stage: Stage
    kind: FaultKind
    at_step: int | None = Field(None, ge=0, description="denoise step (or frame, for post stages) to fire at")
    ballast_mb: int = Field(0, ge=0, le=8192, description="memory allocated and held in the failing frame")
    only_at_level: int | None = Field(
        None, ge=0, le=5, description="fire only at this memory-saving level (tests the OOM ladder)"
    )
    only_at_attempt: int | None = Field(
        None, ge=0, le=100, description="fire only in this attempt (0 = the first run; tests resuming)"
    )


class JobSpec(BaseModel):
    """One generation job. Paths are local to the machine running the worker."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "t2v"
    prompt: str
    negative_prompt: str = ""
    model: str | None = Field(None, description="family name, repo id or local folder; None = settings/built-in")
    preset: PresetName = "balanced"
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0.0, le=30.0)
    use_dynamic_cfg: bool | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    num_frames: int | None = Field(None, ge=1, le=1024)
    width: int | None = Field(None, ge=16, le=4096)
    height: int | None = Field(None, ge=16, le=4096)
    strength: float = Field(0.8, gt=0.0, le=1.0, description="v2v: how far from the input video to move")
    image_path: str | None = Field(None, description="i2v input image")
    video_path: str | None = Field(None, description="v2v input video")
    upscale: Factor = 1
    interpolate: Factor = 1
    upscale_model: str | None = Field(None, description="weight file; None = settings/models folder default")
    rife_model: str | None = Field(None, description="weight file; None = settings/models folder default")
    crf: int | None = Field(None, ge=0, le=51)
    speed: Speed = Field("exact", description="exact (bit-exact with diffusers), fast or fastest (step caching)")
    fault: FaultSpec | None = None

    @field_validator("prompt", "negative_prompt", "model", "upscale_model", "rife_model")
    @classmethod
    def _plain_text(cls, value: str | None) -> str | None:
        """Text must be valid Unicode without NUL: it is stored, logged and sent back as UTF-8."""
        if value is None:
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the text holds characters that are not valid Unicode (unpaired surrogates)") from None
        if "\x00" in value:
            raise ValueError("the text holds a NUL character")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_has_text(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the prompt is empty: describe the video you want")
        return value

    @model_validator(mode="after")
    def _inputs_match_mode(self) -> "JobSpec":
        if self.mode == "i2v" and not self.image_path:
            raise ValueError("image-to-video needs an input image")
        if self.mode == "v2v" and not self.video_path:
            raise ValueError("video-to-video needs an input video")
        if self.mode != "i2v" and self.image_path:
            raise ValueError(f"an input image is only used by image-to-video, not {self.mode}")
        if self.mode != "v2v" and self.video_path:
            raise ValueError(f"an input video is only used by video-to-video, not {self.mode}")
        return self
