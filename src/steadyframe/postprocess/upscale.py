"""Super-resolution of video frames through spandrel (Real-ESRGAN family and any other SR file).

Input and output: RGB ``uint8 [F, H, W, 3]``. The network runs in fp16 (else bf16) on CUDA when
its spandrel descriptor supports it, fp32 on CPU (bf16 for ``fast``/``fastest`` jobs on a CPU
with bf16 in hardware: 2.2× faster here), always in ``channels_last`` memory format (the
layout oneDNN and cuDNN convolutions run fastest in: 3.24 s -> 2.08 s for one 720×480 frame on
this CPU). On a GPU whole frames go through several per forward pass when memory allows; on a
CPU frames are cut into even tiles of at most 384 px, one per pass (720×480 -> 2×2 tiles of
256×376: 8.7 s against 10.6 s whole and 13.7 s in 256-px tiles, animevideov3 ×4, 2 threads);
a frame that does not fit the budget is tiled anywhere.
uint8 frames are converted to the network dtype once, on the device, and back to uint8 there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from spandrel import ImageModelDescriptor, ModelLoader, UnsupportedModelError

from steadyframe.contracts import ModelProvider
from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.frame_file import FrameFile, Frames, FrameSink
from steadyframe.postprocess.plan import ALLOWED_FACTORS
from steadyframe.postprocess.runtime import (
    check_frames,
    frames_to_tensor,
    free_memory_bytes,
    half_dtype,
    resolve_device,
    tensor_to_frames,
    weight_file,
)
from steadyframe.postprocess.plan import sr_bytes_per_pixel, sr_max_tile_side
from steadyframe.postprocess.tiling import MAX_TILES_PER_BATCH, TilePlan, plan_tiles, run_tiled

logger = logging.getLogger(__name__)

# share of free memory one frame's activations may use: CPU RAM is shared with the diffusion model
_BUDGET_SHARE = {"cuda": 0.6, "cpu": 0.25}
# frames (or tiles) per forward pass at most: batching helps GPUs; on a CPU one small tile at a
# time is what keeps the working set small, so batching there would undo the tiling
_MAX_FRAMES_PER_PASS = {"cuda": 8}
_MAX_TILES_PER_PASS = {"cpu": 1}


@dataclass
class Upscaler:
    """A loaded SR network on its device, plus what tiling needs to know about it."""

    descriptor: ImageModelDescriptor
    device: torch.device
    dtype: torch.dtype
    native_scale: int
    multiple_of: int
    bytes_per_pixel: float
    architecture: str

    def plan(self, height: int, width: int, tile: int | None) -> TilePlan:
        """How one ``height``×``width`` input goes through the network on this device."""
        return plan_tiles(
            height,
            width,
            bytes_per_pixel=self.bytes_per_pixel,
            budget_bytes=self.budget_bytes(),
            multiple_of=self.multiple_of,
            tile=tile,
            max_side=sr_max_tile_side(self.device.type),
            max_batch=_MAX_TILES_PER_PASS.get(self.device.type, MAX_TILES_PER_BATCH),
        )

    def budget_bytes(self) -> float:
        return free_memory_bytes(self.device) * _BUDGET_SHARE.get(self.device.type, 0.25)

    def frames_per_pass(self, height: int, width: int, tile: int | None) -> int:
        """Whole frames per forward pass: several on a GPU when they fit untiled, else one."""
        most = _MAX_FRAMES_PER_PASS.get(self.device.type, 1)
        if most == 1 or tile not in (None, 0) or not self.plan(height, width, tile).is_untiled(height, width):
            return 1
        frame_bytes = self.bytes_per_pixel * height * width
        return int(max(1, min(most, self.budget_bytes() // max(frame_bytes, 1.0))))

    def upscale(self, image: torch.Tensor, scale: int, *, tile: int | None = None) -> torch.Tensor:
        """``[N, 3, H, W]`` in ``[0, 1]`` -> ``[N, 3, H*scale, W*scale]`` in ``[0, 1]`` (float32 when tiled).

        When ``scale`` differs from the network's native scale, the network runs as many times as
        needed to reach at least ``scale`` (×4 from a ×2 net: twice), then the result is resized
        down with an antialiased bicubic filter (×2 from a ×4 net: one pass, then halved).
        ``tile``: None = pick by device and free memory, 0 = never tile, N = N-pixel square tiles.
        A batch of several frames is only ever run untiled.
        """
        _, _, height, width = image.shape
        reached, current = 1, image.to(self.dtype).contiguous(memory_format=torch.channels_last)
        while reached < scale:
            plan = self.plan(current.shape[2], current.shape[3], tile)
            if current.shape[0] > 1 or plan.is_untiled(current.shape[2], current.shape[3]):
                current = self._forward(current)
            else:
                current = run_tiled(self._forward, current, self.native_scale, plan, align=self.multiple_of)
            reached *= self.native_scale
        if reached != scale:
            current = F.interpolate(
                current.float(), size=(height * scale, width * scale), mode="bicubic", antialias=True,
                align_corners=False,
            ).clamp_(0.0, 1.0)  # fmt: skip
        return current

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.descriptor(batch.to(self.dtype).contiguous(memory_format=torch.channels_last))


def _estimate_bytes_per_pixel(model: torch.nn.Module, scale: int, dtype: torch.dtype) -> float:
    """Peak activation bytes per input pixel: widest conv, at the upsampled resolution, a few alive."""
    widest = max((m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)), default=64)
    return sr_bytes_per_pixel(widest, scale, torch.finfo(dtype).bits // 8)


def load_upscaler(
    path: Path, device: torch.device, dtype: torch.dtype | None = None, *, reduced_on_cpu: bool = False
) -> Upscaler:
    """Load an SR weight file through spandrel onto ``device`` (``dtype`` overrides the rule of
    ``runtime.half_dtype``: fp16 on CUDA; fp32 on a CPU, bf16 there with ``reduced_on_cpu``).

    Raises ``ModelUnavailableError`` when the file is missing, unreadable, not recognised, or
    not a single-image super-resolution model (restoration, face or inpainting models).
    """
    name = Path(path).name
    if not Path(path).is_file():
        raise ModelUnavailableError(f"The upscaling weight file '{name}' was not found.")
    problem: str | None = None
    descriptor = None
    try:
        descriptor = ModelLoader(device="cpu").load_from_file(path)
    except UnsupportedModelError:
        problem = f"'{name}' is not an image model spandrel recognises, so it cannot be used for upscaling."
    except ValueError as exc:  # spandrel's way of saying "unsupported extension"
        logger.warning("could not load %s: %s", path, exc)
        problem = f"'{name}' has an unsupported extension; use a .pth or .safetensors file."
    except Exception as exc:  # truncated/corrupt files raise pickle, zip or safetensors errors
        logger.warning("could not read %s: %s: %s", path, type(exc).__name__, exc)
        problem = f"'{name}' could not be read ({type(exc).__name__}); the file may be incomplete or corrupt."
    # raised outside the except blocks so the failed load's frames are not kept alive by chaining
    if problem is not None:
        raise ModelUnavailableError(problem, advice="Download the weight file again or choose another one.")
    assert descriptor is not None
    if not isinstance(descriptor, ImageModelDescriptor) or descriptor.purpose != "SR" or descriptor.scale < 2:
        kind = getattr(descriptor, "purpose", "unknown")
        arch = descriptor.architecture.name
        del descriptor
        raise ModelUnavailableError(
            f"'{name}' is a {arch} {kind} model, not a single-image super-resolution model.",
            advice="Use a Real-ESRGAN-family file such as RealESRGAN_x4plus.pth.",
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        channels = (descriptor.input_channels, descriptor.output_channels)
        del descriptor
        raise ModelUnavailableError(f"'{name}' works on {channels} channels; upscaling needs an RGB (3-channel) model.")
    if dtype is None:
        dtype = half_dtype(
            device, supports_half=descriptor.supports_half, supports_bfloat16=descriptor.supports_bfloat16,
            reduced_on_cpu=reduced_on_cpu,
        )  # fmt: skip
    descriptor.to(device).to(dtype).eval()
    descriptor.model.to(memory_format=torch.channels_last)
    requirements = descriptor.size_requirements
    return Upscaler(
        descriptor=descriptor,
        device=device,
        dtype=dtype,
        native_scale=descriptor.scale,
        multiple_of=max(requirements.multiple_of, 1),
        bytes_per_pixel=_estimate_bytes_per_pixel(descriptor.model, descriptor.scale, dtype),
        architecture=descriptor.architecture.name,
    )


def upscale_frames(
    frames: Frames,
    *,
    weights: Path,
    scale: int,
    device: str,
    models: ModelProvider,
    on_frame: Callable[[int, int], None],
    tile: int | None = None,
    out: Path | None = None,
    reduced_precision: bool = False,
    used: dict[str, str] | None = None,
) -> np.ndarray | FrameFile:
    """Upscale every frame by ``scale`` (1, 2 or 4) with the SR network in ``weights``.

    ``frames``: RGB ``uint8 [F, H, W, 3]`` (an array or a frame file); returns RGB
    ``uint8 [F, H*scale, W*scale, 3]``: an array, or with ``out`` a frame file written there
    pass by pass, so only the frames of one pass are ever in memory.
    ``scale`` may differ from the network's native scale: a ×4 net serves ×2 by upscaling ×4
    then resizing down with an antialiased bicubic filter; a ×2 net serves ×4 by running twice.
    The network is held through ``models.acquire("upscale:<file>@<device>", ...)``.
    ``on_frame(done, total)`` runs after each output frame; whatever it raises propagates.
    ``tile``: None = tile only when a frame does not fit free memory, 0 = never, N = N-px tiles.
    ``reduced_precision``: bf16 on a CPU with bf16 in hardware (``fast``/``fastest`` jobs; CUDA
    runs fp16 either way). ``used``, when given, gets the dtype that ran (``{"dtype": "bfloat16"}``).
    """
    check_frames(frames, "Upscaling")
    if scale not in ALLOWED_FACTORS:
        raise InvalidInputError(f"Upscale factor must be one of {ALLOWED_FACTORS}, got {scale}.")
    count, height, width, _ = frames.shape
    if scale == 1:
        for index in range(count):
            on_frame(index + 1, count)
        return frames  # type: ignore[return-value]
    target = resolve_device(device)
    file = weight_file(weights, kind="upscale", what="upscaling", device=target)
    reduced = reduced_precision and target.type == "cpu"
    key = f"{file.key}:reduced" if reduced else file.key  # the provider may hold both loaded
    with (
        models.acquire(
            key, lambda: load_upscaler(file.path, target, reduced_on_cpu=reduced), size_mb=file.size_mb
        ) as upscaler,
        FrameSink(out, (count, height * scale, width * scale, 3)) as sink,
    ):
        if used is not None:
            used["dtype"] = str(upscaler.dtype).removeprefix("torch.")
        per_pass = upscaler.frames_per_pass(height, width, tile)
        with torch.inference_mode():
            for first in range(0, count, per_pass):
                last = min(first + per_pass, count)
                batch = frames_to_tensor(frames[first:last], target, upscaler.dtype)
                sink.append(tensor_to_frames(upscaler.upscale(batch, scale, tile=tile)))
                del batch
                for index in range(first, last):
                    on_frame(index + 1, count)
        return sink.result()
