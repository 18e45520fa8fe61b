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


# What users read for each stage (progress lines, error messages): the one table of stage words.
STAGE_WORDS: dict[Stage, str] = {
    Stage.LOAD: "loading the model",
    Stage.ENCODE_PROMPT: "encoding the prompt",
    Stage.DENOISE: "denoising",
    Stage.DECODE: "decoding frames",
    Stage.UPSCALE: "upscaling",
    Stage.INTERPOLATE: "interpolating frames",
    Stage.ENCODE_VIDEO: "encoding the video",
    Stage.SAVE: "saving the result",
}


def stage_words(stage: str | None, default: str) -> str:
    """The user-facing words for ``stage`` (a ``Stage`` value), or ``default`` when it is none of them."""
    try:
        return STAGE_WORDS[Stage(stage)] if stage else default
    except ValueError:
        return default


class FaultKind(StrEnum):
    """What an injected fault does (see docs/architecture.md "Fault points")."""

    OOM = "oom"
    DEVICE_ERROR = "device_error"
    ERROR = "error"
    CRASH = "crash"
    HANG = "hang"
    LEAK = "leak"
