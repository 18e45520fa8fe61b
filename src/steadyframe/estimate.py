"""The submit-time resource estimate of one job: host RAM, GPU memory and disk, per memory level.

No torch: the server computes it from a validated ``JobPlan`` (or the UI's form values) before
anything is queued. It is a model of what takes memory, not a measurement; each term and what
it is derived from:

- **weights** per component (transformer, T5 text encoder, VAE) at the dtype they load in on the
  device (``Family.dtype_on``): the weight files' bytes when the model folder is on disk (files
  hold the family's own dtype), else ``families.ModelSizes`` × bytes per element. fp8 storage
  (level 2) keeps the transformer at one byte per parameter.
- **load**: ``from_pretrained`` reads every component into host RAM before the pipeline is put
  on its device, so RAM holds all weights once at every level.
- **placement**: levels 0-2 on a GPU hold all weights in VRAM; 3 (model offload) keeps them in
  RAM with the running component in VRAM; 4 (group offload) two blocks of it (the one running,
  the next prefetched); 5 (sequential offload) one. Read from the ladder's own table
  (``MemoryLevel.offloaded``, ``.blocks_on_gpu``, ``.fp8_storage``, ``.vae_tiling``).
  On a CPU (and MPS, unified memory) all is RAM.
- **denoise**: the widest moment of one transformer block over the batch (2 with classifier-free
  guidance): tokens × hidden size × 10 elements (the feed-forward's 4× intermediate; q, k, v and
  the attention output; the residual and its norm). Attention runs in a memory-efficient kernel,
  linear in tokens. Tokens: latent frames / temporal patch × (H/16) × (W/16) + 226 text tokens;
  latent frames: (F - 1) / 4 + 1.
- **decode**: the VAE decodes two latent frames (8 frames) at a time; its widest layer has 128
  channels at the output resolution, 3 such tensors alive (VAE tiling, levels >= 1, bounds that
  resolution to 720×480 tiles). The clip then sits on the device (3 × F × H × W in the model
  dtype) and on the host as float32 frames, their float32 rounding copy and the uint8 clip.
- **post-processing**: frames stream through files, so RAM holds one frame in and out (and their
  float copies on a CPU) plus the network: its weight file and one tile's activations. Upscaling:
  the upscaler's own rule (widest conv 64 channels at 4×4 the input pixels, 3 alive; a 384-px tile
  on a CPU, a whole frame on a GPU). RIFE: about 64 elements per output pixel (a rough figure).
- **disk**: the latents, plus the largest of: two consecutive stage files (``decode.npy``,
  ``upscale.npy``, ``interpolate.npy``; a stage's input is deleted once its output is complete),
  or the last one with the MP4 (frames × W × H × 3 / 50, generous for crf 18) and the GIF preview.
- **baseline**: a worker with torch and diffusers imported, about 900 MB RSS (773 MB after its
  imports, docs/architecture.md; 798-835 MB as a job starts, tests/resilience/test_bounded_memory.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from steadyframe.capacity import Capacity, DeviceType, Figure
from steadyframe.engine.memory_levels import describe, device_levels
from steadyframe.engine.memory_levels import level as memory_level
from steadyframe.engine.plan import MAX_PROMPT_TOKENS, JobPlan
from steadyframe.families import DtypeName, Family, ModelRef, builtin_dir
from steadyframe.model_files import weights_bytes
from steadyframe.postprocess.plan import interpolated_frame_count, sr_bytes_per_pixel, sr_max_tile_side
from steadyframe.settings import Settings
from steadyframe.video_io import GIF_MAX_FPS, GIF_MAX_SIDE

_MB = 2**20
_GB = 2**30
_ELEMENT_BYTES: dict[DtypeName, int] = {"float16": 2, "bfloat16": 2, "float32": 4}
_COMPONENTS = ("transformer", "text_encoder", "vae")

WORKER_BASELINE_MB = 900.0  # a worker's RSS with torch + diffusers imported (see the docstring's baseline)
LATENT_CHANNELS = 16
VAE_SPATIAL = 8  # pixels per latent pixel side
VAE_TEMPORAL = 4  # frames per latent frame
BLOCK_ELEMENTS_PER_TOKEN = 10  # × hidden size: FF 4x, q/k/v/out 4x, residual + norm 2x
VAE_WIDEST_CHANNELS = 128  # the decoder's last up block, at the output resolution
VAE_FRAMES_PER_PASS = 8  # two latent frames decoded at a time
VAE_LIVE_TENSORS = 3
VAE_TILE = (480, 720)  # diffusers' CogVideoX VAE tile (sample height, width)
HOST_FRAME_COPIES_BYTES = 4 + 4 + 1  # float32 frames, float32 rounding copy, uint8 clip
SR_WIDEST_CHANNELS, SR_NATIVE_SCALE = 64, 4  # the Real-ESRGAN family's widest conv and usual scale
RIFE_ELEMENTS_PER_PIXEL = 64  # rough: inputs, warped frames, flows, masks, IFNet features
MP4_BYTES_DIVISOR = 50  # raw RGB bytes / this: generous for H.264 at crf 18
LATENT_CHECKPOINT_BYTES = 4  # the saved latents, float32 at most


@dataclass(frozen=True)
class JobShape:
    """What decides a job's memory: its model family and sizes."""

    family: Family
    frames: int
    width: int
    height: int
    upscale: int = 1
    interpolate: int = 1
    guidance: bool = True  # classifier-free guidance doubles the denoise batch

    @classmethod
    def of_plan(cls, plan: JobPlan) -> JobShape:
        return cls(
            plan.family, plan.num_frames, plan.width, plan.height, plan.spec.upscale, plan.spec.interpolate,
            guidance=plan.guidance > 1.0,
        )  # fmt: skip

    @property
    def out_frames(self) -> int:
        return interpolated_frame_count(self.frames, self.interpolate)

    @property
    def out_pixels(self) -> int:
        return self.width * self.height * self.upscale**2


