"""What crosses the HTTP boundary: pydantic models for requests and responses of ``/v1``.

The route table and these field names are the public contract (published at /openapi.json).
Internal records (``JobRecord``) are turned into these views by :mod:`steadyframe.server.views`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

from steadyframe.server.profile_views import MemoryProfileView
from steadyframe.spec import JobSpec


class UploadView(BaseModel):
    """A validated upload, referenced by ``id`` from a job's ``image_upload``/``video_upload``."""

    id: str
    kind: Literal["image", "video"]
    width: int
    height: int
    frames: int | None = None
    fps: float | None = None
    duration_s: float | None = None


# JobSpec fields the server fills itself (paths on its machine): never part of a request.
_SERVER_ONLY_FIELDS = {"image_path", "video_path", "upscale_model", "rife_model"}
# JobSpec fields whose default the API leaves open (None = "the server decides"), bounds unchanged.
_OPEN_DEFAULTS = {"preset", "strength"}


def _request_field(name: str, info: FieldInfo) -> tuple[Any, FieldInfo]:
    """JobSpec's field as the request declares it: same type, bounds and description."""
    field = copy.copy(info)
    if name in _OPEN_DEFAULTS:
        field.default = None
        return info.annotation | None, field
    return info.annotation, field


# The body of ``POST /v1/jobs``, derived from JobSpec so every bound is declared once (in spec.py).
JobCreate = create_model(
    "JobCreate",
    __config__=ConfigDict(extra="forbid"),
    __doc__="The body of ``POST /v1/jobs``; unknown fields are rejected with 422. Bounds are JobSpec's.",
    **{
        name: _request_field(name, info)
        for name, info in JobSpec.model_fields.items()
        if name not in _SERVER_ONLY_FIELDS | {"model"}
    },
    model=(str | None, Field(None, description="a catalog name from GET /v1/models; default: the server's model")),
    image_upload=(str | None, Field(None, max_length=64, description="id from POST /v1/uploads (i2v)")),
    video_upload=(str | None, Field(None, max_length=64, description="id from POST /v1/uploads (v2v)")),
)


class LevelEstimateView(BaseModel):
    level: int
    description: str
    ram_mb: float
    vram_mb: float | None = Field(None, description="null on a CPU-only device")


class EstimateView(BaseModel):
    """What a job is estimated to need (README "Resource estimate"): a model, not a measurement."""

    device: str = Field(..., description="the kind of device its worker runs on: cpu, cuda, mps")
    level: int = Field(..., description="the memory level ram_mb/vram_mb are for: the highest this server may use")
    ram_mb: float
    vram_mb: float | None = Field(None, description="null on a CPU-only device")
    disk_mb: float = Field(..., description="peak bytes in the job's folder: stage frame files, MP4 and GIF")
    weights_mb: float = Field(..., description="the model's weights at the dtype they load in")
    weights_source: str = Field(..., description='"files" (on disk) or "family figure" (published sizes)')
    levels: list[LevelEstimateView] = Field(default_factory=list, description="the figures at each level")


class JobAccepted(BaseModel):
    id: str
    status: str
    position: int | None = Field(None, description="0-based place in the queue (0 = next)")
    estimate: EstimateView | None = None


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
    learned_start_level: int = Field(0, description="began at this memory level, learned from earlier jobs of its shape")
    resumed_from: str | None = Field(None, description="the stage an interrupted earlier attempt finished (its checkpoint)")
    stage_recoveries: dict[str, str] = Field(
        default_factory=dict, description="stage -> the memory saving that got it past an out-of-memory"
    )
    timings: dict[str, float] = Field(
        default_factory=dict, description="seconds per stage; worker_start when the job had to start a worker"
    )
    speed: dict[str, Any] | None = Field(None, description="what ran: speed, cache and its knobs, attention kernel, upscaling dtype")
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
    waiting: "WaitingView | None" = Field(None, description="queued behind its model's download")
    estimate: EstimateView | None = Field(None, description="resources estimated at submit")


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
    models: list["CatalogModelView"] = Field(default_factory=list, description="the catalog: what jobs may name")
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
    warnings: list[str] = Field(
        default_factory=list, description="what the operator must know: an unauthenticated remote bind, a damaged database moved aside"
    )


