"""Engine overhead: wall time of ``run_job`` against a bare diffusers pipeline call, same run.

Builds (once, deterministically) a random CogVideoX 1.0-style text-to-video model big enough
that one job takes several seconds on a CPU, loads it once, then alternates engine jobs and
bare ``pipe(..., output_type="np")`` calls with the same seed and settings. The engine column
includes everything a job does beyond the bare call: validation, prompt-length check, the
split stages, uint8 conversion, MP4 + GIF + sidecar writing.

    python bench/overhead.py [--repeats 3] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from steadyframe.contracts import NullHooks
from steadyframe.engine import run_job
from steadyframe.engine.loading import load_pipeline, locate_weights
from steadyframe.families import BUILTIN_MARKER, FAMILIES, Family, ModelRef
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec

BENCH_FAMILY = dataclasses.replace(
    FAMILIES["tiny-t2v"], name="bench-t2v", default_width=192, default_height=128, default_frames=17, max_frames=17
)


def build_bench_model(
    folder: Path, family: Family = BENCH_FAMILY, *, heads: int = 6, layers: int = 4, rotary: bool = False
) -> Path:
    """A random CogVideoX T2V pipeline (``heads`` × 64, ``layers`` blocks, a 4-level VAE) saved like a
    real model; the defaults are the 1.0-style model this bench uses, bench/speed.py asks for a 5B shape."""
    from diffusers import (
        AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )  # fmt: skip
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from steadyframe.engine.tiny_models import _scheduler_config, _vocab

    if (folder / BUILTIN_MARKER).is_file():
        return folder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = T5Tokenizer(vocab=_vocab(), extra_ids=0)
        text_encoder = T5EncoderModel(
            T5Config(vocab_size=len(tokenizer), d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4)
        )
        vae = AutoencoderKLCogVideoX(
            block_out_channels=(16, 16, 32, 32), latent_channels=8, layers_per_block=1, norm_num_groups=8,
            sample_height=480, sample_width=720,
        )  # fmt: skip
        transformer = CogVideoXTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=64, in_channels=8, out_channels=8, time_embed_dim=128,
            text_embed_dim=128, num_layers=layers, sample_height=family.default_height // 8,
            sample_width=family.default_width // 8, sample_frames=family.default_frames,
            use_rotary_positional_embeddings=rotary,
        )  # fmt: skip
    scheduler_cls = CogVideoXDPMScheduler if family.scheduler == "dpm" else CogVideoXDDIMScheduler
    scheduler = scheduler_cls(**_scheduler_config(family))
    pipe = CogVideoXPipeline(tokenizer, text_encoder, vae, transformer, scheduler)
    pipe.save_pretrained(folder, safe_serialization=True)
    (folder / BUILTIN_MARKER).write_text(json.dumps({"family": family.name, "test_noise": True}))
    return folder


class KeepOne:
    """A provider holding the one pipeline both sides use, so neither pays for loading."""

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe

    def acquire(self, key: str, loader: Callable[[], Any], *, size_mb: float | None = None) -> Any:
        @contextmanager
        def _held() -> Iterator[Any]:
            yield self.pipe

        return _held()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "steadyframe-bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    FAMILIES[BENCH_FAMILY.name] = BENCH_FAMILY  # a bench-only family with the bigger size rules
    folder = build_bench_model(args.cache / BENCH_FAMILY.name)
    settings = Settings(data_dir=args.cache / "data", device="cpu")
    ref = ModelRef(BENCH_FAMILY, str(folder), local_dir=folder)
    pipe = load_pipeline(ref, locate_weights(ref, settings), mode="t2v", device="cpu", memory_level=0)
    provider = KeepOne(pipe)
    spec = JobSpec(prompt="a red car driving along a coastal road at sunset", model=str(folder),
                   steps=args.steps, seed=42, guidance=6.0, use_dynamic_cfg=True)  # fmt: skip

    stage_times: list[dict[str, float]] = []

    def engine() -> None:
        with tempfile.TemporaryDirectory() as out:
            result = run_job(spec, settings, Path(out), hooks=NullHooks(), models=provider)
        stage_times.append(result.timings)

    def bare() -> None:
        pipe(prompt=spec.prompt, height=BENCH_FAMILY.default_height, width=BENCH_FAMILY.default_width,
             num_frames=BENCH_FAMILY.default_frames, num_inference_steps=args.steps, guidance_scale=6.0,
             use_dynamic_cfg=True, generator=torch.Generator().manual_seed(42), output_type="np")  # fmt: skip

    engine(), bare()  # warm-up: first-call allocations and lazy imports
    stage_times.clear()
    times: dict[str, list[float]] = {"engine": [], "bare": []}
    for repeat in range(args.repeats):
        order = (("engine", engine), ("bare", bare))
        for name, fn in order if repeat % 2 == 0 else order[::-1]:  # alternate who goes first
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)

    def median_of(keys: tuple[str, ...]) -> float:
        return statistics.median(sum(t.get(k, 0.0) for k in keys) for t in stage_times)

    shared = ("encode_prompt", "denoise", "decode")  # the work a bare call also does
    extra = ("validate", "prepare", "load", "encode_video", "save")  # what only the engine does
    eng, raw = statistics.median(times["engine"]), statistics.median(times["bare"])
    print(f"model: {BENCH_FAMILY.name} {BENCH_FAMILY.default_width}x{BENCH_FAMILY.default_height}, "
          f"{BENCH_FAMILY.default_frames} frames, {args.steps} steps, CFG, {args.threads} torch thread(s), "
          f"{args.repeats} alternating repeats")  # fmt: skip
    print(f"{'':<34}{'median s':>10}{'min s':>10}{'max s':>10}")
    for label, key in (("bare diffusers call", "bare"), ("engine run_job (all)", "engine")):
        values = times[key]
        print(f"{label:<34}{statistics.median(values):>10.2f}{min(values):>10.2f}{max(values):>10.2f}")
    print(f"{'  engine: prompt+denoise+decode':<34}{median_of(shared):>10.2f}")
    print(f"{'  engine: validate/load/mp4/gif/json':<34}{median_of(extra):>10.2f}")
    print(f"{'ratio engine / bare (medians)':<34}{eng / raw:>10.3f}")
    print(f"{'ratio engine / bare (minimums)':<34}{min(times['engine']) / min(times['bare']):>10.3f}")


if __name__ == "__main__":
    main()
