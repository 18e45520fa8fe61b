"""RIFE frame interpolation networks (hand-written: no maintained package loads these files offline).

``load_rife(path, device)`` reads a v3.x HD ``flownet.pkl`` or a Practical-RIFE 4.25/4.26 file
and returns a ``RifeModel`` that pads frames, runs the network and crops the result.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from steadyframe.postprocess.rife.loading import Layout, build_network, read_state_dict

FLOW_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class RifeModel:
    """A loaded RIFE network on ``device``; frames in and out are float ``[1, 3, H, W]`` in [0, 1]."""

    network: nn.Module
    layout: Layout
    device: torch.device
    dtype: torch.dtype

    @property
    def supports_timestep(self) -> bool:
        return bool(getattr(self.network, "supports_timestep"))

    def pad_multiple(self, flow_scale: float) -> int:
        """Frame sides are padded up to a multiple of this for ``flow_scale``."""
        base = int(getattr(self.network, "pad_base"))
        return int(max(base, base / flow_scale))

    def pad(self, image: torch.Tensor, flow_scale: float) -> torch.Tensor:
        """Zero-pad right and bottom to the network's multiple (both frames get the same padding)."""
        multiple = self.pad_multiple(flow_scale)
        height, width = image.shape[2], image.shape[3]
        pad_h, pad_w = -height % multiple, -width % multiple
        return F.pad(image, (0, pad_w, 0, pad_h)) if pad_h or pad_w else image

    def predict(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float, flow_scale: float) -> torch.Tensor:
        """The frame at ``timestep`` between padded ``img0`` and ``img1``: float32, still padded."""
        return self.network(img0.to(self.dtype), img1.to(self.dtype), timestep, flow_scale).clamp_(0.0, 1.0)

    def between(
        self, img0: torch.Tensor, img1: torch.Tensor, factor: int, flow_scale: float
    ) -> Iterator[torch.Tensor]:
        """Yield the ``factor - 1`` frames between padded ``img0`` and ``img1``, in time order.

        Timestep networks (v4) predict each ``k / factor`` directly; midpoint-only networks (v3)
        recurse: the middle first, then the middles of each half.
        """
        if self.supports_timestep:
            for step in range(1, factor):
                yield self.predict(img0, img1, step / factor, flow_scale)
            return
        yield from self._midpoints(img0, img1, factor, flow_scale)

    def _midpoints(
        self, img0: torch.Tensor, img1: torch.Tensor, factor: int, flow_scale: float
    ) -> Iterator[torch.Tensor]:
        if factor < 2:
            return
        middle = self.predict(img0, img1, 0.5, flow_scale)
        yield from self._midpoints(img0, middle, factor // 2, flow_scale)
        yield middle
        yield from self._midpoints(middle, img1, factor // 2, flow_scale)


def load_rife(path: Path, device: torch.device, dtype: torch.dtype | None = None) -> RifeModel:
    """Load a RIFE file onto ``device``: fp16 on CUDA (flows and warping stay fp32), fp32 elsewhere.

    ``dtype`` overrides that choice. Raises ``ModelUnavailableError`` for missing, unreadable or
    unknown files.
    """
    state = read_state_dict(Path(path))
    network, layout = build_network(state, Path(path).name)
    del state
    if dtype is None:
        dtype = torch.float16 if device.type == "cuda" else torch.float32
    return RifeModel(network=network.to(device=device, dtype=dtype), layout=layout, device=device, dtype=dtype)
