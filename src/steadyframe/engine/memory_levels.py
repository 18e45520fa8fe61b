"""The memory-saving ladder, in one place: what each level does and where it applies.

0 none; 1 VAE slicing + tiling; 2 model CPU offload (with 1); 3 sequential CPU offload (with 1).
Offloading moves weights between host and GPU, so levels 2 and 3 mean nothing on a CPU.
"""

from __future__ import annotations

from typing import Any

MEMORY_LEVELS: dict[int, str] = {
    0: "no memory saving",
    1: "VAE slicing and tiling",
    2: "model CPU offload",
    3: "sequential CPU offload",
}


def applicable_levels(device: str) -> list[int]:
    """The levels worth trying on ``device``, lowest first."""
    return [0, 1] if not device.startswith("cuda") else [0, 1, 2, 3]


def effective_level(requested: int, device: str) -> int:
    """The highest applicable level not above ``requested`` (what actually runs)."""
    if requested not in MEMORY_LEVELS:
        raise ValueError(f"memory level must be one of {sorted(MEMORY_LEVELS)}, got {requested}")
    return max(level for level in applicable_levels(device) if level <= requested)


def describe(level: int) -> str:
    return MEMORY_LEVELS[level]


def apply_memory_level(pipe: Any, level: int, device: str) -> Any:
    """Configure a freshly loaded pipeline for ``level`` on ``device`` and return it."""
    if level >= 1:
        pipe.vae.enable_slicing()
        pipe.vae.enable_tiling()
    if level == 2:
        pipe.enable_model_cpu_offload(device=device)
    elif level == 3:
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    return pipe
