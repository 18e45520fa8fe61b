"""Frame interpolation ×2 / ×4 with RIFE between every pair of neighbouring frames.

Input and output: RGB ``uint8 [F, H, W, 3]``; the output has ``(F - 1) * factor + 1`` frames
(see ``plan.py``). Both frames of a pair are padded the same way and the result is cropped
back, so any size works (720×480, 1360×768, odd sizes). Pairs that are identical, or a scene
cut, are not run through the network: the earlier frame is repeated, so a cut stays a cut.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from steadyframe.contracts import ModelProvider
from steadyframe.errors import InvalidInputError
from steadyframe.frame_file import FrameFile, Frames, FrameSink
from steadyframe.postprocess.plan import ALLOWED_FACTORS, interpolated_frame_count
from steadyframe.postprocess.rife import FLOW_SCALES, RifeModel, load_rife
from steadyframe.postprocess.runtime import check_frames, frame_to_tensor, resolve_device, tensor_to_frame, weight_file
from steadyframe.postprocess.scenecut import SCENE_CUT_SSIM, is_scene_cut


def interpolate_frames(
    frames: Frames,
    *,
    weights: Path,
    factor: int,
    device: str,
    models: ModelProvider,
    on_frame: Callable[[int, int], None],
    flow_scale: float = 1.0,
    scene_cut_ssim: float = SCENE_CUT_SSIM,
    out: Path | None = None,
) -> np.ndarray | FrameFile:
    """Interpolate ``frames`` (an array or a frame file) by ``factor`` (1, 2 or 4) with the RIFE
    network in ``weights``.

    ``flow_scale``: resolution at which RIFE estimates motion (1.0 native; 0.5 for upscaled or
    4K frames, see ``plan.rife_flow_scale``); one of 0.25, 0.5, 1, 2, 4.
    The network is held through ``models.acquire("rife:<file>@<device>", ...)``.
    ``on_frame(done, total)`` runs after each output frame; whatever it raises propagates.
    Returns RGB ``uint8 [(F - 1) * factor + 1, H, W, 3]``, original frames kept bit-exact: an
    array, or with ``out`` a frame file written frame by frame (two input frames in memory at once).
    """
    check_frames(frames, "Frame interpolation")
    if factor not in ALLOWED_FACTORS:
        raise InvalidInputError(f"Interpolation factor must be one of {ALLOWED_FACTORS}, got {factor}.")
    if flow_scale not in FLOW_SCALES:
        raise InvalidInputError(f"RIFE flow scale must be one of {FLOW_SCALES}, got {flow_scale}.")
    count = frames.shape[0]
    total = interpolated_frame_count(count, factor)
    if total == count:
        for index in range(count):
            on_frame(index + 1, count)
        return frames  # type: ignore[return-value]
    target = resolve_device(device)
    file = weight_file(weights, kind="rife", what="RIFE", device=target)
    with (
        models.acquire(file.key, lambda: load_rife(file.path, target), size_mb=file.size_mb) as rife,
        FrameSink(out, (total, *frames.shape[1:])) as sink,
    ):
        with torch.inference_mode():
            _fill(sink, frames, rife, factor, flow_scale, scene_cut_ssim, on_frame, total)
        return sink.result()


def _fill(
    sink: FrameSink,
    frames: Frames,
    rife: RifeModel,
    factor: int,
    flow_scale: float,
    scene_cut_ssim: float,
    on_frame: Callable[[int, int], None],
    total: int,
) -> None:
    """Write originals and in-betweens into ``sink`` in time order, reporting each frame."""
    height, width = frames.shape[1], frames.shape[2]
    done = 0

    def emit(frame: np.ndarray) -> None:
        nonlocal done
        sink.append(frame)
        done += 1
        on_frame(done, total)

    second = frames[0]
    emit(second)
    padded_next: torch.Tensor | None = None
    for index in range(frames.shape[0] - 1):
        first, second = second, frames[index + 1]  # each frame is read once
        if np.array_equal(first, second) or is_scene_cut(first, second, scene_cut_ssim):
            padded_next = None
            for _ in range(factor - 1):
                emit(first)
        else:
            padded_first = padded_next
            if padded_first is None:
                padded_first = rife.pad(frame_to_tensor(first, rife.device, torch.float32), flow_scale)
            padded_next = rife.pad(frame_to_tensor(second, rife.device, torch.float32), flow_scale)
            for middle in rife.between(padded_first, padded_next, factor, flow_scale):
                emit(tensor_to_frame(middle[:, :, :height, :width]))
            del padded_first
        emit(second)
