"""Imported by a worker before it measures its empty baseline: the engine's lazy imports, done early.

diffusers and transformers import most of their code on first use (about 240 MB of RSS for the
CogVideoX pipelines here); left to the first job, that growth would look like a leak.
What only some jobs use is left out, so a cold start does not pay for it: spandrel (the upscaler,
0.4 s and 4 MB here) loads with the first upscaling job, within the baseline's tolerance.
"""

from __future__ import annotations

import importlib

from steadyframe.logs import get_logger

log = get_logger("worker.warmup")

MODULES = (
    "steadyframe.engine.job",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video",
    "diffusers.models.autoencoders.autoencoder_kl_cogvideox",
    "diffusers.models.transformers.cogvideox_transformer_3d",
    "diffusers.schedulers.scheduling_ddim_cogvideox",
    "diffusers.schedulers.scheduling_dpm_cogvideox",
    "transformers.models.t5.modeling_t5",
    "transformers.models.t5.tokenization_t5",
    "accelerate",
    "PIL.PngImagePlugin",
    "PIL.GifImagePlugin",
)


def _import_all() -> None:
    for name in MODULES:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a renamed module in a newer library only costs baseline accuracy
            log.warning("warm-up could not import %s: %s", name, exc)


_import_all()
