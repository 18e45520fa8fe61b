"""Random weight files in the exact on-disk layouts of the official upscaling and RIFE releases.

Each ``save_*`` writes one file (same key names, nesting, wrappers and prefixes as the
published file; widths and depths default to tiny values, ``full=True`` gives the published
sizes) and returns its path. Tests and benchmarks load them through the same code users do.

- RealESRGAN_x4plus.pth / RealESRGAN_x2plus.pth / RealESRGAN_x4plus_anime_6B.pth:
  RRDBNet, ``{"params_ema": state}`` (x2plus feeds pixel-unshuffled input: 12 channels);
- realesr-general-x4v3.pth / realesr-animevideov3.pth: SRVGGNetCompact, ``{"params": state}``;
- RealESRGAN_x4.pth (ai-forever, used by CogVideo's demo): RRDBNet, bare state dict;
- ``.safetensors``: RRDBNet, bare state dict;
- flownet.pkl v3.x HD (CogVideo's demo): IFNet HD v3, keys prefixed ``module.``;
- Practical-RIFE 4.25/4.26 flownet.pkl: IFNet v4, ``module.``-prefixed, plus ``teacher.*`` and
  ``caltime.*`` training tensors.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import Literal

import torch

from steadyframe.postprocess.rife.ifnet_v3 import IFNetV3HD
from steadyframe.postprocess.rife.ifnet_v4 import IFNetV4

Wrapper = Literal["params_ema", "params", None]


def _conv(gen: torch.Generator, out_ch: int, in_ch: int, gain: float = 0.1, k: int = 3) -> torch.Tensor:
    # Kaiming-normal scaled down, like basicsr's default_init_weights, so deep stacks stay bounded
    std = gain * math.sqrt(2.0 / (in_ch * k * k))
    return torch.randn((out_ch, in_ch, k, k), generator=gen) * std


def _bias(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.randn((n,), generator=gen) * 0.01


def _save(obj: object, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        assert isinstance(obj, dict)
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)
    return path


def _wrap(state: dict[str, torch.Tensor], wrapper: Wrapper) -> object:
    return {wrapper: state} if wrapper else state


def rrdbnet_state(
    *, scale: int = 4, num_feat: int = 8, num_grow: int = 32, num_block: int = 1, seed: int = 0
) -> "OrderedDict[str, torch.Tensor]":
    """Real-ESRGAN RRDBNet tensors (basicsr names); ``scale`` 2 uses 12-channel unshuffled input.

    ``num_grow`` stays 32: spandrel (like the published files) fixes the dense-block growth at 32.
    """
    gen = torch.Generator().manual_seed(seed)
    in_ch = {4: 3, 2: 12, 1: 48}[scale]
    state: OrderedDict[str, torch.Tensor] = OrderedDict()

    def conv(name: str, out_ch: int, cin: int, gain: float = 0.1) -> None:
        state[f"{name}.weight"] = _conv(gen, out_ch, cin, gain)
        state[f"{name}.bias"] = _bias(gen, out_ch)

    conv("conv_first", num_feat, in_ch, gain=1.0)
    for block in range(num_block):
        for rdb in (1, 2, 3):
            for index in range(1, 6):
                cin = num_feat + (index - 1) * num_grow
                conv(f"body.{block}.rdb{rdb}.conv{index}", num_grow if index < 5 else num_feat, cin)
    conv("conv_body", num_feat, num_feat)
    conv("conv_up1", num_feat, num_feat, gain=1.0)
    conv("conv_up2", num_feat, num_feat, gain=1.0)
    conv("conv_hr", num_feat, num_feat, gain=1.0)
    conv("conv_last", 3, num_feat, gain=1.0)
    state["conv_last.bias"] = torch.full((3,), 0.5)  # centre outputs in [0, 1]
    return state


def srvgg_state(
    *, scale: int = 4, num_feat: int = 8, num_conv: int = 2, seed: int = 0
) -> "OrderedDict[str, torch.Tensor]":
    """SRVGGNetCompact tensors (``body.N``, PReLU activations) of realesr-*-v3 models."""
    gen = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    index = 0

    def conv(out_ch: int, cin: int, gain: float) -> None:
        nonlocal index
        state[f"body.{index}.weight"] = _conv(gen, out_ch, cin, gain)
        state[f"body.{index}.bias"] = _bias(gen, out_ch)
        index += 1

    def prelu(n: int) -> None:
        nonlocal index
        state[f"body.{index}.weight"] = torch.full((n,), 0.25)
        index += 1

    conv(num_feat, 3, 1.0)
    prelu(num_feat)
    for _ in range(num_conv):
        conv(num_feat, num_feat, 1.0)
        prelu(num_feat)
    conv(3 * scale * scale, num_feat, 0.5)
    return state


def save_realesrgan_x4plus(path: Path, *, full: bool = False, wrapper: Wrapper = "params_ema", seed: int = 0) -> Path:
    """RealESRGAN_x4plus.pth layout: RRDBNet ×4 (64 feat, 23 blocks when ``full``) under ``params_ema``."""
    sizes = dict(num_feat=64, num_grow=32, num_block=23) if full else {}
    return _save(_wrap(rrdbnet_state(scale=4, seed=seed, **sizes), wrapper), path)


def save_realesrgan_x2plus(path: Path, *, full: bool = False, seed: int = 0) -> Path:
    """RealESRGAN_x2plus.pth layout: RRDBNet with pixel-unshuffle input, ×2, under ``params_ema``."""
    sizes = dict(num_feat=64, num_grow=32, num_block=23) if full else {}
    return _save(_wrap(rrdbnet_state(scale=2, seed=seed, **sizes), "params_ema"), path)


def save_realesrgan_x4plus_anime_6b(path: Path, *, full: bool = False, seed: int = 0) -> Path:
    """RealESRGAN_x4plus_anime_6B.pth layout: RRDBNet ×4 with 6 blocks, under ``params_ema``."""
    sizes = dict(num_feat=64, num_grow=32) if full else {}
    return _save(_wrap(rrdbnet_state(scale=4, num_block=6, seed=seed, **sizes), "params_ema"), path)


def save_realesr_general_x4v3(path: Path, *, full: bool = False, seed: int = 0) -> Path:
    """realesr-general-x4v3.pth layout: SRVGGNetCompact ×4 (64 feat, 32 convs when ``full``) under ``params``."""
    sizes = dict(num_feat=64, num_conv=32) if full else {}
    return _save(_wrap(srvgg_state(scale=4, seed=seed, **sizes), "params"), path)


def save_realesr_animevideov3(path: Path, *, full: bool = False, seed: int = 0) -> Path:
    """realesr-animevideov3.pth layout: SRVGGNetCompact ×4 (64 feat, 16 convs when ``full``) under ``params``."""
    sizes = dict(num_feat=64, num_conv=16) if full else dict(num_conv=3)
    return _save(_wrap(srvgg_state(scale=4, seed=seed, **sizes), "params"), path)


def save_cogvideo_realesrgan_x4(path: Path, *, full: bool = False, seed: int = 0) -> Path:
    """ai-forever RealESRGAN_x4.pth as CogVideo's demo downloads it: bare RRDBNet state dict."""
    sizes = dict(num_feat=64, num_grow=32, num_block=23) if full else {}
    return _save(rrdbnet_state(scale=4, seed=seed, **sizes), path)


