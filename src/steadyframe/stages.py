"""Names shared by every process: the stages of a job and the kinds of injectable fault."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Where in a job's life something happens, in execution order."""

    LOAD = "load"
    ENCODE_PROMPT = "encode_prompt"
    DENOISE = "denoise"
    DECODE = "decode"
    UPSCALE = "upscale"
    INTERPOLATE = "interpolate"
    ENCODE_VIDEO = "encode_video"
    SAVE = "save"


class FaultKind(StrEnum):
    """What an injected fault does (see docs/architecture.md "Fault points")."""

    OOM = "oom"
    DEVICE_ERROR = "device_error"
    ERROR = "error"
    CRASH = "crash"
    HANG = "hang"
    LEAK = "leak"
