"""Find a model's weights on disk (build or find them) and load its diffusers pipeline.

Every pipeline, built-in tiny ones included, is loaded through ``from_pretrained`` with the
family's dtype and scheduler (trailing timestep spacing), then set to a memory-saving level.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from steadyframe.engine.memory_levels import apply_memory_level
from steadyframe.engine.tiny_models import ensure_tiny_model
from steadyframe.errors import ModelUnavailableError
from steadyframe.families import Family, ModelRef
from steadyframe.model_files import weights_bytes
from steadyframe.settings import Settings

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def torch_dtype(family: Family, device: str) -> torch.dtype:
    """The family's dtype on ``device`` (the rule is ``Family.dtype_on``: the estimate reads it too)."""
    return _DTYPES[family.dtype_on(device)]


def locate_weights(ref: ModelRef, settings: Settings) -> Path:
    """The folder holding ``ref``'s diffusers files: built (tiny) or found. Never downloads: weights
    arrive by a pull in the server or the CLI (``steadyframe pull``), so no job waits on a network."""
    _quiet_library_progress()
    if ref.build_tiny:
        assert ref.local_dir is not None
        return ensure_tiny_model(ref.family, ref.local_dir)
    if ref.local_dir is not None:
        return ref.local_dir
    raise ModelUnavailableError(
        f"The model {ref.source} is not downloaded.",
        advice=f"Run `steadyframe pull {ref.source}` on the server, then send the job again.",
    )


@lru_cache(maxsize=8)
def load_tokenizer(folder: Path) -> Any:
    """The pipeline's tokenizer alone: cheap enough to check prompt lengths before loading models."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder / "tokenizer")


def count_tokens(tokenizer: Any, text: str) -> int:
    """Tokens the text encoder would see for ``text``, end token included (no truncation)."""
    return len(tokenizer(text, add_special_tokens=True, truncation=False).input_ids)


def pipeline_class(ref: ModelRef, mode: str) -> type:
    """The diffusers pipeline class for a job ``mode`` on this model."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline, CogVideoXVideoToVideoPipeline

    if ref.family.task == "i2v":
        return CogVideoXImageToVideoPipeline
    return CogVideoXVideoToVideoPipeline if mode == "v2v" else CogVideoXPipeline


def load_pipeline(ref: ModelRef, folder: Path, *, mode: str, device: str, memory_level: int) -> Any:
    """Load ``folder`` as the pipeline for ``mode`` with the family's dtype and scheduler on ``device``."""
    from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler

    family = ref.family
    cls = pipeline_class(ref, mode)
    _quiet_library_progress()
    failure = None
    try:
        pipe = cls.from_pretrained(folder, dtype=torch_dtype(family, device))
    except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:  # missing/damaged files
        failure = f"{type(exc).__name__}: {exc}"
    if failure is not None:
        # raised outside the except block so the failed load's frames are not kept alive
        log.warning("loading %s failed: %s", ref.source, failure)
        raise ModelUnavailableError(
            f"The model {family.name} could not be loaded: its files are incomplete or damaged.",
            advice=f"Pull it again: `steadyframe pull {ref.source}`." if ref.repo_id else "Copy the model folder again.",
        )
    scheduler_cls = CogVideoXDDIMScheduler if family.scheduler == "ddim" else CogVideoXDPMScheduler
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    pipe.set_progress_bar_config(disable=True)  # progress goes through the job hooks
    return apply_memory_level(pipe, memory_level, device)


def _quiet_library_progress() -> None:
    """Loading bars from diffusers/transformers would interleave with the job's own progress."""
    import diffusers.utils.logging as diffusers_logging
    import transformers.utils.logging as transformers_logging

    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()


def weights_size_mb(folder: Path) -> float:
    """Size of the weight files on disk, a hint for the model manager's memory budget."""
    return weights_bytes(folder) / 2**20