@dataclass(frozen=True)
class Weights:
    """Bytes of each pipeline component at the dtype it loads in, plus the post networks' files."""

    transformer: int
    text_encoder: int
    vae: int
    source: Literal["files", "family figure"]
    upscaler: int = 0
    rife: int = 0

    @property
    def pipeline(self) -> int:
        return self.transformer + self.text_encoder + self.vae


@dataclass(frozen=True)
class LevelEstimate:
    """What a job needs at one memory level, in MB (VRAM None: no GPU on this device)."""

    level: int
    description: str
    ram_mb: float
    vram_mb: float | None


@dataclass(frozen=True)
class JobEstimate:
    """A job's needs at every memory level its device can use, and at the highest one (the least)."""

    device_type: DeviceType
    level: int
    ram_mb: float
    vram_mb: float | None
    disk_mb: float
    weights_mb: float
    weights_source: str
    levels: tuple[LevelEstimate, ...]
    shape: JobShape
    weights: Weights

    def to_dict(self) -> dict[str, Any]:
        """The JSON kept with the job and shown by the API (what ``EstimateView`` reads)."""
        return {
            "device": self.device_type,
            "level": self.level,
            "ram_mb": self.ram_mb,
            "vram_mb": self.vram_mb,
            "disk_mb": self.disk_mb,
            "weights_mb": self.weights_mb,
            "weights_source": self.weights_source,
            "levels": [
                {"level": e.level, "description": e.description, "ram_mb": e.ram_mb, "vram_mb": e.vram_mb}
                for e in self.levels
            ],
        }


# --- weights -------------------------------------------------------------------------------


def _file_bytes(path: Path | None) -> int:
    try:
        return path.stat().st_size if path is not None else 0
    except OSError:
        return 0


def model_folder(ref: ModelRef, settings: Settings) -> Path | None:
    """The folder holding ``ref``'s files when they are on disk (a tiny model once built)."""
    if ref.local_dir is not None and ref.local_dir.is_dir():
        return ref.local_dir
    if ref.build_tiny:
        folder = builtin_dir(ref.family, settings)
        return folder if folder.is_dir() else None
    return None


def pipeline_weights(family: Family, folder: Path | None, device: DeviceType) -> Weights:
    """Component bytes at the dtype they load in on ``device``: from the files in ``folder`` when
    they are there (holding the family's dtype), else from the family's parameter counts."""
    element = _ELEMENT_BYTES[family.dtype_on(device)]
    if folder is not None:
        on_disk = {c: weights_bytes(folder / c) for c in _COMPONENTS}
        if all(on_disk.values()):
            ratio = element / _ELEMENT_BYTES[family.dtype]
            sized = {c: int(b * ratio) for c, b in on_disk.items()}
            return Weights(sized["transformer"], sized["text_encoder"], sized["vae"], "files")
    sizes = family.sizes
    return Weights(
        sizes.transformer_params * element, sizes.text_encoder_params * element, sizes.vae_params * element,
        "family figure",
    )  # fmt: skip


