"""Backward warping by optical flow, always in fp32 (half-precision sampling grids lose sub-pixel detail)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def backward_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Sample ``image`` ``[N, C, H, W]`` at ``pixel + flow`` (``flow`` ``[N, 2, H, W]``, x then y, pixels).

    Borders repeat the edge pixel. Returns the warped image in ``image``'s dtype; the sampling
    itself runs in float32 whatever the network's precision.
    """
    _, _, height, width = flow.shape
    flow32 = flow.float()
    xs = torch.linspace(-1.0, 1.0, width, device=flow.device, dtype=torch.float32)
    ys = torch.linspace(-1.0, 1.0, height, device=flow.device, dtype=torch.float32)
    # pixels -> normalised [-1, 1] units under align_corners=True (corner pixel centres at +-1)
    norm_x = flow32[:, 0] / max((width - 1.0) / 2.0, 1e-6)
    norm_y = flow32[:, 1] / max((height - 1.0) / 2.0, 1e-6)
    grid = torch.stack((xs.view(1, 1, width) + norm_x, ys.view(1, height, 1) + norm_y), dim=-1)
    warped = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=True)
    return warped.to(image.dtype)
