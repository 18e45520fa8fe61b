"""The one place that turns any failure into an error kind, a user message and advice.

``classify(exc, stage)`` recognises torch/CUDA errors by type name and message text, so this
module never imports torch and the server can use it. ``describe(kind, stage)`` gives the text
for failures that are not exceptions (a hang, a dead worker). User text never holds a path.
"""

from __future__ import annotations

import errno
import re
import secrets
from dataclasses import dataclass

from steadyframe.errors import ErrorKind, SteadyframeError
from steadyframe.stages import STAGE_WORDS, Stage


@dataclass(frozen=True)
class ClassifiedError:
    """What a user is told: the kind, a plain-language message and one line of advice."""

    kind: ErrorKind
    message: str
    advice: str

    @property
    def sticky(self) -> bool:
        """True when the process that raised it cannot be trusted any more (recycle it)."""
        return self.kind == ErrorKind.DEVICE_ERROR


# --- text tables ------------------------------------------------------------------------------

_MESSAGES: dict[ErrorKind, str] = {
    ErrorKind.OUT_OF_MEMORY: "The job ran out of memory",
    ErrorKind.DEVICE_ERROR: "The GPU reported an unrecoverable error",
    ErrorKind.INVALID_INPUT: "The job's input is not usable",
    ErrorKind.MODEL_UNAVAILABLE: "A model needed by the job could not be loaded",
    ErrorKind.CANCELLED: "The job was cancelled",
    ErrorKind.TIMEOUT: "The job took too long and was stopped",
    ErrorKind.WORKER_LOST: "The worker process running the job stopped unexpectedly",
    ErrorKind.INTERNAL: "The job failed because of an internal error",
    ErrorKind.DISK_FULL: "The disk holding the server's data folder is full",
}

_ADVICE: dict[ErrorKind, str] = {
    ErrorKind.OUT_OF_MEMORY: "Try fewer frames, a lower resolution, or turn off upscaling and interpolation.",
    ErrorKind.DEVICE_ERROR: "The worker was restarted on a fresh GPU context; submit the job again. "
    "If it keeps happening, check the GPU driver and temperature.",
    ErrorKind.INVALID_INPUT: "Check the prompt, the input file and the settings, then submit again.",
    ErrorKind.MODEL_UNAVAILABLE: "Check that the model name or weight file is right and readable, "
    "or download it into the models folder.",
    ErrorKind.CANCELLED: "Submit the job again whenever you like.",
    ErrorKind.TIMEOUT: "Try fewer steps or frames; the server stops jobs that stop making progress.",
    ErrorKind.WORKER_LOST: "Submit the job again; if it fails the same way, try fewer frames or a lower "
    "resolution (the system may have run out of RAM).",
    ErrorKind.INTERNAL: "Submit the job again; if it fails again, report the error id to the administrator.",
    ErrorKind.DISK_FULL: "Free some space in the data folder (delete old jobs or outputs), then submit the job again; "
    "nothing half-written was kept.",
}

# Stage-specific advice where a better hint exists than the kind's default.
_STAGE_ADVICE: dict[tuple[ErrorKind, Stage], str] = {
    (ErrorKind.OUT_OF_MEMORY, Stage.LOAD): "The model does not fit in memory: close other GPU programs, "
    "or use a smaller model.",
    (ErrorKind.OUT_OF_MEMORY, Stage.DENOISE): "Try fewer frames or a lower resolution.",
    (ErrorKind.OUT_OF_MEMORY, Stage.DECODE): "Try fewer frames or a lower resolution.",
    (ErrorKind.OUT_OF_MEMORY, Stage.UPSCALE): "Turn off upscaling or use 2x instead of 4x.",
    (ErrorKind.OUT_OF_MEMORY, Stage.INTERPOLATE): "Turn off frame interpolation or use 2x instead of 4x.",
    (ErrorKind.OUT_OF_MEMORY, Stage.ENCODE_VIDEO): "Try fewer frames, or turn off upscaling and interpolation.",
    (ErrorKind.TIMEOUT, Stage.LOAD): "Loading the model made no progress; check the disk and the model files.",
}


# --- recognisers (type names and message fragments, lower-case) -------------------------------

_OOM_TYPES = {"OutOfMemoryError", "MemoryError"}
_OOM_TEXT = (
    "out of memory",
    "cudnn_status_alloc_failed",
    "cublas_status_alloc_failed",
    "cusolver_status_alloc_failed",
    "can't allocate memory",
    "cannot allocate memory",
    "failed to allocate",
)
_DEVICE_TEXT = (
    "illegal memory access",
    "device-side assert",
    "unspecified launch failure",
    "cublas_status_execution_failed",
    "cudnn_status_execution_failed",
    "cudnn_status_mapping_error",
    "misaligned address",
    "illegal instruction",
    "cuda error",
    "an uncorrectable ecc error",
    "hardware stop",
)
_DEVICE_TYPES = {"AcceleratorError"}
_MODEL_TYPES = {
    "RepositoryNotFoundError",
    "LocalEntryNotFoundError",
    "EntryNotFoundError",
    "GatedRepoError",
    "RevisionNotFoundError",
    "SafetensorError",
    "UnpicklingError",
}
_MODEL_TEXT = (
    "does not appear to have a file",
    "can't load",
    "no such file",
    "error while deserializing",
    "headertoolarge",
    "not a valid model",
    "unsupported model",
)
_INPUT_TYPES = {"ValidationError", "UnidentifiedImageError", "DecompressionBombError", "InvalidDataError"}

