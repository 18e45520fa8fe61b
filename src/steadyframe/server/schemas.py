"""What crosses the HTTP boundary: pydantic models for requests and responses of ``/v1``.

The route table and these field names are the public contract (published at /openapi.json).
Internal records (``JobRecord``) are turned into these views by :mod:`steadyframe.server.views`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from steadyframe.server.profile_views import MemoryProfileView
from steadyframe.spec import FaultSpec, Mode, PresetName


class UploadView(BaseModel):
    """A validated upload, referenced by ``id`` from a job's ``image_upload``/``video_upload``."""

    id: str
    kind: Literal["image", "video"]
    width: int
    height: int
    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None


class JobCreate(BaseModel):
    """The body of ``POST /v1/jobs``; unknown fields are rejected with 422."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = "t2v"
    prompt: str = Field(..., description="what the video shows")
    negative_prompt: str = ""
    model: str | None = Field(None, description="family name, repo id or local folder; default: the server's model")
    preset: PresetName | None = Field(None, description="motion preset; default balanced")
    steps: int | None = Field(None, ge=1, le=200)
    guidance: float | None = Field(None, ge=0.0, le=30.0)
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    num_frames: int | None = Field(None, ge=1, le=1024)
    width: int | None = Field(None, ge=16, le=4096)
    height: int | None = Field(None, ge=16, le=4096)
    strength: float | None = Field(None, gt=0.0, le=1.0, description="v2v only: how far to move from the input")
    image_upload: str | None = Field(None, description="id from POST /v1/uploads (i2v)")
    video_upload: str | None = Field(None, description="id from POST /v1/uploads (v2v)")
    upscale: Literal[1, 2, 4] = 1
    interpolate: Literal[1, 2, 4] = 1
    fault: FaultSpec | None = Field(None, description="injected fault; accepted only when fault injection is on")


class JobAccepted(BaseModel):
    id: str
    status: str
    position: int | None = Field(None, description="0-based place in the queue (0 = next)")


class ProgressView(BaseModel):
    stage: str | None
    step: int
    total: int
    fraction: float


class ResultView(BaseModel):
    video_url: str
    gif_url: str
    seed: int
    frames: int
    fps: float
    width: int
    height: int
    duration_s: float
    memory_level: int
    test_noise: bool = False
    memory_profile: MemoryProfileView | None = Field(None, description="peak RSS/VRAM per stage, level after cleanup")


class ErrorView(BaseModel):
    kind: str
    message: str
    advice: str
    error_id: str
    stage: str | None = None
    memory_profile: MemoryProfileView | None = Field(None, description="peak RSS/VRAM per stage, level after cleanup")


class JobView(BaseModel):
    id: str
    status: str
    attempt: int
    position: int | None = None
    progress: ProgressView
    created_at: float
    started_at: float | None
    finished_at: float | None
    spec: dict[str, Any]
    result: ResultView | None = None
    error: ErrorView | None = None


class JobList(BaseModel):
    jobs: list[JobView]


class FamilyView(BaseModel):
    """One model family (or configured model): whether its weights are here and whether a worker holds it."""

    name: str
    present: bool
    loaded: bool
    details: dict[str, Any] = Field(default_factory=dict)


class ModelsView(BaseModel):
    default_model: str
    families: list[FamilyView]
    loaded: list[str]


class ProcessView(BaseModel):
    role: Literal["server", "worker"]
    id: str
    pid: int | None
    state: str
    rss_mb: float | None
    vram_allocated_mb: float | None = None
    vram_reserved_mb: float | None = None
    jobs_done: int | None = None
    restarts: int | None = None
    loaded_models: list[str] = Field(default_factory=list)
    node: str | None = Field(None, description="the machine: this host, or a Ray node's address (id)")
    device: str | None = Field(None, description="what the worker runs on: cpu, cuda, ...")


class SystemView(BaseModel):
    processes: list[ProcessView]
    swap_used_mb: float
    swap_total_mb: float
    ram_available_mb: float
    queue_depth: int
    ready: bool


class ProblemView(BaseModel):
    """Every 4xx/5xx body: what went wrong and what to do (``errors`` lists field errors on 422)."""

    detail: str
    advice: str | None = None
    errors: list[dict[str, Any]] | None = None
