"""The ``speed`` job field: which of diffusers' step caches (and attention kernel) a job runs with.

``exact`` runs the pipeline untouched (bit-exact with a direct diffusers call). ``fast`` and
``fastest`` each enable one of diffusers' cache hooks for CogVideoX blocks for the length of one
job; the loaded model stays clean between jobs (hooks removed, cache state gone). The choice of
recipe per speed was made by measuring speed and drift (``bench/speed.py``; README "Speed").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

from steadyframe.engine.attention import CogVideoXKernelAttnProcessor, pick_kernel


@dataclass(frozen=True)
class CacheRecipe:
    """One diffusers cache configuration: a name for records, its knobs, and how to build it."""

    name: str
    config_class: str
    params: dict[str, Any]
    build: Callable[[Any, dict[str, Any], bool], Any]  # (pipe, params, cfg) -> diffusers config
    notes: str = ""


def _pab(pipe: Any, params: dict[str, Any], _cfg: bool) -> Any:
    from diffusers import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(
        spatial_attention_block_skip_range=params["block_skip_range"],
        spatial_attention_timestep_skip_range=tuple(params["timestep_skip_range"]),
        current_timestep_callback=lambda: pipe.current_timestep,
    )


def _faster_cache(pipe: Any, params: dict[str, Any], cfg: bool) -> Any:
    from diffusers import FasterCacheConfig

    return FasterCacheConfig(
        spatial_attention_block_skip_range=params["block_skip_range"],
        spatial_attention_timestep_skip_range=tuple(params["timestep_skip_range"]),
        low_frequency_weight_update_timestep_range=(99, 641),
        high_frequency_weight_update_timestep_range=(-1, 301),
        unconditional_batch_skip_range=params["uncond_skip_range"],
        unconditional_batch_timestep_skip_range=(-1, 781),
        spatial_attention_block_identifiers=("transformer_blocks",),
        attention_weight_callback=lambda _module: 0.3,
        tensor_format="BFCHW",
        is_guidance_distilled=not cfg,  # no unconditional batch to skip without guidance
        current_timestep_callback=lambda: pipe.current_timestep,
    )


def _first_block(_pipe: Any, params: dict[str, Any], _cfg: bool) -> Any:
    from diffusers import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=params["threshold"])


def _taylorseer(_pipe: Any, params: dict[str, Any], _cfg: bool) -> Any:
    import torch
    from diffusers import TaylorSeerCacheConfig

    return TaylorSeerCacheConfig(
        cache_interval=params["cache_interval"],
        disable_cache_before_step=params["warmup_steps"],
        max_order=1,
        taylor_factors_dtype=torch.float32,
        # diffusers' default patterns (``^transformer_blocks.*attn``, full match) miss CogVideoX's attn1
        cache_identifiers=[r"transformer_blocks\.\d+\.attn1", r"transformer_blocks\.\d+\.ff"],
    )


RECIPES: dict[str, CacheRecipe] = {
    recipe.name: recipe
    for recipe in (
        CacheRecipe(
            "pyramid_attention_broadcast",
            "PyramidAttentionBroadcastConfig",
            {"block_skip_range": 2, "timestep_skip_range": [100, 800]},
            _pab,
        ),
        CacheRecipe(
            "faster_cache",
            "FasterCacheConfig",
            {"block_skip_range": 2, "timestep_skip_range": [-1, 681], "uncond_skip_range": 5},
            _faster_cache,
            notes="keeps extra activations per block: more peak memory",
        ),
        CacheRecipe("first_block_cache", "FirstBlockCacheConfig", {"threshold": 0.1}, _first_block),
        CacheRecipe("taylorseer", "TaylorSeerCacheConfig", {"cache_interval": 3, "warmup_steps": 3}, _taylorseer),
    )
}

SPEED_RECIPES: dict[str, str | None] = {
    "exact": None,
    "fast": "pyramid_attention_broadcast",
    "fastest": "taylorseer",
}


@dataclass
class SpeedRecord:
    """What ran for a job's speed, as the sidecar and the result record it."""

    speed: str
    cache: str | None = None
    cache_params: dict[str, Any] = field(default_factory=dict)
    attention: str = "sdpa"

    def to_dict(self) -> dict[str, Any]:
        return {"speed": self.speed, "cache": self.cache, "cache_params": self.cache_params, "attention": self.attention}


def recipe_for(speed: str) -> CacheRecipe | None:
    if speed not in SPEED_RECIPES:
        raise ValueError(f"speed must be one of {sorted(SPEED_RECIPES)}, got {speed!r}")
    name = SPEED_RECIPES[speed]
    return RECIPES[name] if name else None


@contextmanager
def cache_enabled(pipe: Any, recipe: CacheRecipe | None, *, guidance: float) -> Iterator[None]:
    """``recipe``'s cache hooks on ``pipe.transformer`` for the block; removed (state and all) after."""
    if recipe is None:
        yield
        return
    pipe.transformer.enable_cache(recipe.build(pipe, recipe.params, guidance > 1.0))
    try:
        yield
    finally:
        pipe.transformer.disable_cache()


@contextmanager
def attention_kernel(pipe: Any, speed: str, *, allowed: bool, device: str) -> Iterator[str]:
    """Swap in a faster attention kernel for non-exact jobs when allowed and installed -> its name."""
    if speed == "exact" or not allowed:
        yield "sdpa"
        return
    choice = pick_kernel(device, pipe.transformer.dtype)
    if choice.name == "sdpa":
        yield "sdpa"
        return
    original = pipe.transformer.attn_processors
    pipe.transformer.set_attn_processor(CogVideoXKernelAttnProcessor(choice))
    try:
        yield choice.name
    finally:
        pipe.transformer.set_attn_processor(original)


@contextmanager
def speed_mode(pipe: Any, speed: str, *, guidance: float, fast_attention: bool, device: str) -> Iterator[SpeedRecord]:
    """Everything ``speed`` changes on a loaded pipeline, for one job; all of it undone afterwards."""
    recipe = recipe_for(speed)
    record = SpeedRecord(speed, recipe.name if recipe else None, dict(recipe.params) if recipe else {})
    with cache_enabled(pipe, recipe, guidance=guidance), attention_kernel(
        pipe, speed, allowed=fast_attention, device=device
    ) as kernel:
        record.attention = kernel
        yield record
