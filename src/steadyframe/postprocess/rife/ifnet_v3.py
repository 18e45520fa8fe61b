"""RIFE IFNet in the v3.x "HD" layout: the ``flownet.pkl`` CogVideo's demo downloads.

State-dict compatible with that file (160 tensors, 3,038,015 parameters at width 90, keys
``module.``-prefixed on disk). It predicts the middle frame only: three coarse-to-fine blocks,
each run in both directions and averaged. ``block_tea`` (the training-time teacher) is kept so
the file loads strictly, but never runs. Written from the published architecture description.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from steadyframe.postprocess.rife.warp import backward_warp


def _conv_prelu(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=True), nn.PReLU(out_ch))


def _upsample_head(width: int, out_channels: int) -> nn.Sequential:
    half = width // 2
    return nn.Sequential(
        nn.ConvTranspose2d(width, half, 4, 2, 1), nn.PReLU(half), nn.ConvTranspose2d(half, out_channels, 4, 2, 1)
    )


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    if factor == 1.0:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False, recompute_scale_factor=False)


class FlowBlockV3(nn.Module):
    """One refinement level: images + mask + current flow at 1/scale -> flow and mask residuals."""

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        half = width // 2
        self.conv0 = nn.Sequential(_conv_prelu(in_channels, half, 2), _conv_prelu(half, width, 2))
        self.convblock0 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock1 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock2 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.convblock3 = nn.Sequential(_conv_prelu(width, width), _conv_prelu(width, width))
        self.conv1 = _upsample_head(width, 4)  # flow to both frames
        self.conv2 = _upsample_head(width, 1)  # blend mask

    def forward(
        self, inputs: tuple[torch.Tensor, ...], flow: torch.Tensor, scale: float
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # resize each input, then concatenate: same result (bilinear is per channel), less memory
        parts = [_resize(part, 1.0 / scale) for part in inputs]
        parts.append((_resize(flow, 1.0 / scale) / scale).to(parts[0].dtype))
        feat = self.conv0(torch.cat(parts, 1))
        for residual in (self.convblock0, self.convblock1, self.convblock2, self.convblock3):
            feat = residual(feat) + feat
        flow_out = _resize(self.conv1(feat), scale) * scale
        mask_out = _resize(self.conv2(feat), scale)
        return flow_out, mask_out


class IFNetV3HD(nn.Module):
    """Middle-frame predictor; ``width`` is 90 in the published file (smaller in test files)."""

    pad_base = 32  # frames are padded to multiples of pad_base / flow_scale
    supports_timestep = False

    def __init__(self, width: int = 90) -> None:
        super().__init__()
        self.block0 = FlowBlockV3(7 + 4, width)
        self.block1 = FlowBlockV3(7 + 4, width)
        self.block2 = FlowBlockV3(7 + 4, width)
        self.block_tea = FlowBlockV3(10 + 4, width)

    def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float, flow_scale: float) -> torch.Tensor:
        """``img0``/``img1`` ``[N, 3, H, W]`` in [0, 1], H and W multiples of ``pad_base / flow_scale``.

        Returns the frame halfway between them, float32 ``[N, 3, H, W]``. ``timestep`` must be 0.5.
        """
        if timestep != 0.5:
            raise ValueError("the v3 HD RIFE network only predicts the middle frame (timestep 0.5)")
        batch, _, height, width = img0.shape
        # flows accumulate in fp32 even in a half-precision network: fp16 is coarse at 1000+ px
        flow = img0.new_zeros((batch, 4, height, width), dtype=torch.float32)
        mask = img0.new_zeros((batch, 1, height, width))
        warped0, warped1 = img0, img1
        for block, scale in zip((self.block0, self.block1, self.block2), (4.0, 2.0, 1.0)):
            scale = scale / flow_scale
            # both directions, the second with the images and flows swapped, then averaged
            flow_a, mask_a = block((warped0, warped1, mask), flow, scale)
            flow_b, mask_b = block((warped1, warped0, -mask), torch.cat((flow[:, 2:4], flow[:, :2]), 1), scale)
            flow = flow + (flow_a + torch.cat((flow_b[:, 2:4], flow_b[:, :2]), 1)).float() / 2
            mask = mask + (mask_a - mask_b) / 2
            warped0 = backward_warp(img0, flow[:, :2])
            warped1 = backward_warp(img1, flow[:, 2:4])
        weight = torch.sigmoid(mask.float())
        return warped0.float() * weight + warped1.float() * (1 - weight)
