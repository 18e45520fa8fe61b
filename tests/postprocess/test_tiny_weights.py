"""The weight builders write the official on-disk layouts, and the user path loads each one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steadyframe.postprocess.rife import load_rife
from steadyframe.postprocess.upscale import load_upscaler
from steadyframe.testing import tiny_weights

CPU = torch.device("cpu")


def test_full_size_v3_hd_flownet_has_the_published_key_and_parameter_counts(tmp_path: Path) -> None:
    path = tiny_weights.save_rife_v3_hd(tmp_path / "flownet.pkl", full=True)
    raw = torch.load(path, weights_only=True)
    assert len(raw) == 160
    assert all(key.startswith("module.") for key in raw)
    assert sum(tensor.numel() for tensor in raw.values()) == 3_038_015
    assert load_rife(path, CPU).layout == "v3-hd"


def test_full_size_practical_rife_file_has_v4_25_shapes_and_training_extras(tmp_path: Path) -> None:
    path = tiny_weights.save_practical_rife_v4(tmp_path / "flownet.pkl", full=True)
    raw = torch.load(path, weights_only=True)
    assert all(key.startswith("module.") for key in raw)
    assert any(key.startswith("module.teacher.") for key in raw)
    assert any(key.startswith("module.caltime.") for key in raw)
    # 4.25: 16-channel encoder, block0 sees 3+3+16+16+1 channels, blocks emit 4 flow + 1 mask + 8 features
    assert raw["module.encode.cnn3.weight"].shape[1] == 16
    assert raw["module.block0.conv0.0.0.weight"].shape[:2] == (96, 39)
    assert raw["module.block1.conv0.0.0.weight"].shape[1] == 52
    assert raw["module.block4.lastconv.0.weight"].shape[:2] == (32, 52)
    model = load_rife(path, CPU)
    assert model.layout == "v4" and model.supports_timestep and model.pad_multiple(1.0) == 64


@pytest.mark.parametrize(
    ("builder", "wrapper", "params", "scale", "arch"),
    [
        (tiny_weights.save_realesrgan_x4plus, "params_ema", 16_697_987, 4, "ESRGAN"),
        (tiny_weights.save_realesrgan_x4plus_anime_6b, "params_ema", 4_467_779, 4, "ESRGAN"),
        (tiny_weights.save_realesr_general_x4v3, "params", 1_213_296, 4, "RealESRGAN Compact"),
        (tiny_weights.save_realesr_animevideov3, "params", 621_424, 4, "RealESRGAN Compact"),
    ],
)
def test_full_size_real_esrgan_files_match_the_published_sizes_and_wrappers(
    tmp_path: Path, builder, wrapper: str, params: int, scale: int, arch: str
) -> None:
    path = builder(tmp_path / "weights.pth", full=True)
    raw = torch.load(path, weights_only=True)
    assert list(raw) == [wrapper]
    upscaler = load_upscaler(path, CPU)
    assert sum(p.numel() for p in upscaler.descriptor.model.parameters()) == params
    assert (upscaler.native_scale, upscaler.architecture) == (scale, arch)


@pytest.mark.parametrize(
    ("name", "scale", "multiple_of"),
    [
        ("RealESRGAN_x4plus.pth", 4, 1),
        ("RealESRGAN_x2plus.pth", 2, 4),
        ("RealESRGAN_x4plus_anime_6B.pth", 4, 1),
        ("realesr-general-x4v3.pth", 4, 1),
        ("realesr-animevideov3.pth", 4, 1),
        ("RealESRGAN_x4.pth", 4, 1),
        ("RealESRGAN_x4plus.safetensors", 4, 1),
    ],
)
def test_every_tiny_upscaler_file_loads_through_spandrel(
    weights_dir: Path, name: str, scale: int, multiple_of: int
) -> None:
    upscaler = load_upscaler(weights_dir / name, CPU)
    assert upscaler.native_scale == scale
    assert upscaler.multiple_of == multiple_of
    assert upscaler.dtype == torch.float32  # CPU runs fp32


def test_cogvideo_x4_file_is_a_bare_state_dict(weights_dir: Path) -> None:
    raw = torch.load(weights_dir / "RealESRGAN_x4.pth", weights_only=True)
    assert "conv_first.weight" in raw and "params_ema" not in raw
