"""The one way jobs enter and leave the server: used by the REST API and the Gradio UI alike.

It validates a request (limits, uploads, fault permission), builds the ``JobSpec`` the worker
runs, enforces the queue cap, talks to the job store and wakes the dispatcher.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from steadyframe.capacity import Capacity, machine_capacity
from steadyframe.catalog import CatalogEntry, NotInCatalog, api_entry, entry_ref, entry_state
from steadyframe.engine.plan import plan_job
from steadyframe.estimate import JobEstimate, JobShape, estimate_job, estimate_plan, fit_problem
from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.jobs.base import JobRecord, JobStatus, JobStore
from steadyframe.pull import PullFailed
from steadyframe.server.pulls import CannotPull, PullManager
from steadyframe.server.schemas import JobCreate
from steadyframe.server.uploads import UploadStore
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec, Mode


class Wakeable(Protocol):
    def wake(self) -> None: ...


@dataclass
class JobRejected(Exception):
    """The request cannot become a job; ``errors`` holds field errors (FastAPI's 422 shape)."""

    message: str
    advice: str
    errors: list[dict[str, Any]] = field(default_factory=list)
    # 422: the job is wrong for this server; 507: its frames do not fit the disk's free space now
    status: int = 422

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


@dataclass(frozen=True)
class PreparedJob:
    """A request that may be queued: the stored spec and the resources it was estimated to need."""

    spec: dict[str, Any]
    estimate: JobEstimate
    capacity: Capacity


def _field_error(loc: str, message: str, kind: str = "value_error") -> dict[str, Any]:
    return {"loc": ["body", loc], "msg": message, "type": kind}


class JobService:
    """Submit, cancel and look up jobs; thread-safe (one lock keeps the queue cap exact)."""

    # A client told to retry waits this long: about one short job on the built-in model.
    retry_after_s = 5

    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        uploads: UploadStore,
        dispatcher: Wakeable | None,
        pulls: PullManager | None = None,
        capacity: Callable[[], Capacity] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.uploads = uploads
        self.dispatcher = dispatcher
        self.pulls = pulls
        # What one job may use, read at each submit (free disk changes; the GPU's size is cached).
        self.capacity = capacity or (lambda: machine_capacity(settings))
        self._submit_lock = threading.Lock()

    def prepare(self, request: JobCreate, *, check_fit: bool = True) -> PreparedJob:
        """The stored spec for ``request`` and its estimate, or ``JobRejected`` (with field errors,
        or, with ``check_fit``, the numbers when it cannot fit this machine even at the highest
        memory level)."""
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
        try:
            api_entry(request.model, self.settings, request.mode)  # catalog names only: no paths, no repo ids
        except NotInCatalog as exc:
            errors.append(_field_error("model", exc.message))
            if len(errors) == 1:
                raise JobRejected(exc.message, exc.advice or "", errors) from None
        if errors:
            raise JobRejected(errors[0]["msg"], "Fix the fields listed and send the job again.", errors)
        try:
            spec = JobSpec(**fields)
        except ValidationError as exc:
            details = [
                {"loc": ["body", *[str(p) for p in e["loc"]]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise JobRejected(details[0]["msg"], "Fix the fields listed and send the job again.", details) from None
        estimate, capacity = self._check_against_model(spec)
        if check_fit:
            self._refuse_if_too_big(estimate, capacity)
        return PreparedJob(spec.model_dump(mode="json"), estimate, capacity)

    def _check_against_model(self, spec: JobSpec) -> tuple[JobEstimate, Capacity]:
        """Reject now what the worker would reject (family rules, inputs, weight files): nothing is
        queued. -> the job's estimate and what this machine can give it."""
        try:
            plan = plan_job(spec, self.settings)
        except (InvalidInputError, ModelUnavailableError) as exc:
            detail = [{"loc": ["body"], "msg": exc.message, "type": exc.kind.value}]
            raise JobRejected(exc.message, exc.advice or "Fix the job and send it again.", detail) from None
        capacity = self.capacity()
        return estimate_plan(plan, self.settings, capacity.device_type), capacity

    @staticmethod
    def _refuse_if_too_big(estimate: JobEstimate, capacity: Capacity) -> None:
        problem = fit_problem(estimate, capacity)
        if problem is not None:
            detail = [{"loc": ["body"], "msg": problem.message, "type": f"too_large_{problem.resource}"}]
            # Free disk comes and goes (the API answers a full disk with 507 everywhere); a job over
            # the operator's disk cap, or over RAM or GPU memory, cannot fit this machine: 422.
            short_now = problem.resource == "disk" and capacity.disk is not None and capacity.disk.source == "machine"
            raise JobRejected(problem.message, problem.advice, detail, status=507 if short_now else 422)

    def estimate_form(
        self, model: str | None, mode: Mode, num_frames: int | None, upscale: int, interpolate: int
    ) -> JobEstimate:
        """The estimate for the UI's form values (no prompt or input file needed yet): the model's
        default size, ``num_frames`` (None = its default). Raises JobRejected like a submit would."""
        try:
            entry = api_entry(model, self.settings, mode)
            frames = num_frames or entry.family.default_frames_for(mode)
            entry.family.check_frames(frames, mode)
        except InvalidInputError as exc:
            raise JobRejected(exc.message, exc.advice or "", [_field_error("num_frames", exc.message)]) from None
        family = entry.family
        shape = JobShape(family, frames, family.default_width, family.default_height, upscale, interpolate)
        capacity = self.capacity()
        estimate = estimate_job(shape, entry_ref(entry, self.settings), self.settings, capacity.device_type)
        self._refuse_if_too_big(estimate, capacity)
        return estimate

    def _model_wait(self, request: JobCreate) -> str | None:
        """The catalog name the job must wait for (its pull started or joined), or None when the
        model is here. Raises JobRejected when it is absent and cannot be pulled now."""
        entry = api_entry(request.model, self.settings, request.mode)
        if entry_state(entry, self.settings).state == "present":
            return None
        if self.pulls is not None and self.pulls.active(entry.name):
            return entry.name
        if self.pulls is None or not self.settings.auto_pull:
            raise self._absent(entry, "")
        try:
            self.pulls.start(entry)
        except CannotPull as exc:
            raise self._absent(entry, exc.message + " ") from None
        except PullFailed as exc:
            raise self._absent(entry, exc.message + " ") from None
        return entry.name

    @staticmethod
    def _absent(entry: CatalogEntry, why: str) -> JobRejected:
        message = f"The model {entry.name} is not downloaded. {why}".strip()
        advice = f"Run `{entry.pull_command}` on the server (or POST /v1/models/{entry.name}/pull), then send the job again."
        return JobRejected(message, advice, [_field_error("model", message, "model_unavailable")])

    def submit(
        self, request: JobCreate, *, idempotency_key: str | None = None, client: str | None = None
    ) -> tuple[JobRecord, bool]:
        """Queue ``request`` for ``client`` (a token hash or an address; None = not counted per client).
        -> (job, created). Raises ``JobRejected``, ``QueueFull``, ``IdempotencyConflict``.
        A job for a catalog model that is not downloaded waits in the queue for its pull."""
        prepared = self.prepare(request, check_fit=False)
        spec = prepared.spec
        earlier = self.store.find_by_idempotency_key(idempotency_key) if idempotency_key else None
        if earlier is None:  # a retry of an accepted request gets its job, even if the disk filled since
            self._refuse_if_too_big(prepared.estimate, prepared.capacity)
        waiting_for = self._model_wait(request) if earlier is None else None
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
                record, created = self.store.submit(
                    spec,
                    idempotency_key=idempotency_key,
                    client=client,
                    waiting_for=waiting_for,
                    estimate=prepared.estimate.to_dict(),
                )
        if not created and record.spec != spec:
            raise IdempotencyConflict(record.id)
        if created and waiting_for is not None and self.pulls is not None:
            self.pulls.settle(waiting_for)  # the pull may have ended while the job was being stored
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
