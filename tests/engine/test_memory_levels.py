"""Each memory level applied to a real tiny pipeline, checked by what it changed; fp8 storage runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import CogVideoXPipeline

from steadyframe.contracts import LoadEachTime
from steadyframe.engine import run_job
from steadyframe.engine import stages as engine_stages
from steadyframe.engine.loading import locate_weights
from steadyframe.engine.memory_levels import (
    MAX_MEMORY_LEVEL,
    MEMORY_LEVELS_TABLE,
    apply_memory_level,
    applicable_levels,
    effective_level,
    level,
)
from steadyframe.families import resolve_model
from steadyframe.spec import JobSpec
from steadyframe.worker.ladder import next_level, supported_levels

FP8_MIN_PSNR_DB = 25.0  # fp8 storage vs full precision, same seed, on the tiny model


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from steadyframe.settings import Settings

    data = tmp_path_factory.mktemp("levels")
    settings = Settings(data_dir=data, device="cpu")
    return locate_weights(resolve_model("tiny-t2v", settings, "t2v"), settings)


def _fresh(folder):
    return CogVideoXPipeline.from_pretrained(folder)


def _hook_names(module) -> set[str]:
    registry = getattr(module, "_diffusers_hook", None)
    return set(registry.hooks) if registry is not None else set()


def test_the_table_orders_levels_and_says_where_each_runs():
    assert [entry.number for entry in MEMORY_LEVELS_TABLE] == list(range(MAX_MEMORY_LEVEL + 1))
    assert [entry.name for entry in MEMORY_LEVELS_TABLE] == [
        "none", "vae_tiling", "fp8_storage", "model_offload", "group_offload", "sequential_offload",
    ]  # fmt: skip
    assert applicable_levels("cpu") == [0, 1, 2]
    assert applicable_levels("CUDA:1") == [0, 1, 2, 3, 4, 5]
    assert applicable_levels("mps") == [0, 1]
    assert effective_level(5, "cpu") == 2 and effective_level(4, "cuda") == 4
    assert supported_levels("cpu", 5) == [0, 1, 2]
    assert next_level(2, supported_levels("cuda", 5)) == 3
    with pytest.raises(ValueError):
        level(6)


def test_level_0_places_everything_on_the_device_in_full_precision(tiny_folder):
    pipe = apply_memory_level(_fresh(tiny_folder), 0, "cpu")
    assert not pipe.vae.use_tiling and not pipe.vae.use_slicing
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.float32}
    assert not any(_hook_names(m) for m in pipe.transformer.modules())
    assert getattr(pipe.transformer, "_hf_hook", None) is None


def test_level_1_tiles_and_slices_the_vae_only(tiny_folder):
    pipe = apply_memory_level(_fresh(tiny_folder), 1, "cpu")
    assert pipe.vae.use_tiling and pipe.vae.use_slicing
    assert {p.dtype for p in pipe.transformer.parameters()} == {torch.float32}


def test_level_2_stores_block_weights_in_fp8_and_keeps_sensitive_layers_full(tiny_folder):
    pipe = apply_memory_level(_fresh(tiny_folder), 2, "cpu")
    transformer = pipe.transformer
    block = transformer.transformer_blocks[0]
    assert pipe.vae.use_tiling
    assert block.attn1.to_q.weight.dtype == torch.float8_e4m3fn
    assert block.ff.net[0].proj.weight.dtype == torch.float8_e4m3fn
    assert "layerwise_casting" in _hook_names(block.attn1.to_q)
    # diffusers' own skip list for CogVideoX: patch embedding and norms stay in full precision
    assert {p.dtype for p in transformer.patch_embed.parameters()} == {torch.float32}
    assert {p.dtype for p in transformer.norm_final.parameters()} == {torch.float32}
    assert {p.dtype for p in block.norm1.parameters()} == {torch.float32}
    # only the transformer: text encoder and VAE untouched
    assert {p.dtype for p in pipe.text_encoder.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}


# Offload levels only run on CUDA; their placement functions are applied here with the CPU as the
# "accelerator" so the hooks they install can be checked on this machine.


def test_level_3_puts_a_whole_model_offload_hook_on_each_model(tiny_folder):
    pipe = _fresh(tiny_folder)
    level(3).place(pipe, "cpu")
    for model in (pipe.transformer, pipe.text_encoder, pipe.vae):
        assert type(model._hf_hook).__name__ == "CpuOffload"
    assert getattr(pipe.transformer.transformer_blocks[0].attn1.to_q, "_hf_hook", None) is None


def test_level_4_group_offloads_block_by_block(tiny_folder):
    pipe = _fresh(tiny_folder)
    level(4).place(pipe, "cpu")
    blocks = pipe.transformer.transformer_blocks
    for block in blocks:
        assert "group_offloading" in _hook_names(block)
    hook = blocks[0]._diffusers_hook.get_hook("group_offloading")
    assert hook.group.onload_device == torch.device("cpu") and hook.group.stream is None  # streams on CUDA only
    assert len(hook.group.modules) == 1  # one block per group
    assert "group_offloading" in _hook_names(pipe.text_encoder) or any(
        _hook_names(m) for m in pipe.text_encoder.modules()
    )


def test_level_5_offloads_leaf_by_leaf(tiny_folder):
    pipe = _fresh(tiny_folder)
    level(5).place(pipe, "cpu")
    to_q = pipe.transformer.transformer_blocks[0].attn1.to_q
    assert type(to_q._hf_hook).__name__ == "AlignDevicesHook"
    assert to_q.weight.device == torch.device("meta")  # weights live off-device until the leaf runs


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def test_fp8_storage_job_runs_on_the_cpu_close_to_full_precision(settings, hooks, tmp_path, monkeypatch):
    captured: list[np.ndarray] = []
    original = engine_stages.to_uint8
    monkeypatch.setattr(engine_stages, "to_uint8", lambda frames: captured.append(frames.copy()) or original(frames))
    spec = JobSpec(prompt="a red fox running through snow", model="tiny-t2v", steps=4, seed=7)
    models = LoadEachTime()
    full = run_job(spec, settings, tmp_path / "full", hooks=hooks, models=models, memory_level=0)
    fp8 = run_job(spec, settings, tmp_path / "fp8", hooks=hooks, models=models, memory_level=2)
    assert (full.memory_level, fp8.memory_level) == (0, 2)
    assert not np.array_equal(captured[0], captured[1])  # fp8 really ran
    assert _psnr(captured[0], captured[1]) >= FP8_MIN_PSNR_DB

