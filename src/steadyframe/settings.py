"""One settings object for the whole product: environment variables ``STEADYFRAME_*``.

CLI flags override fields through :func:`load_settings`. Importing this module never
imports torch, so the server process can use it freely.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_TOKEN_CHARS = 16


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "steadyframe"


class Settings(BaseSettings):
    """Everything a deployment can configure; see README "Configuration"."""

    model_config = SettingsConfigDict(env_prefix="STEADYFRAME_", extra="ignore")

    # --- where things live -------------------------------------------------------------
    data_dir: Path = Field(default_factory=_default_data_dir, description="jobs, outputs, logs, built-in models")
    models_dir: Path | None = Field(None, description="folder for weight files; default DATA_DIR/models")

    # --- serving -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 7860
    api_token: str | None = Field(None, description="bearer token; required when binding beyond loopback")
    allow_unauthenticated_remote: bool = Field(False, description="explicitly allow a non-loopback bind without a token")

    # --- request surface (see README "Security") ------------------------------------------
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated Host names answered besides loopback and the bind address; '*' = any",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="comma-separated origins (scheme://host:port) allowed to call from a browser"
    )
    max_queue_per_client: int = Field(20, ge=1, description="queued jobs per client (token, else address) before 429")
    max_event_streams: int = Field(64, ge=1, description="open job event streams (SSE) in all")
    max_event_streams_per_client: int = Field(8, ge=1, description="open job event streams (SSE) per client")
    request_timeout_s: float = Field(
        30.0, gt=0, description="a client this slow to send its headers or the next part of its body is cut off"
    )

    # --- models ------------------------------------------------------------------------
    model: str | None = Field(None, description="repo id or local folder; None = built-in tiny model")
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    upscale_model: Path | None = Field(None, description="Real-ESRGAN-family weight file (.pth/.safetensors)")
    rife_model: Path | None = Field(None, description="RIFE weight file (flownet.pkl / Practical-RIFE)")

    # --- model catalog and pulls (README "Model catalog and pulls") ------------------------
    models: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='operator catalog, JSON: {"NAME": {"source": "owner/repo[@revision]" or "/folder", "family": "CogVideoX-2b"}}',
    )
    auto_pull: bool = Field(True, description="a job for a catalog model that is not downloaded starts its pull and waits")
    hf_token: str | None = Field(None, description="Hugging Face token for gated or private repos (else HF_TOKEN)")
    pull_reserve_mb: float = Field(1024.0, ge=0, description="disk space a pull must leave free")

    # --- limits ------------------------------------------------------------------------
    max_queue: int = Field(100, ge=1, description="queued jobs before POST /v1/jobs answers 429")
    max_upload_mb: float = Field(200.0, gt=0)
    max_image_pixels: int = Field(40_000_000, gt=0, description="decompression-bomb guard")
    max_video_seconds: float = Field(120.0, gt=0)
    max_prompt_chars: int = Field(2000, gt=0)
    # What one job may use (README "Resource estimate"): a job whose estimate exceeds it is refused with 422.
    job_ram_limit_mb: float = Field(0.0, ge=0, description="host RAM a job may use; 0 = this machine's (or its cgroup's)")
    job_vram_limit_mb: float = Field(0.0, ge=0, description="GPU memory a job may use; 0 = the largest GPU's")
    job_disk_limit_mb: float = Field(0.0, ge=0, description="disk a job may use; 0 = the outputs folder's free space")

    # --- execution ---------------------------------------------------------------------
    workers: int | None = Field(None, description="worker processes; default one per visible GPU, one on CPU")
    job_deadline_s: float = Field(3600.0, gt=0)
    stall_timeout_s: float = Field(300.0, gt=0, description="no progress for this long = hung worker, killed")
    worker_silence_timeout_s: float = Field(
        60.0, gt=0, description="an idle worker silent (no heartbeat) for this long is frozen: killed and replaced"
    )
    cancel_grace_s: float = Field(15.0, gt=0)
    max_attempts: int = Field(2, ge=1, description="runs of a job interrupted by a worker/server death")
    recycle_after_jobs: int = Field(0, ge=0, description="restart the worker after N jobs; 0 = never")
    rss_tolerance_mb: float = Field(400.0, gt=0, description="worker RSS above its empty baseline that triggers a recycle")
    keep_alive_s: float = Field(600.0, ge=0, description="unload an idle model after this long")
    worker_idle_exit_s: float | None = Field(
        None,
        ge=0,
        description="an idle worker exits after this long, so an idle server holds no torch, CUDA context or VRAM; "
        "the next job starts one. Unset = keep_alive_s; 0 = keep a warm worker for ever",
    )
    stage_checkpoints: bool = Field(
        True, description="keep each finished stage's latents/frames in the job folder so a retry resumes after it"
    )
    release_after_job: bool = Field(False, description="unload every model after each job (shared machines)")
    max_memory_level: int = Field(5, ge=0, le=5, description="highest OOM degrade level tried")
    memory_budget_mb: float | None = Field(None, description="RAM/VRAM budget for loaded models; default auto")

    # --- speed (README "Speed") ----------------------------------------------------------
    compile_blocks: bool = Field(False, description="torch.compile each transformer block (first job pays the compile)")
    fast_attention: bool = Field(
        True, description="fast/fastest jobs use SageAttention or FlashAttention when installed (CUDA, fp16/bf16)"
    )
    # --- memory timeline ---------------------------------------------------------------
    history_sample_s: float = Field(2.0, ge=0.1, le=600, description="seconds between memory samples for the timeline")
    history_keep_hours: float = Field(24.0, gt=0, le=24 * 14, description="how far back the memory timeline reaches")

    # --- cluster (Ray) -----------------------------------------------------------------
    ray_address: str | None = Field(
        None, description="HOST:PORT of an existing Ray cluster: run workers as Ray actors there; unset = local processes"
    )
    ray_cpus_per_worker: float | None = Field(
        None, gt=0, description="CPU-only clusters: one worker per this many CPUs of a node; unset = one per node"
    )

    # --- retention ---------------------------------------------------------------------
    retention_days: float = Field(30.0, gt=0)
    retention_max_gb: float = Field(50.0, gt=0)

    # --- output ------------------------------------------------------------------------
    crf: int = Field(18, ge=0, le=51, description="H.264 quality, lower is better")

    # --- testing & integrations ----------------------------------------------------------
    fault_injection: bool = Field(False, description="allow job specs to carry a fault (tests only)")
    log_level: str = "INFO"
    log_to_stderr: bool = Field(True, description="also write the JSON log lines to stderr (the CLI turns this off)")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint for 'enhance prompt'")
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"

    @field_validator("allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("api_token")
    @classmethod
    def _token_long_enough(cls, value: str | None) -> str | None:
        if value == "":
            return None  # STEADYFRAME_API_TOKEN= (empty) means no token
        if value is not None and len(value) < MIN_TOKEN_CHARS:
            raise ValueError(
                f"the API token is {len(value)} characters; use at least {MIN_TOKEN_CHARS} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        return value

    @property
    def idle_exit_after_s(self) -> float:
        """Seconds an idle worker waits before it exits (0 = never)."""
        return self.keep_alive_s if self.worker_idle_exit_s is None else self.worker_idle_exit_s

    @property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def builtin_models_dir(self) -> Path:
        return self.data_dir / "builtin-models"

    @property
    def jobs_db(self) -> Path:
        return self.data_dir / "jobs.sqlite3"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.resolved_models_dir, self.outputs_dir, self.uploads_dir, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with non-None ``overrides`` (CLI flags) on top."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
