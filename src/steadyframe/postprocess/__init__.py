"""Optional post-processing after decoding: upscaling (spandrel SR files), then RIFE interpolation.

``upscale_frames`` and ``interpolate_frames`` import torch, so they load on first use: the
server can import ``steadyframe.postprocess.plan`` and ``.weights`` without pulling torch in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from steadyframe.postprocess.interpolate import interpolate_frames
    from steadyframe.postprocess.upscale import upscale_frames

__all__ = ["interpolate_frames", "upscale_frames"]


def __getattr__(name: str) -> Any:
    # PEP 562 lazy attributes keep torch out of processes that only need plan/weights
    if name == "upscale_frames":
        from steadyframe.postprocess.upscale import upscale_frames

        return upscale_frames
    if name == "interpolate_frames":
        from steadyframe.postprocess.interpolate import interpolate_frames

        return interpolate_frames
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
