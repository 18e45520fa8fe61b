"""Tile layout, feathering and blending, independent of any network."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from steadyframe.postprocess.tiling import TilePlan, axis_origins, feather_ramp, plan_tiles, run_tiled


@pytest.mark.parametrize(
    ("length", "tile", "overlap", "align"), [(100, 48, 12, 1), (192, 48, 12, 4), (480, 200, 32, 4), (1361, 256, 32, 1)]
)
def test_tiles_cover_the_axis_with_at_least_the_requested_overlap(
    length: int, tile: int, overlap: int, align: int
) -> None:
    origins = axis_origins(length - length % align, tile, overlap, align)
    assert origins[0] == 0 and origins[-1] + tile == length - length % align
    assert all(origin % align == 0 for origin in origins)
    assert all(origins[i] + tile - origins[i + 1] >= overlap for i in range(len(origins) - 1))


def test_inner_edges_fade_to_zero_and_border_edges_stay_one() -> None:
    ramp = feather_ramp(64, 16, inner_start=True, inner_end=False, device=torch.device("cpu"))
    assert ramp[:4].max() == 0.0  # the quarter of the overlap nearest the cut is discarded
    assert torch.all(ramp[12:] == 1.0)
    assert torch.all(ramp[1:] >= ramp[:-1])
    border = feather_ramp(64, 16, inner_start=False, inner_end=False, device=torch.device("cpu"))
    assert torch.all(border == 1.0)


def test_blending_a_pointwise_network_is_exact() -> None:
    """With no spatial context, tiled output must equal untiled output to float precision."""
    image = torch.rand(1, 3, 75, 101, generator=torch.Generator().manual_seed(0))

    def nearest_x2(batch: torch.Tensor) -> torch.Tensor:
        return F.interpolate(batch, scale_factor=2, mode="nearest") * 0.5 + 0.25

    whole = nearest_x2(image)
    tiled = run_tiled(nearest_x2, image, 2, TilePlan(32, 40, overlap=8, batch=3))
    assert tiled.shape == whole.shape
    assert torch.allclose(tiled, whole, atol=1e-6)


def test_budget_decides_between_one_tile_and_many() -> None:
    roomy = plan_tiles(480, 720, bytes_per_pixel=100.0, budget_bytes=480 * 720 * 100.0)
    assert roomy.is_untiled(480, 720)
    tight = plan_tiles(480, 720, bytes_per_pixel=100.0, budget_bytes=200 * 200 * 100.0, multiple_of=4)
    assert not tight.is_untiled(480, 720)
    assert tight.tile_height * tight.tile_width <= 200 * 200 and tight.tile_height % 4 == 0
    assert tight.batch == 1
    forced = plan_tiles(480, 720, bytes_per_pixel=100.0, budget_bytes=1e12, tile=128)
    assert (forced.tile_height, forced.tile_width, forced.batch) == (128, 128, 1)


def test_spare_memory_runs_several_tiles_per_pass_but_never_more_than_a_frame() -> None:
    big = plan_tiles(2000, 3000, bytes_per_pixel=100.0, budget_bytes=4_000_000 * 100.0)
    assert not big.is_untiled(2000, 3000)
    assert big.batch > 1
    assert big.batch * big.tile_height * big.tile_width <= 4_000_000


def test_even_tiles_are_equal_even_and_cover_the_axis_without_a_sliver() -> None:
    from steadyframe.postprocess.tiling import even_tile_side

    assert even_tile_side(200, 256, 32, 2) == 200  # fits: one tile
    assert even_tile_side(480, 256, 32, 2) == 256  # two tiles of 256 overlapping by 32
    for length, target, unit in ((720, 256, 2), (1360, 256, 4), (2880, 512, 2), (481, 256, 2)):
        side = even_tile_side(length, target, 32, unit)
        assert side % unit == 0 and side <= target + unit
        origins = axis_origins(length + (-length % unit), side, 32, unit)
        assert origins[-1] + side >= length
        # equal tiles evenly spread: every neighbour overlaps by about the same amount
        overlaps = [side - (b - a) for a, b in zip(origins, origins[1:])]
        assert min(overlaps) >= 32 and max(overlaps) - min(overlaps) <= 2 * unit


def test_a_side_cap_tiles_a_frame_that_would_fit_and_a_batch_cap_holds() -> None:
    capped = plan_tiles(480, 720, bytes_per_pixel=100.0, budget_bytes=1e12, max_side=256, max_batch=1)
    assert not capped.is_untiled(480, 720)
    assert capped.tile_height == 256 and capped.tile_width <= 256 and capped.tile_width % 2 == 0
    assert capped.batch == 1
    batched = plan_tiles(480, 720, bytes_per_pixel=100.0, budget_bytes=1e12, max_side=256)
    assert batched.batch > 1
