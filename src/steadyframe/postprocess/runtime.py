"""Device, precision, free memory and frame<->tensor conversion shared by both post stages.

Colour order everywhere in post-processing: RGB, channels last ``uint8 [F, H, W, 3]`` outside,
``float [N, 3, H, W]`` in ``[0, 1]`` inside the networks. Real-ESRGAN is trained on RGB; RIFE's
reference video tools feed RGB too, so no channel swap happens anywhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch

from steadyframe.engine.devices import resolve_device as resolve_device_name
from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.frame_file import FrameFile, Frames


def resolve_device(device: str) -> torch.device:
    """``settings.device`` -> a torch device, by the product's one rule (``engine.devices``)."""
    return torch.device(resolve_device_name(device))


# CPU flags (``/proc/cpuinfo``) of hardware bf16 dot products: oneDNN's bf16 convolutions then run
# about twice as fast as fp32 (1.20 s vs 2.60 s, animevideov3 ×4 on 720×480 here, AVX512-BF16).
# Without them torch emulates bf16 and is slower than fp32.
_NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU computes bf16 dot products in hardware (False where it cannot be read)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(_NATIVE_BF16_FLAGS & set(line.partition(":")[2].split()))
    return False


def half_dtype(
    device: torch.device, *, supports_half: bool, supports_bfloat16: bool, reduced_on_cpu: bool = False
) -> torch.dtype:
    """fp16 (else bf16) on CUDA when the network supports it. On a CPU fp32, where half is slow;
    bf16 when ``reduced_on_cpu`` (a ``fast``/``fastest`` job) and the CPU has bf16 in hardware."""
    if device.type == "cpu":
        if reduced_on_cpu and supports_bfloat16 and cpu_has_native_bf16():
            return torch.bfloat16
        return torch.float32
    if device.type != "cuda":
        return torch.float32
    if supports_half:
        return torch.float16
    if supports_bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def free_memory_bytes(device: torch.device) -> int:
    """Bytes the next allocation can use: free VRAM on CUDA, available RAM otherwise."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory torch has cached but not handed out is usable by us as well
        reserved_free = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + reserved_free)
    return int(psutil.virtual_memory().available)


def check_frames(frames: Frames, what: str) -> None:
    """Raise ``InvalidInputError`` unless ``frames`` (an array or a frame file) is ``uint8 [F, H, W, 3]``
    with F, H, W >= 1."""
    if not isinstance(frames, (np.ndarray, FrameFile)):
        raise InvalidInputError(f"{what} needs frames as a numpy array, got {type(frames).__name__}.")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InvalidInputError(
            f"{what} needs uint8 RGB frames shaped [frames, height, width, 3], "
            f"got {frames.dtype} {tuple(frames.shape)}."
        )
    if min(frames.shape[:3]) < 1:
        raise InvalidInputError(f"{what} got an empty video {tuple(frames.shape)}.")


def frame_to_tensor(frame: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> ``[1, 3, H, W]`` in ``[0, 1]`` on ``device``."""
    tensor = torch.from_numpy(np.ascontiguousarray(frame)).to(device)
    return tensor.permute(2, 0, 1).unsqueeze(0).to(dtype).div_(255.0)


def tensor_to_frame(tensor: torch.Tensor) -> np.ndarray:
    """``[1, 3, H, W]`` in ``[0, 1]`` -> ``uint8 [H, W, 3]`` (rounded, clamped) on the CPU."""
    scaled = tensor[0].float().clamp(0.0, 1.0).mul(255.0).round_()
    return scaled.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def frames_to_tensor(frames: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``uint8 [N, H, W, 3]`` -> ``[N, 3, H, W]`` in ``[0, 1]``, channels-last, in ``dtype`` on ``device``.

    The uint8 frames cross to the device as they are (a quarter of float32's bytes) and are
    converted there once; the permuted view already is the channels-last layout, so no copy."""
    tensor = torch.from_numpy(np.ascontiguousarray(frames)).to(device, non_blocking=True)
    return tensor.permute(0, 3, 1, 2).to(dtype).div_(255.0)


def tensor_to_frames(tensor: torch.Tensor) -> np.ndarray:
    """``[N, 3, H, W]`` in ``[0, 1]`` -> ``uint8 [N, H, W, 3]``: rounded and clamped on the device,
    in float32 (fp16 cannot hold every 255·x exactly), and only the uint8 result copied back."""
    scaled = tensor.float().clamp_(0.0, 1.0).mul_(255.0).round_()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()


@dataclass(frozen=True)
class WeightFile:
    """A weight file as the model provider sees it: where, under which key, how big."""

    path: Path
    key: str
    size_mb: float


def weight_file(weights: Path | str, *, kind: str, what: str, device: torch.device) -> WeightFile:
    """Check ``weights`` exists -> its provider key ``"<kind>:<abs path>@<device>"`` and size.

    Raises ModelUnavailableError naming only the file name (``what`` says which weights)."""
    path = Path(weights)
    if not path.is_file():
        raise ModelUnavailableError(f"The {what} weight file '{path.name}' was not found.")
    return WeightFile(path, f"{kind}:{path.resolve()}@{device}", path.stat().st_size / 2**20)
