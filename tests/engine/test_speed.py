"""The ``speed`` field: what each choice enables for one job, and that ``exact`` stays untouched."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from steadyframe.engine import attention, run_job
from steadyframe.engine import speed as engine_speed
from steadyframe.engine import stages as engine_stages
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

PROMPT = "a red fox running through snow"


def _cache_hooks(pipe) -> set[str]:
    names: set[str] = set()
    for module in pipe.transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            names |= set(registry.hooks)
    return names


class _Watching:
    """Job hooks that note which diffusers hooks the loaded pipeline carries during DENOISE."""

    def __init__(self, models) -> None:
        self.models = models
        self.during: set[str] = set()

    def enter_stage(self, stage, total=None) -> None:
        pass

    def step(self, stage, step, total) -> None:
        if stage == Stage.DENOISE:
            self.during |= _cache_hooks(self.models.last())


@pytest.mark.parametrize(("speed", "cache", "hook"), [
    ("fast", "pyramid_attention_broadcast", "pyramid_attention_broadcast"),
    ("fastest", "taylorseer", "taylorseer_cache"),
])  # fmt: skip
def test_fast_speeds_enable_their_cache_for_the_job_only_and_record_it(
    speed, cache, hook, settings, keep_loaded, tmp_path
):
    watching = _Watching(keep_loaded)
    spec = JobSpec(prompt=PROMPT, model="tiny-t2v", steps=8, seed=5, speed=speed)
    result = run_job(spec, settings, tmp_path / "out", hooks=watching, models=keep_loaded)
    assert hook in watching.during
    assert _cache_hooks(keep_loaded.last()) == set()  # gone after the job: the model stays clean
    assert result.speed["speed"] == speed and result.speed["cache"] == cache
    assert result.speed["cache_params"] == engine_speed.RECIPES[cache].params
    assert result.speed["attention"] == "sdpa"  # no fast kernel on a CPU
    sidecar = json.loads((tmp_path / "out" / "result.json").read_text())
    assert sidecar["speed"] == result.speed and sidecar["settings"]["speed"] == speed


def test_exact_after_fast_on_the_same_loaded_model_is_bit_exact_with_diffusers(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    captured: list[np.ndarray] = []
    original = engine_stages.to_uint8
    monkeypatch.setattr(engine_stages, "to_uint8", lambda frames: captured.append(frames.copy()) or original(frames))
    for speed in ("fast", "fastest", "exact"):
        spec = JobSpec(prompt=PROMPT, model="tiny-t2v", steps=8, seed=11, guidance=6.0, use_dynamic_cfg=False, speed=speed)
        result = run_job(spec, settings, tmp_path / speed, hooks=hooks, models=keep_loaded)
    assert result.speed["cache"] is None
    pipe = keep_loaded.last()
    direct = pipe(
        prompt=PROMPT, height=result.height, width=result.width, num_frames=result.frames, num_inference_steps=8,
        guidance_scale=6.0, use_dynamic_cfg=False, generator=torch.Generator().manual_seed(11), output_type="np",
    ).frames[0]  # fmt: skip
    assert np.array_equal(captured[-1], direct)
    assert not np.array_equal(captured[0], direct)  # the cache really changed the fast job's frames
    assert not np.array_equal(captured[1], direct)


def test_unknown_speed_is_refused_by_the_spec():
    with pytest.raises(ValueError, match="speed"):
        JobSpec(prompt=PROMPT, speed="ludicrous")


def _fake_kernel_calls(monkeypatch) -> list[int]:
    calls: list[int] = []

    def kernel(q, k, v):
        calls.append(q.shape[2])
        return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    monkeypatch.setattr(engine_speed, "pick_kernel", lambda device, dtype: attention.AttentionChoice("fake", kernel))
    return calls


def test_fast_jobs_use_an_installed_kernel_when_allowed_and_exact_never(settings, keep_loaded, hooks, tmp_path, monkeypatch):
    calls = _fake_kernel_calls(monkeypatch)
    exact = run_job(JobSpec(prompt=PROMPT, model="tiny-t2v", steps=2, seed=1), settings, tmp_path / "e", hooks=hooks, models=keep_loaded)
    assert exact.speed["attention"] == "sdpa" and calls == []
    fast = run_job(
        JobSpec(prompt=PROMPT, model="tiny-t2v", steps=2, seed=1, speed="fast"), settings, tmp_path / "f", hooks=hooks,
        models=keep_loaded,
    )  # fmt: skip
    assert fast.speed["attention"] == "fake" and calls
    processors = keep_loaded.last().transformer.attn_processors.values()
    assert not any(isinstance(p, attention.CogVideoXKernelAttnProcessor) for p in processors)  # restored
    calls.clear()
    off = settings.model_copy(update={"fast_attention": False})
    run_job(JobSpec(prompt=PROMPT, model="tiny-t2v", steps=2, seed=1, speed="fast"), off, tmp_path / "o", hooks=hooks, models=keep_loaded)
    assert calls == []


def test_kernel_processor_computes_what_diffusers_processor_does(settings, keep_loaded, hooks, tmp_path):
    run_job(JobSpec(prompt=PROMPT, model="tiny-1.5-t2v", steps=1, seed=1), settings, tmp_path / "p", hooks=hooks, models=keep_loaded)
    attn = keep_loaded.last().transformer.transformer_blocks[0].attn1
    generator = torch.Generator().manual_seed(0)
    video = torch.randn(2, 24, attn.to_q.in_features, generator=generator)
    text = torch.randn(2, 7, attn.to_q.in_features, generator=generator)
    rotary = (torch.randn(24, attn.to_q.out_features // attn.heads), torch.randn(24, attn.to_q.out_features // attn.heads))
    reference = attn.processor(attn, video, text, image_rotary_emb=rotary)
    ours = attention.CogVideoXKernelAttnProcessor(attention.AttentionChoice("sdpa", attention._sdpa))(
        attn, video, text, image_rotary_emb=rotary
    )
    for theirs, mine in zip(reference, ours):
        torch.testing.assert_close(mine, theirs)


def test_pick_kernel_falls_back_to_sdpa_off_cuda_or_in_full_precision(monkeypatch):
    monkeypatch.setitem(attention.KERNEL_FINDERS, "sageattention", lambda: (lambda q, k, v: q))
    assert attention.pick_kernel("cpu", torch.float16).name == "sdpa"
    assert attention.pick_kernel("cuda", torch.float32).name == "sdpa"
    assert attention.pick_kernel("cuda", torch.bfloat16).name == "sageattention"


def test_fast_jobs_upscale_in_bf16_on_a_cpu_that_has_it_and_exact_jobs_in_fp32(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    from steadyframe.postprocess import runtime
    from steadyframe.testing.tiny_weights import save_realesrgan_x2plus

    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    weights = save_realesrgan_x2plus(tmp_path / "w" / "RealESRGAN_x2plus.pth")
    recorded = {}
    for speed in ("exact", "fast"):
        spec = JobSpec(prompt=PROMPT, model="tiny-t2v", steps=2, seed=3, speed=speed, upscale=2, upscale_model=str(weights))
        result = run_job(spec, settings, tmp_path / speed, hooks=hooks, models=keep_loaded)
        recorded[speed] = result.speed["upscale_dtype"]
        sidecar = json.loads((tmp_path / speed / "result.json").read_text())
        assert sidecar["speed"]["upscale_dtype"] == recorded[speed]
    assert recorded == {"exact": "float32", "fast": "bfloat16"}
