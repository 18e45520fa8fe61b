"""Tiled image-to-image inference with overlap and feathered blending (hand-written: spandrel has none).

A frame too large for the memory budget is cut into equal tiles that overlap by ``overlap``
input pixels. Each tile's output is weighted by a ramp that is zero for the ``overlap // 4``
pixels nearest an inner tile edge (where the network saw padding instead of the neighbour) and
rises smoothly to one across the rest of the overlap; the weighted sum divided by the summed
weights hides the seams. Tiles are all the same size so several run in one forward pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from steadyframe.postprocess.plan import SR_MAX_TILE_SIDE

DEFAULT_OVERLAP = 32
MAX_TILES_PER_BATCH = 8


@dataclass(frozen=True)
class TilePlan:
    """How to cut one ``height``×``width`` frame: tile size, overlap and tiles per forward pass."""

    tile_height: int
    tile_width: int
    overlap: int
    batch: int

    def is_untiled(self, height: int, width: int) -> bool:
        return self.tile_height >= height and self.tile_width >= width


def axis_origins(length: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Start offsets of tiles of size ``tile`` covering ``[0, length)``, neighbours overlapping >= ``overlap``.

    Offsets are multiples of ``align`` (``length`` and ``tile`` must be too), so a network that
    works on ``align``-pixel blocks (pixel-unshuffle) sees every tile in the same phase.
    """
    if tile >= length:
        return [0]
    if tile - overlap < align:
        raise ValueError(f"overlap {overlap} must be smaller than the tile {tile}")
    last = (length - tile) // align
    step = (tile - overlap) // align  # largest origin step, in align units, that keeps the overlap
    count = math.ceil(last / step) + 1
    # evenly spaced, so every overlap is about the same and at least ``overlap``
    return [round(i * last / (count - 1)) * align for i in range(count)]


def even_tile_side(length: int, target: int, overlap: int, unit: int) -> int:
    """The tile side for an axis of ``length``: the fewest equal tiles no larger than ``target``
    that cover it with ``overlap``, each rounded up to a multiple of ``unit`` (even sizes: every
    tile the same shape, so they batch, and no sliver tile at the end as fixed sides leave)."""
    if length <= target:
        return length
    count = math.ceil((length - overlap) / max(target - overlap, 1))
    side = math.ceil((length + (count - 1) * overlap) / count)
    return min(length, side + (-side % unit))