class ProblemView(BaseModel):
    """Every 4xx/5xx body: what went wrong and what to do (``errors`` lists field errors on 422)."""

    detail: str
    advice: str | None = None
    errors: list[dict[str, Any]] | None = None


def _plain(text: object) -> str:
    """Text that always encodes as UTF-8 (a field name from the request may hold lone surrogates)."""
    return str(text).encode("utf-8", "replace").decode("utf-8")[:300]


def field_errors(errors: Any) -> list[dict[str, Any]]:
    """pydantic/FastAPI errors as ``{loc, msg, type}`` (never the input: it may be huge or not UTF-8)."""
    return [
        {"loc": [_plain(p) for p in e.get("loc", ())], "msg": _plain(e.get("msg", "")), "type": _plain(e.get("type", ""))}
        for e in errors
    ]


def validation_problem(errors: Any, advice: str = "Fix the fields listed and send the request again.") -> dict[str, Any]:
    """A 422 ProblemView body: ``detail`` one line naming the first bad field, ``errors`` all of them."""
    listed = field_errors(errors)
    first = listed[0] if listed else {"loc": [], "msg": "the request is not valid"}
    where = ".".join(p for p in first["loc"] if p != "body") or "request"
    more = f" (and {len(listed) - 1} more)" if len(listed) > 1 else ""
    return {"detail": f"{where}: {first['msg']}{more}", "advice": advice, "errors": listed}


def _problem(description: str) -> dict[str, Any]:
    return {"model": ProblemView, "description": description}


# What any route may answer besides its own responses (the guard's refusals, schema errors, bugs).
COMMON_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _problem("the Host header is not one this server answers to"),
    401: _problem("missing or wrong API token (when the server has one)"),
    403: _problem("a state-changing request from a foreign web page (Origin)"),
    408: _problem("the request body stalled"),
    413: _problem("the request body is larger than the route allows"),
    422: _problem("the request does not fit the schema; errors lists each field"),
    500: _problem("a bug: the body carries an error id that matches the server log"),
    507: _problem("the disk holding the data folder is full"),
}
class DownloadView(BaseModel):
    """Bytes of a model on disk out of its full size (live while it is pulled)."""

    bytes_done: int
    bytes_total: int | None = None
    fraction: float = 0.0


class PullProblemView(BaseModel):
    message: str
    advice: str | None = None


class CatalogModelView(BaseModel):
    """One model of the operator's catalog: what it does, whether it is here, and what it needs."""

    name: str = Field(..., description="the name jobs use in `model`")
    family: str
    task: str
    modes: list[str]
    source: str = Field(..., description='a Hugging Face repo id[@revision], "built-in" or "local folder"')
    state: Literal["absent", "downloading", "present", "broken"]
    download: DownloadView | None = Field(
        None, description="downloading: live progress; absent: the bytes a pull would resume from"
    )
    size_on_disk_mb: float
    memory_needed_mb: float | None = Field(None, description="its weights' size: RAM/VRAM needed to hold them loaded")
    loaded: bool = Field(..., description="a worker holds it in memory now")
    test_noise: bool = Field(False, description="built-in random weights: output is noise")
    last_pull_error: PullProblemView | None = None
    pull_command: str


class CatalogView(BaseModel):
    models: list[CatalogModelView]


class WaitingView(BaseModel):
    """A queued job held back until its model's pull finishes."""

    model: str
    reason: str = "waiting for the model download"
    download: DownloadView | None = None


JobView.model_rebuild()
ModelsView.model_rebuild()