# An absolute path: starts a word (not "3/4"), optional drive letter, one or more /segments.
_PATH_RE = re.compile(r"(?<![\w.])(?:[A-Za-z]:)?(?:[\\/][^\s\\/'\"`:,;()\[\]{}]+)+[\\/]?")


def _type_names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def scrub_paths(text: str) -> str:
    """Replace every absolute path in ``text`` by its last component (``/a/b/c.pth`` -> ``c.pth``)."""

    def _last(match: re.Match[str]) -> str:
        parts = [p for p in re.split(r"[\\/]", match.group(0)) if p]
        return parts[-1] if parts else ""

    return _PATH_RE.sub(_last, text)


def _short(exc: BaseException, limit: int = 200) -> str:
    """The exception's first line, paths scrubbed, shortened: a safe hint for users."""
    first = (str(exc).strip().splitlines() or [""])[0]
    first = scrub_paths(first)
    return first if len(first) <= limit else first[: limit - 1] + "…"


_DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_DISK_FULL_TEXT = ("no space left on device", "disk quota exceeded", "database or disk is full")


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc`` (or an exception it was raised from) is a write refused for lack of space.

    The one place that recognises a full disk: OSError errno ENOSPC/EDQUOT (PyAV's errors carry the
    errno too), or the words SQLite and FFmpeg use for it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if getattr(current, "errno", None) in _DISK_FULL_ERRNOS:
            return True
        if any(t in str(current).lower() for t in _DISK_FULL_TEXT):
            return True
        current = current.__cause__ or current.__context__
    return False


def kind_of(exc: BaseException, stage: Stage | str | None = None) -> ErrorKind:
    """The error kind of ``exc`` (see docs/architecture.md "Error kinds")."""
    if isinstance(exc, SteadyframeError):
        return exc.kind
    if is_disk_full(exc):
        return ErrorKind.DISK_FULL
    names = _type_names(exc)
    text = str(exc).lower()
    if names & _OOM_TYPES or any(t in text for t in _OOM_TEXT):
        return ErrorKind.OUT_OF_MEMORY
    if names & _DEVICE_TYPES or any(t in text for t in _DEVICE_TEXT):
        return ErrorKind.DEVICE_ERROR
    if names & _MODEL_TYPES:
        return ErrorKind.MODEL_UNAVAILABLE
    if _as_stage(stage) == Stage.LOAD and (
        isinstance(exc, (OSError, EOFError)) or any(t in text for t in _MODEL_TEXT)
    ):
        return ErrorKind.MODEL_UNAVAILABLE
    if names & _INPUT_TYPES:
        return ErrorKind.INVALID_INPUT
    if isinstance(exc, (TimeoutError,)):
        return ErrorKind.TIMEOUT
    return ErrorKind.INTERNAL


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an out-of-memory (host or device), as ``kind_of`` judges it."""
    return kind_of(exc) == ErrorKind.OUT_OF_MEMORY


def _as_stage(stage: Stage | str | None) -> Stage | None:
    if stage is None or isinstance(stage, Stage):
        return stage
    try:
        return Stage(stage)
    except ValueError:
        return None


def describe(kind: ErrorKind, stage: Stage | str | None = None, detail: str | None = None) -> ClassifiedError:
    """The table text for ``kind`` (and ``stage``), with an optional path-free ``detail`` appended."""
    known = _as_stage(stage)
    message = _MESSAGES[kind]
    if known is not None and kind not in (ErrorKind.INVALID_INPUT, ErrorKind.CANCELLED):
        message += f" while {STAGE_WORDS[known]}"
    message += "."
    if detail:
        message += f" {scrub_paths(detail).strip()}"
    advice = _STAGE_ADVICE.get((kind, known), _ADVICE[kind]) if known is not None else _ADVICE[kind]
    return ClassifiedError(kind=kind, message=message, advice=advice)


def classify(exc: BaseException, stage: Stage | str | None = None) -> ClassifiedError:
    """Kind, user message and advice for any exception raised while a job ran ``stage``."""
    if isinstance(exc, SteadyframeError):
        # Raised on purpose with user-ready text; still scrub in case a path slipped in.
        base = describe(exc.kind, stage)
        return ClassifiedError(kind=exc.kind, message=scrub_paths(exc.message), advice=exc.advice or base.advice)
    kind = kind_of(exc, stage)
    detail = None
    if kind in (ErrorKind.INTERNAL, ErrorKind.MODEL_UNAVAILABLE, ErrorKind.INVALID_INPUT):
        # The library's own words help here; for OOM/device errors they are noise.
        hint = _short(exc)
        detail = f"({type(exc).__name__}: {hint})" if hint else f"({type(exc).__name__})"
    return describe(kind, stage, detail)


def new_error_id() -> str:
    """A short unique id shown to the user and written with the traceback in the log."""
    return "err-" + secrets.token_hex(5)


def user_text(message: str, advice: str, error_id: str) -> str:
    """The one line users see: message, advice and the error id to quote."""
    return f"{message} {advice} (error id {error_id})"
