"""Half-precision paths (used on CUDA) run on the CPU too: same results within fp16 tolerance."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steadyframe.postprocess.rife import load_rife
from steadyframe.postprocess.rife.warp import backward_warp
from steadyframe.contracts import LoadEachTime
from steadyframe.postprocess import runtime, upscale_frames
from steadyframe.postprocess.runtime import cpu_has_native_bf16, frame_to_tensor, half_dtype
from steadyframe.postprocess.upscale import load_upscaler

CPU = torch.device("cpu")


def test_cuda_prefers_fp16_and_cpu_stays_fp32() -> None:
    cuda = torch.device("cuda")
    assert half_dtype(cuda, supports_half=True, supports_bfloat16=True) == torch.float16
    assert half_dtype(CPU, supports_half=True, supports_bfloat16=True) == torch.float32


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    def cpuinfo(flags: str) -> Path:
        path = tmp_path / f"cpuinfo-{len(list(tmp_path.iterdir()))}"
        path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        return path

    assert cpu_has_native_bf16(cpuinfo("fpu sse avx2 avx512f avx512_bf16 avx512_vnni")) is True
    assert cpu_has_native_bf16(cpuinfo("fpu sse avx2 amx_tile amx_bf16")) is True
    assert cpu_has_native_bf16(cpuinfo("fpu sse avx2 avx512f avx512bw")) is False  # bf16 emulated: slower
    assert cpu_has_native_bf16(tmp_path / "missing") is False


@pytest.mark.parametrize("native", [True, False])
def test_reduced_precision_on_a_cpu_is_bf16_only_where_the_cpu_has_it(monkeypatch, native: bool) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    reduced = half_dtype(CPU, supports_half=True, supports_bfloat16=True, reduced_on_cpu=True)
    assert reduced == (torch.bfloat16 if native else torch.float32)
    assert half_dtype(CPU, supports_half=True, supports_bfloat16=False, reduced_on_cpu=True) == torch.float32
    assert half_dtype(CPU, supports_half=True, supports_bfloat16=True) == torch.float32  # exact jobs


def test_reduced_precision_upscaling_runs_bf16_and_stays_close_to_fp32(weights_dir: Path, make_clip, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)  # emulated where it is not: same numbers
    frames = make_clip(2, 32, 48, step=3)
    results, dtypes = [], []
    for reduced in (False, True):
        used: dict[str, str] = {}
        results.append(upscale_frames(
            frames, weights=weights_dir / "realesr-general-x4v3.pth", scale=4, device="cpu", models=LoadEachTime(),
            on_frame=lambda done, total: None, reduced_precision=reduced, used=used,
        ))  # fmt: skip
        dtypes.append(used["dtype"])
    assert dtypes == ["float32", "bfloat16"]
    full, reduced_frames = (np.asarray(r, dtype=np.float64) for r in results)
    assert full.shape == reduced_frames.shape == (2, 128, 192, 3)
    mse = float(np.mean((full - reduced_frames) ** 2))
    assert mse > 0 and 10 * np.log10(255.0**2 / mse) > 35.0  # bf16 ran, a few levels of 255 apart at most


def test_warping_samples_in_fp32_and_returns_the_network_dtype() -> None:
    image = torch.rand(1, 3, 16, 16).half()
    flow = torch.full((1, 2, 16, 16), 0.25).half()
    warped = backward_warp(image, flow)
    assert warped.dtype == torch.float16
    reference = backward_warp(image.float(), flow.float())
    assert torch.equal(warped, reference.half())  # same fp32 sampling, rounded once at the end


@pytest.mark.parametrize("layout", ["v3", "v4"])
def test_rife_in_half_precision_matches_fp32(weights_dir: Path, make_clip, layout: str) -> None:
    frames = make_clip(2, 64, 64, step=3)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        rife = load_rife(weights_dir / layout / "flownet.pkl", CPU, dtype=dtype)
        first, second = (rife.pad(frame_to_tensor(f, CPU, torch.float32), 1.0) for f in frames)
        with torch.inference_mode():
            results.append(rife.predict(first, second, 0.5, 1.0))
    assert results[1].dtype == torch.float32  # the blend and the warps leave the network in fp32
    assert (results[0] - results[1]).abs().mean() < 0.02


def test_upscaler_in_half_precision_matches_fp32(weights_dir: Path, make_frame) -> None:
    image = frame_to_tensor(make_frame(24, 24), CPU, torch.float32)
    outputs = []
    for dtype in (torch.float32, torch.bfloat16):
        upscaler = load_upscaler(weights_dir / "realesr-general-x4v3.pth", CPU, dtype=dtype)
        with torch.inference_mode():
            outputs.append(upscaler.upscale(image, 4, tile=16))
    assert outputs[1].dtype == torch.float32
    assert (outputs[0] - outputs[1]).abs().mean() < 0.02