def plan_tiles(
    height: int,
    width: int,
    *,
    bytes_per_pixel: float,
    budget_bytes: float,
    multiple_of: int = 1,
    overlap: int = DEFAULT_OVERLAP,
    tile: int | None = None,
    max_side: int = SR_MAX_TILE_SIDE,
    max_batch: int = MAX_TILES_PER_BATCH,
) -> TilePlan:
    """Pick the largest tiles that fit ``budget_bytes`` given ``bytes_per_pixel`` of input.

    ``tile`` forces a square tile side, one tile per forward pass (0 = never tile; the overlap
    shrinks to at most a quarter of it). Otherwise the whole frame is one tile when it fits and no
    side exceeds ``max_side``, else the frame is split evenly into tiles of at most that side
    (at least 4×overlap), as many per pass as the budget allows (at most ``max_batch``).
    """
    if tile == 0:
        return TilePlan(height, width, overlap, 1)
    if tile is not None:
        # a forced tile bounds memory: one per pass, at least three quarters of it free of overlap
        side = max(tile - tile % multiple_of, 16, multiple_of)
        return TilePlan(min(height, side), min(width, side), min(overlap, side // 4), 1)
    min_side = 4 * overlap
    allowed_pixels = max(budget_bytes / max(bytes_per_pixel, 1.0), float(min_side * min_side))
    if height * width <= allowed_pixels and max(height, width) <= max_side:
        return TilePlan(height, width, overlap, 1)
    unit = math.lcm(max(multiple_of, 1), 2)
    side = max(min(int(math.sqrt(allowed_pixels)), max_side), min_side)
    tile_height = even_tile_side(height, side, overlap, unit)
    # a tile that spans the whole height can be wider within the same budget
    wide = min(int(allowed_pixels // tile_height), max_side) if tile_height == height else side
    tile_width = even_tile_side(width, max(side, wide), overlap, unit)
    count = len(axis_origins(height, tile_height, overlap)) * len(axis_origins(width, tile_width, overlap))
    # several tiles per pass where memory allows, but never more pixels than the frame itself
    fits = min(allowed_pixels, float(height * width)) // (tile_height * tile_width)
    batch = int(max(1, min(fits, count, max_batch)))
    return TilePlan(tile_height, tile_width, overlap, batch)


def feather_ramp(length: int, overlap: int, inner_start: bool, inner_end: bool, device: torch.device) -> torch.Tensor:
    """Weights along one tile axis of ``length`` output pixels; ``overlap`` is in output pixels too.

    Sides that touch the frame border keep weight 1; inner sides are zero for ``overlap // 4``
    pixels, then rise as a smoothstep across the middle half of the overlap.
    """
    weights = torch.ones(length, device=device, dtype=torch.float32)
    margin = overlap // 4
    span = max(overlap - 2 * margin, 1)
    pos = torch.arange(length, device=device, dtype=torch.float32) + 0.5
    if inner_start:
        t = ((pos - margin) / span).clamp(0.0, 1.0)
        weights = torch.minimum(weights, t * t * (3.0 - 2.0 * t))
    if inner_end:
        t = ((length - pos - margin) / span).clamp(0.0, 1.0)
        weights = torch.minimum(weights, t * t * (3.0 - 2.0 * t))
    return weights


def run_tiled(
    run: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    scale: int,
    plan: TilePlan,
    align: int = 1,
) -> torch.Tensor:
    """Apply ``run`` (``[N, C, h, w] -> [N, C, h*scale, w*scale]``) to ``image`` ``[1, C, H, W]`` by tiles.

    ``align``: the network's size multiple; the frame is reflect-padded to it (as spandrel does
    for a whole frame) so tiles line up with the network's pixel blocks. Returns
    ``[1, C, H*scale, W*scale]`` float32 on ``image``'s device.
    """
    _, _, height, width = image.shape
    if plan.is_untiled(height, width):
        return run(image).float()
    pad_h, pad_w = -height % align, -width % align
    if pad_h or pad_w:
        mode = "reflect" if min(height, width) > max(pad_h, pad_w) else "replicate"
        image = torch.nn.functional.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    padded_h, padded_w = height + pad_h, width + pad_w
    tile_h = min(plan.tile_height - plan.tile_height % align, padded_h)
    tile_w = min(plan.tile_width - plan.tile_width % align, padded_w)
    boxes = [
        (y, x)
        for y in axis_origins(padded_h, tile_h, plan.overlap, align)
        for x in axis_origins(padded_w, tile_w, plan.overlap, align)
    ]
    out: torch.Tensor | None = None
    weight_sum = torch.zeros((1, 1, padded_h * scale, padded_w * scale), device=image.device, dtype=torch.float32)
    overlap_out = plan.overlap * scale
    for first in range(0, len(boxes), plan.batch):
        chunk = boxes[first : first + plan.batch]
        tiles = torch.cat([image[:, :, y : y + tile_h, x : x + tile_w] for y, x in chunk], dim=0)
        results = run(tiles)
        if out is None:
            out = torch.zeros(
                (1, results.shape[1], padded_h * scale, padded_w * scale), device=image.device, dtype=torch.float32
            )
        for (y, x), result in zip(chunk, results):
            ramp_y = feather_ramp(tile_h * scale, overlap_out, y > 0, y + tile_h < padded_h, image.device)
            ramp_x = feather_ramp(tile_w * scale, overlap_out, x > 0, x + tile_w < padded_w, image.device)
            weight = ramp_y[:, None] * ramp_x[None, :]
            ys, xs = y * scale, x * scale
            out[0, :, ys : ys + tile_h * scale, xs : xs + tile_w * scale] += result.float() * weight
            weight_sum[0, 0, ys : ys + tile_h * scale, xs : xs + tile_w * scale] += weight
        del tiles, results
    assert out is not None
    blended = out / weight_sum.clamp_min(1e-6)
    return blended[:, :, : height * scale, : width * scale]