# --- per level -----------------------------------------------------------------------------


def _latent_frames(shape: JobShape) -> int:
    frames = (shape.frames - 1) // VAE_TEMPORAL + 1
    patch_t = shape.family.sizes.patch_size_t
    return frames + (-frames % patch_t)  # 1.5 models pad to whole temporal patches


def _denoise_activations(shape: JobShape, element: int) -> float:
    sizes = shape.family.sizes
    side = VAE_SPATIAL * sizes.patch_size
    tokens = _latent_frames(shape) // sizes.patch_size_t * (shape.height // side) * (shape.width // side)
    batch = 2 if shape.guidance else 1
    latents = batch * _latent_frames(shape) * LATENT_CHANNELS * (shape.height // 8) * (shape.width // 8) * element
    return batch * (tokens + MAX_PROMPT_TOKENS) * sizes.hidden_size * BLOCK_ELEMENTS_PER_TOKEN * element + latents


def _decode_device_bytes(shape: JobShape, element: int, tiled: bool) -> float:
    height, width = (min(shape.height, VAE_TILE[0]), min(shape.width, VAE_TILE[1])) if tiled else (shape.height, shape.width)
    widest = VAE_WIDEST_CHANNELS * min(shape.frames, VAE_FRAMES_PER_PASS) * height * width * element * VAE_LIVE_TENSORS
    return widest + 3 * shape.frames * shape.height * shape.width * element


def _decode_host_bytes(shape: JobShape) -> float:
    return shape.frames * shape.height * shape.width * 3 * HOST_FRAME_COPIES_BYTES


def _post_bytes(shape: JobShape, weights: Weights, device: DeviceType) -> tuple[float, float]:
    """(host, device) bytes of the larger post stage beyond the loaded pipeline; 0 when none runs."""
    element = 2 if device == "cuda" else 4  # the networks run in half precision on CUDA
    in_pixels = shape.width * shape.height
    out_pixels = shape.out_pixels
    stages: list[tuple[float, float]] = []
    if shape.upscale > 1:
        tile_side = sr_max_tile_side(device)
        tile = min(shape.width, tile_side) * min(shape.height, tile_side)
        network = weights.upscaler + sr_bytes_per_pixel(SR_WIDEST_CHANNELS, SR_NATIVE_SCALE, element) * tile
        tensors = 3 * (in_pixels + out_pixels) * element  # the frame in and out as network tensors
        frames = 3 * (in_pixels + out_pixels)  # uint8, read from and written to the frame files
        stages.append((frames, network + tensors))
    if shape.interpolate > 1:
        network = weights.rife + RIFE_ELEMENTS_PER_PIXEL * element * out_pixels
        frames = 3 * 3 * out_pixels  # two input frames and the one being written
        stages.append((frames, network))
    host, on_device = max(stages, key=lambda s: s[0] + s[1], default=(0.0, 0.0))
    if device != "cuda":
        return host + on_device, 0.0
    return host, on_device


def _level_needs(shape: JobShape, weights: Weights, device: DeviceType, level: int) -> tuple[float, float | None]:
    """(RAM, VRAM) bytes at ``level``: the worst phase of load, encode, denoise, decode, post."""
    element = _ELEMENT_BYTES[shape.family.dtype_on(device)]
    sizes = shape.family.sizes
    rung = memory_level(level)
    transformer = weights.transformer // element if rung.fp8_storage else weights.transformer  # 1 byte a parameter
    resident = transformer + weights.text_encoder + weights.vae
    denoise = _denoise_activations(shape, element)
    decode_device = _decode_device_bytes(shape, element, tiled=rung.vae_tiling)
    decode_host = _decode_host_bytes(shape)
    post_host, post_device = _post_bytes(shape, weights, device)
    load = weights.pipeline
    if device != "cuda":  # the CPU (and MPS, unified memory): every byte is host RAM
        working = max(denoise, decode_device + decode_host, post_host)
        return max(load, resident + working), None
    if not rung.offloaded:
        ram_resident, vram_resident = 0, resident
        on = {"encode": 0.0, "denoise": 0.0, "decode": 0.0}
    else:
        ram_resident, vram_resident = resident, 0
        blocks = rung.blocks_on_gpu
        if blocks is None:
            on = {"encode": weights.text_encoder, "denoise": transformer, "decode": weights.vae}
        else:
            on = {
                "encode": weights.text_encoder * blocks / sizes.text_encoder_layers,
                "denoise": transformer * blocks / sizes.num_layers,
                "decode": weights.vae,  # small: counted whole
            }
    ram = max(load, ram_resident + max(decode_host, post_host))
    vram = vram_resident + max(on["encode"], on["denoise"] + denoise, on["decode"] + decode_device, post_device)
    return ram, vram


# --- disk ----------------------------------------------------------------------------------


def disk_bytes(shape: JobShape) -> float:
    """Peak bytes in the job's folder (see the module docstring)."""
    pixels = shape.width * shape.height
    latents = _latent_frames(shape) * LATENT_CHANNELS * pixels // VAE_SPATIAL**2 * LATENT_CHECKPOINT_BYTES
    files = [shape.frames * pixels * 3]
    if shape.upscale > 1:
        files.append(shape.frames * shape.out_pixels * 3)
    if shape.interpolate > 1:
        files.append(shape.out_frames * shape.out_pixels * 3)
    mp4 = shape.out_frames * shape.out_pixels * 3 / MP4_BYTES_DIVISOR
    fps = shape.family.fps * shape.interpolate
    gif_frames = math.ceil(shape.out_frames / max(1, round(fps / GIF_MAX_FPS)))
    scale = min(1.0, GIF_MAX_SIDE / (max(shape.width, shape.height) * shape.upscale))
    gif = gif_frames * shape.out_pixels * scale**2  # one palette byte a pixel, before compression
    pairs = [a + b for a, b in zip(files, files[1:])]
    return latents + max([*pairs, files[-1] + mp4 + gif])


# --- the estimate --------------------------------------------------------------------------


def levels_for(device: DeviceType, max_level: int) -> list[int]:
    """The memory levels a job may run at on ``device`` (up to the configured maximum)."""
    return [n for n in device_levels(device) if n <= max_level]


def estimate_shape(shape: JobShape, weights: Weights, device: DeviceType, levels: list[int]) -> JobEstimate:
    """The estimate of ``shape`` at each of ``levels``; its headline is the highest level."""
    rows = []
    for number in levels:
        ram, vram = _level_needs(shape, weights, device, number)
        rows.append(
            LevelEstimate(
                number, describe(number), round(WORKER_BASELINE_MB + ram / _MB, 1),
                round(vram / _MB, 1) if vram is not None else None,
            )
        )  # fmt: skip
    top = rows[-1]
    return JobEstimate(
        device_type=device, level=top.level, ram_mb=top.ram_mb, vram_mb=top.vram_mb,
        disk_mb=round(disk_bytes(shape) / _MB, 1), weights_mb=round(weights.pipeline / _MB, 1),
        weights_source=weights.source, levels=tuple(rows), shape=shape, weights=weights,
    )  # fmt: skip


def estimate_job(
    shape: JobShape,
    ref: ModelRef,
    settings: Settings,
    device: DeviceType,
    *,
    upscale_weights: Path | None = None,
    rife_weights: Path | None = None,
) -> JobEstimate:
    """The estimate of ``shape`` on model ``ref`` on a ``device`` of this kind, at the levels
    ``settings.max_memory_level`` allows."""
    weights = replace(
        pipeline_weights(ref.family, model_folder(ref, settings), device),
        upscaler=_file_bytes(upscale_weights),
        rife=_file_bytes(rife_weights),
    )
    return estimate_shape(shape, weights, device, levels_for(device, settings.max_memory_level))


def estimate_plan(plan: JobPlan, settings: Settings, device: DeviceType) -> JobEstimate:
    """The estimate of a validated job."""
    return estimate_job(
        JobShape.of_plan(plan), plan.ref, settings, device,
        upscale_weights=plan.upscale_weights, rife_weights=plan.rife_weights,
    )  # fmt: skip


# --- does it fit? --------------------------------------------------------------------------


@dataclass(frozen=True)
class FitProblem:
    """Why a job cannot fit: a message with the numbers and advice naming what to lower."""

    resource: Literal["ram", "vram", "disk"]
    message: str
    advice: str


_WORDS = {"ram": "RAM", "vram": "GPU memory", "disk": "disk"}
_SETTINGS = {"ram": "STEADYFRAME_JOB_RAM_LIMIT_MB", "vram": "STEADYFRAME_JOB_VRAM_LIMIT_MB", "disk": "STEADYFRAME_JOB_DISK_LIMIT_MB"}


def _need(estimate: JobEstimate, resource: str) -> float:
    value = {"ram": estimate.ram_mb, "vram": estimate.vram_mb, "disk": estimate.disk_mb}[resource]
    return value or 0.0


def _lowered(shape: JobShape) -> list[tuple[str, JobShape]]:
    """Each knob lowered one notch: (words for the advice, the lowered shape)."""
    family = shape.family
    options: list[tuple[str, JobShape]] = []
    step = family.frame_step
    fewer = max(1 + step, ((shape.frames - 1) // 2) // step * step + 1)
    if fewer < shape.frames:
        options.append((f"fewer frames (e.g. {fewer})", replace(shape, frames=fewer)))
    if not family.fixed_resolution and min(shape.width, shape.height) > family.min_side:
        scale = family.min_side / min(shape.width, shape.height)
        unit = family.size_multiple
        width, height = (max(unit, round(side * scale / unit) * unit) for side in (shape.width, shape.height))
        options.append((f"a lower resolution (e.g. {width}×{height})", replace(shape, width=width, height=height)))
    for knob in ("upscale", "interpolate"):
        factor = getattr(shape, knob)
        if factor > 1:
            words = f"{knob} ×{factor // 2}" if factor > 2 else f"no {'upscaling' if knob == 'upscale' else 'interpolation'}"
            options.append((words, replace(shape, **{knob: factor // 2})))
    return options


def _advice(estimate: JobEstimate, resource: str, source: str) -> str:
    """Name the knobs that save the most of ``resource``, largest saving first."""
    need = _need(estimate, resource)
    savings = []
    for words, shape in _lowered(estimate.shape):
        lowered = estimate_shape(shape, estimate.weights, estimate.device_type, [estimate.level])
        saved = need - _need(lowered, resource)
        if saved > 0.01 * need:
            savings.append((saved, words))
    savings.sort(reverse=True)
    parts = [f"{words} (saves about {size_words(saved)})" for saved, words in savings[:3]]
    if parts:
        advice = "Try " + ", or ".join(parts) + "."
    elif resource == "disk":
        advice = "Free disk space in the data folder."
    elif resource == "vram" or estimate.weights_mb >= WORKER_BASELINE_MB:
        advice = f"Most of it is the model's weights ({size_words(estimate.weights_mb)}): use a smaller model or a bigger machine."
    else:
        advice = (
            f"Most of it is the worker itself (about {size_words(WORKER_BASELINE_MB)} with torch loaded), not this job: "
            "the server needs more memory."
        )
    if source == "setting":
        advice += f" The operator set this server's limit ({_SETTINGS[resource]})."
    return advice


def size_words(mb: float) -> str:
    """``mb`` for people: GB from 1 GB up, else MB (one decimal below 1 MB)."""
    if mb >= 1024:
        return f"{mb / 1024:.1f} GB"
    return f"{mb:,.0f} MB" if mb >= 1 else f"{mb:.1f} MB"


_HAS = {
    "machine": "this machine has",
    "cgroup": "this server's container is limited to",
    "setting": "this server allows a job",
}


def fit_problem(estimate: JobEstimate, capacity: Capacity) -> FitProblem | None:
    """None when the job fits ``capacity`` at its highest memory level, else the first shortfall."""
    checks: list[tuple[Literal["ram", "vram", "disk"], Figure | None]] = [
        ("ram", capacity.ram),
        ("vram", capacity.vram if estimate.device_type == "cuda" else None),
        ("disk", capacity.disk),
    ]
    for resource, figure in checks:
        need = _need(estimate, resource)
        if figure is None or need <= figure.mb:
            continue
        if resource == "disk":
            has = "the data folder has" if figure.source == "machine" else _HAS[figure.source]
            free = " free" if figure.source == "machine" else ""
            message = f"This job needs about {size_words(need)} of disk; {has} {size_words(figure.mb)}{free}."
        else:
            message = (
                f"This job needs about {size_words(need)} of {_WORDS[resource]} even at memory level {estimate.level} "
                f"({describe(estimate.level)}); {_HAS[figure.source]} {size_words(figure.mb)}."
            )
        return FitProblem(resource, message, _advice(estimate, resource, figure.source))
    return None