def save_realesrgan_safetensors(path: Path, *, scale: int = 4, seed: int = 0) -> Path:
    """A ``.safetensors`` RRDBNet (bare state dict, basicsr names)."""
    return _save(rrdbnet_state(scale=scale, seed=seed), Path(path).with_suffix(".safetensors"))


def save_restoration_model(path: Path, *, seed: int = 0) -> Path:
    """A ×1 SRVGGNetCompact: a valid spandrel file that is restoration, not super-resolution."""
    return _save(_wrap(srvgg_state(scale=1, seed=seed), "params"), path)


def _randomise(module: torch.nn.Module, seed: int, zero_flow: bool) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.endswith(".beta"):
                continue
            if param.dim() == 4:
                fan_in = param.shape[1] * param.shape[2] * param.shape[3]
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5 * math.sqrt(2.0 / fan_in))
            elif "bias" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.01)
    if zero_flow:
        _zero_flow_heads(module)


def _zero_flow_heads(module: torch.nn.Module) -> None:
    """Make every block predict zero flow (a network whose warps are identities)."""
    with torch.no_grad():
        for name, sub in module.named_modules():
            if name.endswith("conv1") and isinstance(sub, torch.nn.Sequential):  # v3: flow head
                sub[2].weight.zero_()
                sub[2].bias.zero_()
            if name.endswith("lastconv") and isinstance(sub, torch.nn.Sequential):  # v4: first 4 channels after shuffle
                sub[0].weight[:, :16].zero_()
                sub[0].bias[:16].zero_()


def save_rife_v3_hd(path: Path, *, full: bool = False, zero_flow: bool = False, seed: int = 0) -> Path:
    """flownet.pkl of CogVideo's demo: IFNet HD v3, every key prefixed ``module.``.

    ``full`` gives the published width 90 (160 tensors, 3,038,015 parameters); tiny is width 8.
    ``zero_flow`` zeroes the flow heads so the network's warps are exact identities.
    """
    network = IFNetV3HD(width=90 if full else 8)
    _randomise(network, seed, zero_flow)
    state = OrderedDict((f"module.{k}", v) for k, v in network.state_dict().items())
    return _save(state, path)


def save_practical_rife_v4(path: Path, *, full: bool = False, zero_flow: bool = False, seed: int = 0) -> Path:
    """Practical-RIFE 4.25/4.26 flownet.pkl: IFNet v4 + ``teacher.*``/``caltime.*`` extras, ``module.``-prefixed.

    ``full`` gives the published widths (192, 128, 96, 64, 32); tiny is (16, 16, 8, 8, 8).
    """
    widths = (192, 128, 96, 64, 32) if full else (16, 16, 8, 8, 8)
    network = IFNetV4(widths=widths)
    _randomise(network, seed, zero_flow)
    state = OrderedDict((f"module.{k}", v) for k, v in network.state_dict().items())
    gen = torch.Generator().manual_seed(seed + 1)
    teacher_width = 64 if full else 8
    extras = {
        "teacher.conv0.0.0.weight": (teacher_width // 2, 8 + 4 + 8 + 3 + 32, 3, 3),
        "teacher.conv0.0.0.bias": (teacher_width // 2,),
        "teacher.lastconv.0.weight": (teacher_width, 4 * 13, 4, 4),
        "caltime.0.weight": (8, 32 + 9, 3, 3),
        "caltime.0.bias": (8,),
        "caltime.8.weight": (1, 64, 3, 3),
    }
    for key, shape in extras.items():
        state[f"module.{key}"] = torch.randn(shape, generator=gen) * 0.01
    return _save(state, path)
