"""The one way jobs enter and leave the server: used by the REST API and the Gradio UI alike.

It validates a request (limits, uploads, fault permission), builds the ``JobSpec`` the worker
runs, enforces the queue cap, talks to the job store and wakes the dispatcher.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from steadyframe.engine.plan import plan_job
from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.jobs.base import JobRecord, JobStatus, JobStore
from steadyframe.server.schemas import JobCreate
from steadyframe.server.uploads import UploadStore
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec


class Wakeable(Protocol):
    def wake(self) -> None: ...


@dataclass
class JobRejected(Exception):
    """The request cannot become a job; ``errors`` holds field errors (FastAPI's 422 shape)."""

    message: str
    advice: str
    errors: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message


@dataclass
class QueueFull(Exception):
    queued: int
    retry_after_s: int
    per_client: bool = False

    def __str__(self) -> str:
        if self.per_client:
            return f"you already have {self.queued} jobs waiting, this server's limit per client"
        return f"the queue is full ({self.queued} jobs waiting)"


@dataclass
class IdempotencyConflict(Exception):
    job_id: str

    def __str__(self) -> str:
        return f"this Idempotency-Key already belongs to job {self.job_id}, which asked for something else"


def _field_error(loc: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", loc], "msg": message, "type": kind}


class JobService:
    """Submit, cancel and look up jobs; thread-safe (one lock keeps the queue cap exact)."""

    # A client told to retry waits this long: about one short job on the built-in model.
    retry_after_s = 5

    def __init__(self, settings: Settings, store: JobStore, uploads: UploadStore, dispatcher: Wakeable | None) -> None:
        self.settings = settings
        self.store = store
        self.uploads = uploads
        self.dispatcher = dispatcher
        self._submit_lock = threading.Lock()

    def build_spec(self, request: JobCreate) -> dict[str, Any]:
        """The stored job spec for ``request``, or ``JobRejected`` with field errors."""
        errors: list[dict[str, Any]] = []
        if len(request.prompt) > self.settings.max_prompt_chars:
            errors.append(
                _field_error("prompt", f"the prompt is longer than {self.settings.max_prompt_chars} characters")
            )
        if request.fault is not None and not self.settings.fault_injection:
            errors.append(_field_error("fault", "fault injection is not enabled on this server", "forbidden"))
        if request.strength is not None and request.mode != "v2v":
            errors.append(_field_error("strength", "strength is only used by video-to-video (mode v2v)"))
        fields = request.model_dump(exclude={"image_upload", "video_upload", "strength", "preset"}, exclude_none=True)
        if request.preset is not None:
            fields["preset"] = request.preset
        if request.strength is not None:
            fields["strength"] = request.strength
        for name, kind, target in (("image_upload", "image", "image_path"), ("video_upload", "video", "video_path")):
            upload_id = getattr(request, name)
            if upload_id is None:
                continue
            try:
                fields[target] = str(self.uploads.resolve(upload_id, kind))  # type: ignore[arg-type]
            except InvalidInputError as exc:
                errors.append(_field_error(name, exc.message))
        if request.mode == "i2v" and request.image_upload is None:
            errors.append(_field_error("image_upload", "image-to-video needs an input image: upload one first"))
        if request.mode == "v2v" and request.video_upload is None:
            errors.append(_field_error("video_upload", "video-to-video needs an input video: upload one first"))
        if errors:
            raise JobRejected(errors[0]["msg"], "Fix the fields listed and send the job again.", errors)
        try:
            spec = JobSpec(**fields)
        except ValidationError as exc:
            details = [
                {"loc": ["body", *[str(p) for p in e["loc"]]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise JobRejected(details[0]["msg"], "Fix the fields listed and send the job again.", details) from None
        self._check_against_model(spec)
        return spec.model_dump(mode="json")

    def _check_against_model(self, spec: JobSpec) -> None:
        """Reject now what the worker would reject (family rules, inputs, weight files): nothing is queued."""
        try:
            plan_job(spec, self.settings)
        except (InvalidInputError, ModelUnavailableError) as exc:
            detail = [{"loc": ["body"], "msg": exc.message, "type": exc.kind.value}]
            raise JobRejected(exc.message, exc.advice or "Fix the job and send it again.", detail) from None

    def submit(
        self, request: JobCreate, *, idempotency_key: str | None = None, client: str | None = None
    ) -> tuple[JobRecord, bool]:
        """Queue ``request`` for ``client`` (a token hash or an address; None = not counted per client).
        -> (job, created). Raises ``JobRejected``, ``QueueFull``, ``IdempotencyConflict``."""
        spec = self.build_spec(request)
        with self._submit_lock:
            queued = self.store.count(JobStatus.QUEUED)
            mine = self.store.count(JobStatus.QUEUED, client=client) if client is not None else 0
            full = queued >= self.settings.max_queue or mine >= self.settings.max_queue_per_client
            if full:
                # A retry of an accepted request still gets its job, even when the queue is full now.
                earlier = self.store.find_by_idempotency_key(idempotency_key) if idempotency_key else None
                if earlier is None:
                    if queued >= self.settings.max_queue:
                        raise QueueFull(queued, self.retry_after_s)
                    raise QueueFull(mine, self.retry_after_s, per_client=True)
                record, created = earlier, False
            else:
                record, created = self.store.submit(spec, idempotency_key=idempotency_key, client=client)
        if not created and record.spec != spec:
            raise IdempotencyConflict(record.id)
        if created:
            self._wake()
        return record, created

    def cancel(self, job_id: str) -> JobRecord | None:
        """Ask the job to stop (queued: at once; running: at its next step). None if unknown."""
        record = self.store.request_cancel(job_id)
        if record is not None:
            self._wake()
        return record

    def get(self, job_id: str) -> JobRecord | None:
        return self.store.get(job_id)

    def position(self, job_id: str) -> int | None:
        return self.store.position(job_id)

    def _wake(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.wake()
