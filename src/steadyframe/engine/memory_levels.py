"""The memory-saving ladder, in one table: what each level does and where it applies.

Levels, fastest and hungriest first (every level above 0 also slices and tiles the VAE):

0 none; 1 VAE slicing + tiling; 2 fp8 weight storage for the transformer (diffusers' layerwise
casting: weights kept in float8, each layer upcast to the model dtype as it runs, the layers
diffusers lists as precision-sensitive kept in full precision); 3 model CPU offload (one whole
model on the GPU at a time); 4 group offload with CUDA streams (one transformer block at a time,
the next block's weights copied in while the current one runs); 5 sequential CPU offload (leaf by
leaf, the slowest). Offloading moves weights between host and GPU, so 3-5 mean nothing on a CPU;
a level whose device or dtype support is missing is skipped.

Importing this module does not import torch (the server describes levels in the UI).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


def _device_type(device: str) -> str:
    return device.split(":", 1)[0].strip().lower()


def _float8_available() -> bool:
    import torch

    return hasattr(torch, "float8_e4m3fn")


def _to_device(pipe: Any, device: str) -> None:
    pipe.to(device)


def _vae_tiling(pipe: Any) -> None:
    pipe.vae.enable_slicing()
    pipe.vae.enable_tiling()


def _fp8_storage(pipe: Any, device: str) -> None:
    import torch

    pipe.to(device)
    # storage float8 e4m3; compute in the dtype the transformer was loaded in. No skip pattern is
    # passed, so diffusers keeps its own list (patch embedding, norms, proj_in/out) in full precision.
    pipe.transformer.enable_layerwise_casting(storage_dtype=torch.float8_e4m3fn, compute_dtype=pipe.transformer.dtype)


def _model_offload(pipe: Any, device: str) -> None:
    pipe.enable_model_cpu_offload(device=device)


def _group_offload(pipe: Any, device: str) -> None:
    import torch

    on_gpu = _device_type(device) == "cuda"
    pipe.enable_group_offload(
        onload_device=torch.device(device),
        offload_device=torch.device("cpu"),
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=on_gpu,  # prefetch the next block on a side stream while this one computes
    )


def _sequential_offload(pipe: Any, device: str) -> None:
    pipe.enable_sequential_cpu_offload(device=device)


@dataclass(frozen=True)
class MemoryLevel:
    """One rung of the ladder: its number, words for people, where it runs, how it is applied,
    and where it leaves the weights (what the submit-time estimate counts).

    ``offloaded``: weights live in host RAM and visit the GPU; ``blocks_on_gpu`` then says how
    much of a component is there at once (None: the whole component; N: N transformer or text
    encoder blocks, the running one and the prefetched one). ``fp8_storage``: the transformer's
    weights are kept at one byte per parameter.
    """

    number: int
    name: str
    description: str
    device_types: tuple[str, ...]
    place: Callable[[Any, str], None]  # puts the (VAE-configured) pipeline on the device its way
    vae_tiling: bool = True
    fp8_storage: bool = False
    offloaded: bool = False
    blocks_on_gpu: int | None = None
    requires: Callable[[], bool] = lambda: True

    def runs_on(self, device: str) -> bool:
        return self.fits_device(device) and self.requires()

    def fits_device(self, device: str) -> bool:
        """Whether ``device``'s type can run this level, before asking torch for the level's needs."""
        return _device_type(device) in self.device_types


MEMORY_LEVELS_TABLE: tuple[MemoryLevel, ...] = (
    MemoryLevel(0, "none", "no memory saving", ("cpu", "cuda", "mps"), _to_device, vae_tiling=False),
    MemoryLevel(1, "vae_tiling", "VAE slicing and tiling", ("cpu", "cuda", "mps"), _to_device),
    MemoryLevel(
        2, "fp8_storage", "fp8 weight storage", ("cpu", "cuda"), _fp8_storage, fp8_storage=True,
        requires=_float8_available,
    ),  # fmt: skip
    MemoryLevel(3, "model_offload", "model CPU offload", ("cuda",), _model_offload, offloaded=True),
    MemoryLevel(
        4, "group_offload", "group offload with CUDA streams", ("cuda",), _group_offload, offloaded=True,
        blocks_on_gpu=2,
    ),  # fmt: skip
    MemoryLevel(
        5, "sequential_offload", "sequential CPU offload", ("cuda",), _sequential_offload, offloaded=True,
        blocks_on_gpu=1,
    ),  # fmt: skip
)
MEMORY_LEVELS: dict[int, str] = {level.number: level.description for level in MEMORY_LEVELS_TABLE}
MAX_MEMORY_LEVEL = MEMORY_LEVELS_TABLE[-1].number


def level(number: int) -> MemoryLevel:
    if number not in MEMORY_LEVELS:
        raise ValueError(f"memory level must be one of {sorted(MEMORY_LEVELS)}, got {number}")
    return MEMORY_LEVELS_TABLE[number]


def applicable_levels(device: str) -> list[int]:
    """The levels worth trying on ``device``, lowest first."""
    return [entry.number for entry in MEMORY_LEVELS_TABLE if entry.runs_on(device)]


def device_levels(device: str) -> list[int]:
    """The levels ``device``'s type can run, lowest first, without importing torch (the server's
    estimate). The one requirement it cannot see, torch's float8 for level 2, every torch this
    project allows has (pyproject: torch >= 2.6; float8_e4m3fn arrived in 2.1)."""
    return [entry.number for entry in MEMORY_LEVELS_TABLE if entry.fits_device(device)]


def effective_level(requested: int, device: str) -> int:
    """The highest applicable level not above ``requested`` (what actually runs)."""
    level(requested)  # validates
    return max(number for number in applicable_levels(device) if number <= requested)


def describe(number: int) -> str:
    return MEMORY_LEVELS[number]


def apply_memory_level(pipe: Any, number: int, device: str) -> Any:
    """Configure a freshly loaded pipeline for level ``number`` on ``device`` and return it."""
    entry = level(number)
    if entry.vae_tiling:
        _vae_tiling(pipe)
    entry.place(pipe, device)
    return pipe
