"""Scene-cut detection between neighbouring frames, so interpolation never morphs across a cut.

Both frames are shrunk to 32×32 luma and compared with SSIM (7×7 mean windows); below
``SCENE_CUT_SSIM`` the pair is a cut. 32×32 blurs away motion but keeps composition, the same
scale CogVideo's demo uses for this decision, with the same threshold.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SCENE_CUT_SSIM = 0.2
_SIDE = 32
_WINDOW = 7
_C1, _C2 = 0.01**2, 0.03**2


def _small_luma(frame: np.ndarray) -> torch.Tensor:
    rgb = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).unsqueeze(0).float() / 255.0
    luma = (rgb * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    return F.interpolate(luma, size=(_SIDE, _SIDE), mode="area")


def frame_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two RGB ``uint8 [H, W, 3]`` frames at 32×32 luma: 1 = same picture, ~0 = unrelated."""
    x, y = _small_luma(a), _small_luma(b)
    mean_x, mean_y = F.avg_pool2d(x, _WINDOW, 1), F.avg_pool2d(y, _WINDOW, 1)
    var_x = F.avg_pool2d(x * x, _WINDOW, 1) - mean_x**2
    var_y = F.avg_pool2d(y * y, _WINDOW, 1) - mean_y**2
    cov = F.avg_pool2d(x * y, _WINDOW, 1) - mean_x * mean_y
    ssim = ((2 * mean_x * mean_y + _C1) * (2 * cov + _C2)) / ((mean_x**2 + mean_y**2 + _C1) * (var_x + var_y + _C2))
    return float(ssim.mean())


def is_scene_cut(a: np.ndarray, b: np.ndarray, threshold: float = SCENE_CUT_SSIM) -> bool:
    """True when ``a`` -> ``b`` is a cut (interpolating would morph two unrelated shots)."""
    return frame_similarity(a, b) < threshold
