"""RIFE IFNet in the Practical-RIFE 4.25 / 4.26 layout (arbitrary timestep).

State-dict compatible with those ``flownet.pkl`` files: an image encoder (``encode.*``) and five
coarse-to-fine blocks (``block0..4``) whose outputs carry 8 feature channels to the next block.
The files' ``teacher.*`` and ``caltime.*`` tensors serve training only and are not loaded.
Widths and counts are read from the file, so smaller test files use the same code.
Written from the published architecture description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steadyframe.postprocess.rife.warp import backward_warp

FLOW_AND_MASK = 5  # channels 0-3: flows to both frames, 4: blend mask; the rest are features


def _conv_lrelu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True), nn.LeakyReLU(0.2, True))


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


class Encoder(nn.Module):
    """Per-frame features at full resolution (``encode.*`` in the file)."""

    def __init__(self, hidden: int, out: int) -> None:
        super().__init__()
        self.cnn0 = nn.Conv2d(3, hidden, 3, 2, 1)
        self.cnn1 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn2 = nn.Conv2d(hidden, hidden, 3, 1, 1)
        self.cnn3 = nn.ConvTranspose2d(hidden, out, 4, 2, 1)
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.cnn0(x))
        x = self.relu(self.cnn1(x))
        x = self.relu(self.cnn2(x))
        return self.cnn3(x)


class ResConv(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, 1, 1)
        self.beta = nn.Parameter(torch.ones((1, width, 1, 1)))
        self.relu = nn.LeakyReLU(0.2, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv(x) * self.beta + x)


class FlowBlockV4(nn.Module):
    """One level: inputs (+ current flow) at 1/scale -> flow residual, mask, features."""

    def __init__(self, in_channels: int, width: int, out_channels: int, depth: int = 8) -> None:
        super().__init__()
        self.conv0 = nn.Sequential(_conv_lrelu(in_channels, width // 2, 2), _conv_lrelu(width // 2, width, 2))
        self.convblock = nn.Sequential(*[ResConv(width) for _ in range(depth)])
        self.lastconv = nn.Sequential(nn.ConvTranspose2d(width, 4 * out_channels, 4, 2, 1), nn.PixelShuffle(2))

    def forward(
        self, inputs: tuple[torch.Tensor, ...], flow: torch.Tensor | None, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # resizing each input before concatenating equals resizing the concatenation (bilinear is
        # per channel) and avoids building a full-resolution stack of ~50 channels
        parts = [_resize(part, 1.0 / scale) for part in inputs]
        if flow is not None:
            parts.append((_resize(flow, 1.0 / scale) / scale).to(parts[0].dtype))
        out = _resize(self.lastconv(self.convblock(self.conv0(torch.cat(parts, 1)))), scale)
        return out[:, :4] * scale, out[:, 4:5], out[:, FLOW_AND_MASK:]


class IFNetV4(nn.Module):
    """Frame at any ``timestep`` in (0, 1) between two frames."""

    supports_timestep = True

    def __init__(
        self,
        widths: tuple[int, ...] = (192, 128, 96, 64, 32),
        encoder_hidden: int = 16,
        encoder_out: int = 16,
        feature_channels: int = 8,
        depth: int = 8,
    ) -> None:
        super().__init__()
        self.num_blocks = len(widths)
        self.feature_channels = feature_channels
        out_channels = FLOW_AND_MASK + feature_channels
        first_in = 6 + 2 * encoder_out + 1  # both images, both features, timestep
        later_in = first_in + 1 + feature_channels + 4  # + mask, carried features, flow
        self.encode = Encoder(encoder_hidden, encoder_out)
        for index, width in enumerate(widths):
            block = FlowBlockV4(first_in if index == 0 else later_in, width, out_channels, depth)
            self.add_module(f"block{index}", block)

    @property
    def pad_base(self) -> int:
        """Frames are padded to multiples of ``pad_base / flow_scale`` (64 for five blocks)."""
        return 4 * 2 ** (self.num_blocks - 1)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float, flow_scale: float) -> torch.Tensor:
        """``img0``/``img1`` ``[N, 3, H, W]`` in [0, 1], H and W multiples of ``pad_base / flow_scale``.

        Returns the frame at ``timestep`` (0 = img0, 1 = img1), float32 ``[N, 3, H, W]``.
        """
        batch, _, height, width = img0.shape
        time = img0.new_full((batch, 1, height, width), float(timestep))
        feat0, feat1 = self.encode(img0), self.encode(img1)
        flow: torch.Tensor | None = None
        mask = features = img0.new_zeros((batch, 0, height, width))
        warped0, warped1 = img0, img1
        for index in range(self.num_blocks):
            block = getattr(self, f"block{index}")
            scale = 2 ** (self.num_blocks - 1 - index) / flow_scale
            if flow is None:
                flow, mask, features = block((img0, img1, feat0, feat1, time), None, scale)
                flow = flow.float()  # flows accumulate in fp32: half precision is coarse at 1000+ px
            else:
                wf0 = backward_warp(feat0, flow[:, :2])
                wf1 = backward_warp(feat1, flow[:, 2:4])
                delta, mask, features = block((warped0, warped1, wf0, wf1, time, mask, features), flow, scale)
                flow = flow + delta.float()
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask.float())
        return warped0.float() * weight + warped1.float() * (1 - weight)
