"""CogVideo's demo post-processing, re-written from a reading of its gradio_composite_demo
(``utils.tiled_scale`` / ``upscale`` and ``rife_model.ssim_interpolation_rife``) so that
``bench/postprocess.py`` can time it beside ours on the same weights and frames. Not product code.

What it does, as the demo does it:
- upscaling: every frame on its own, fixed 512-px tiles stepping by 512 - 32, the last tile
  clamped to the frame, each tile's output weighted by a linear ramp over ``32 × scale`` pixels
  on all four sides, accumulated in float32 on the CPU and divided by the summed weights. The
  demo casts the network and frames to fp16; on a CPU (no fast fp16 kernels) this runs fp32.
- interpolation: for each frame, SSIM of 32×32 thumbnails against the next frame decides: above
  0.996 the frame is first interpolated with itself; below 0.2 the frame is repeated; otherwise
  the in-betweens come from the network recursively. Its SSIM (``ssim_matlab``, a Gaussian
  window) is replaced here by a per-channel 11×11 Gaussian SSIM: a few microseconds either way.
"""

from __future__ import annotations

import itertools
from typing import Callable

import torch
import torch.nn.functional as F

DEMO_TILE, DEMO_OVERLAP = 512, 32


@torch.inference_mode()
def demo_tiled_scale(
    frame: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor], scale: int,
    tile: int = DEMO_TILE, overlap: int = DEMO_OVERLAP,
) -> torch.Tensor:  # fmt: skip
    """``[1, 3, H, W]`` -> ``[1, 3, H*scale, W*scale]`` on the CPU, tile by tile as the demo does."""
    _, channels, height, width = frame.shape
    out = torch.zeros((1, channels, height * scale, width * scale))
    weight = torch.zeros_like(out)
    feather = overlap * scale
    for y0, x0 in itertools.product(range(0, height, tile - overlap), range(0, width, tile - overlap)):
        y = max(0, min(height - overlap, y0))
        x = max(0, min(width - overlap, x0))
        h, w = min(tile, height - y), min(tile, width - x)
        result = network(frame[:, :, y : y + h, x : x + w]).float().cpu()
        mask = torch.ones_like(result)
        for t in range(feather):  # linear ramp on every side, frame borders included
            ramp = (t + 1) / feather
            mask[:, :, t, :] *= ramp
            mask[:, :, mask.shape[2] - 1 - t, :] *= ramp
            mask[:, :, :, t] *= ramp
            mask[:, :, :, mask.shape[3] - 1 - t] *= ramp
        ys, xs = y * scale, x * scale
        out[:, :, ys : ys + result.shape[2], xs : xs + result.shape[3]] += result * mask
        weight[:, :, ys : ys + result.shape[2], xs : xs + result.shape[3]] += mask
    return out / weight


def demo_upscale_video(frames: torch.Tensor, network: Callable[[torch.Tensor], torch.Tensor], scale: int) -> torch.Tensor:
    """``[F, 3, H, W]`` float -> upscaled ``[F, 3, H*s, W*s]``, one frame after another."""
    return torch.cat([demo_tiled_scale(frames[i : i + 1], network, scale) for i in range(frames.shape[0])])


def _gaussian_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    coords = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = (g / g.sum())[:, None] * (g / g.sum())[None, :]
    kernel = g.expand(a.shape[1], 1, 11, 11).to(a)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, kernel, groups=a.shape[1])

    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim.mean())


def _pad(image: torch.Tensor, multiple: int) -> torch.Tensor:
    pad_h, pad_w = -image.shape[2] % multiple, -image.shape[3] % multiple
    return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image


def _recursive(middle: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a, b, n: int) -> list[torch.Tensor]:
    mid = middle(a, b)
    if n == 1:
        return [mid]
    first, second = _recursive(middle, a, mid, n // 2), _recursive(middle, mid, b, n // 2)
    return [*first, mid, *second] if n % 2 else [*first, *second]


@torch.inference_mode()
def demo_interpolate_video(
    frames: torch.Tensor, middle: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], exp: int = 1, multiple: int = 32
) -> list[torch.Tensor]:
    """The demo's loop over ``[F, 3, H, W]`` float frames -> list of ``[1, 3, H', W']`` CPU frames."""
    output: list[torch.Tensor] = []
    count = frames.shape[0]
    for b in range(count):
        frame = frames[b : b + 1]
        first = frame
        second = _pad(frames[b + 1 : b + 2] if b + 2 < count else frames[-1:], multiple)
        small = lambda x: F.interpolate(x[:, :3, : frame.shape[2], : frame.shape[3]], (32, 32), mode="bilinear", align_corners=False)  # noqa: E731
        ssim = _gaussian_ssim(small(first), small(second))
        if ssim > 0.996:
            second = _recursive(middle, _pad(first, multiple), _pad(first, multiple), 1)[0]
            ssim = _gaussian_ssim(small(first), small(second))
            frame = second
        if ssim < 0.2:
            extra = [first] * (2**exp - 1)
        else:
            extra = _recursive(middle, _pad(first, multiple), second, 2**exp - 1) if exp else []
        for item in [_pad(frame, multiple), *extra]:
            output.append(item.to("cpu"))
    return output
