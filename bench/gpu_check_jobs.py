"""Job runners that ``bench/gpu_check.py`` hands to real steadyframe workers (``module:function``).

``run`` reads the job's prompt: ``device assert`` trips a real device-side assert (a sticky CUDA
error: the worker must be recycled); ``oom ladder`` loads the check model at the memory level the
worker's OOM ladder asks for, under a per-process memory cap, so low levels hit a real CUDA OOM;
anything else does a little CUDA work and succeeds.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from steadyframe.contracts import JobResult
from steadyframe.engine.memory_levels import apply_memory_level
from steadyframe.stages import Stage

_MASTER: dict[str, Any] = {}  # the check model on the CPU, built once per worker process
_ATTEMPTS: list[dict[str, Any]] = []


def _result(out_dir: Path, level: int, extra: dict[str, Any]) -> JobResult:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "gpu_check.json"
    path.write_text(json.dumps(extra))
    return JobResult(
        video_path=str(path), gif_path=str(path), sidecar_path=str(path), seed=0, frames=1, fps=1.0, width=1,
        height=1, duration_s=1.0, memory_level=level, model="gpu-check", timings={}, speed=extra,
    )  # fmt: skip


def _master_pipeline(device: str) -> tuple[Any, Any]:
    """Build the check model on the GPU (fast random init), park it on the CPU, then cap memory."""
    if "pipe" not in _MASTER:
        from gpu_configs import COGVIDEOX_5B, TINY, build_pipeline

        model = TINY if os.environ.get("GPU_CHECK_DRY_RUN") else COGVIDEOX_5B
        pipe = build_pipeline(model, device)
        pipe.to("cpu")
        torch.cuda.empty_cache()
        cap_gb = float(os.environ.get("GPU_CHECK_CAP_GB", "8"))
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gb * 2**30 / total))
        _MASTER.update(pipe=pipe, model=model, baseline=torch.cuda.memory_allocated(), cap_gb=cap_gb)
    return _MASTER["pipe"], _MASTER["model"]


def _undo_level(pipe: Any) -> None:
    """Take whatever a memory level installed off the pipeline and park it on the CPU again."""
    from diffusers.hooks import HookRegistry

    pipe.remove_all_hooks()
    for component in pipe.components.values():
        if isinstance(component, torch.nn.Module):
            for module in component.modules():
                registry = getattr(module, "_diffusers_hook", None)
                if isinstance(registry, HookRegistry):
                    for name in list(registry.hooks):
                        registry.remove_hook(name, recurse=False)
    pipe.to("cpu")


def _oom_ladder(out_dir: Path, hooks: Any, level: int) -> JobResult:
    pipe, model = _master_pipeline("cuda")
    _ATTEMPTS.append({"level": level, "allocated_mb_at_start": torch.cuda.memory_allocated() / 2**20})
    hooks.enter_stage(Stage.DENOISE, 1)
    torch.cuda.reset_peak_memory_stats()
    try:
        apply_memory_level(pipe, level, "cuda")
        pipe(prompt="a red fox running through snow", height=model.height, width=model.width, num_frames=model.frames,
             num_inference_steps=1, guidance_scale=6.0, output_type="latent",
             generator=torch.Generator().manual_seed(0))  # fmt: skip
    finally:
        _undo_level(pipe)
    hooks.step(Stage.DENOISE, 1, 1)
    extra = {
        "attempts": _ATTEMPTS,
        "baseline_mb": _MASTER["baseline"] / 2**20,
        "cap_gb": _MASTER["cap_gb"],
        "peak_mb": torch.cuda.max_memory_allocated() / 2**20,
    }
    return _result(out_dir, level, extra)


def run(spec: Any, settings: Any, out_dir: Path, *, hooks: Any, models: Any, memory_level: int = 0) -> JobResult:
    out_dir = Path(out_dir)
    if spec.prompt == "oom ladder":
        return _oom_ladder(out_dir, hooks, memory_level)
    hooks.enter_stage(Stage.DENOISE, 1)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if spec.prompt == "device assert" and device == "cuda":
        values = torch.zeros(4, device=device)
        values[torch.tensor([40], device=device)] += 1  # out-of-bounds index: a device-side assert
        torch.cuda.synchronize()
    product = torch.ones(256, 256, device=device) @ torch.ones(256, 256, device=device)
    hooks.step(Stage.DENOISE, 1, 1)
    return _result(out_dir, memory_level, {"checksum": float(product.sum()), "pid": os.getpid(), "device": device})
