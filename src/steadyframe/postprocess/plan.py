"""The rules for what the post-processing stages produce: sizes, frame counts, fps. No torch.

One place for these decisions so the engine, the sidecar JSON, the API and the UI agree:

- upscale ×N multiplies width and height by N;
- interpolate ×K inserts K-1 frames between each pair of neighbours, so F frames become
  ``(F - 1) * K + 1`` and fps becomes ``fps * K``: the first and last frames keep their
  timestamps and the clip keeps its duration (49 frames at 8 fps -> 97 at 16 fps, 6 s both);
- stages run upscale first, then interpolate; RIFE's flow is estimated at half resolution
  (``flow_scale`` 0.5) on upscaled frames, where full-resolution flow costs 4-16x for no gain.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

# The one definition of the upscale/interpolate factors: JobSpec, the API schema and the UI read it.
Factor = Literal[1, 2, 4]
ALLOWED_FACTORS: tuple[int, ...] = get_args(Factor)


def check_factor(name: str, value: int) -> int:
    """Return ``value`` if it is an allowed upscale/interpolate factor, else raise ValueError."""
    if value not in ALLOWED_FACTORS:
        raise ValueError(f"{name} must be one of {ALLOWED_FACTORS}, got {value!r}")
    return value


def interpolated_frame_count(frames: int, factor: int) -> int:
    """Frames after interpolating ``frames`` by ``factor``: ``(frames - 1) * factor + 1``."""
    check_factor("interpolate", factor)
    if frames < 1:
        raise ValueError(f"need at least one frame, got {frames}")
    return (frames - 1) * factor + 1


def interpolated_fps(fps: float, factor: int) -> float:
    """Frame rate after interpolating by ``factor``."""
    check_factor("interpolate", factor)
    return fps * factor


def rife_flow_scale(upscale: int) -> float:
    """RIFE ``flow_scale`` to use on frames that were upscaled by ``upscale`` (1.0 = native)."""
    check_factor("upscale", upscale)
    return 1.0 if upscale == 1 else 0.5


# How large an upscaler's working set is, shared by the upscaler (tile planning) and the
# submit-time estimate, which cannot load the network: the widest conv at the upsampled
# resolution, a few such tensors alive, in tiles no larger than the device's side.
SR_LIVE_TENSORS = 3  # live activations per layer during a forward pass, a rough safety factor
SR_MAX_TILE_SIDE = 1024  # a GPU: larger tiles gain nothing; spare memory batches tiles instead
SR_CPU_MAX_TILE_SIDE = 384  # a CPU: mid-sized tiles beat whole frames (measured, postprocess.upscale)


def sr_max_tile_side(device_type: str) -> int:
    """The largest tile side an upscaler uses on a device of this type."""
    return SR_CPU_MAX_TILE_SIDE if device_type == "cpu" else SR_MAX_TILE_SIDE


def sr_bytes_per_pixel(widest_channels: int, native_scale: int, element_bytes: int) -> float:
    """Peak activation bytes per input pixel of an SR network (see the rule above)."""
    return float(element_bytes * widest_channels * max(native_scale * native_scale, 4) * SR_LIVE_TENSORS)


@dataclass(frozen=True)
class PostprocessPlan:
    """What a job's post-processing turns ``frames``×``height``×``width`` at ``fps`` into."""

    upscale: int
    interpolate: int
    in_frames: int
    in_fps: float
    in_width: int
    in_height: int

    def __post_init__(self) -> None:
        check_factor("upscale", self.upscale)
        check_factor("interpolate", self.interpolate)

    @property
    def out_width(self) -> int:
        return self.in_width * self.upscale

    @property
    def out_height(self) -> int:
        return self.in_height * self.upscale

    @property
    def out_frames(self) -> int:
        return interpolated_frame_count(self.in_frames, self.interpolate)

    @property
    def out_fps(self) -> float:
        return interpolated_fps(self.in_fps, self.interpolate)

    @property
    def flow_scale(self) -> float:
        return rife_flow_scale(self.upscale)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary for the sidecar: inputs, outputs and the RIFE flow scale."""
        data = asdict(self)
        data.update(
            out_width=self.out_width,
            out_height=self.out_height,
            out_frames=self.out_frames,
            out_fps=self.out_fps,
            flow_scale=self.flow_scale,
        )
        return data
