"""Speed options against a bare diffusers call on one random CogVideoX model, same seed, one run.

Builds (once, deterministically) a random 5B-style model (rotary positions, DPM scheduler) large
enough that one denoising step with CFG costs about a second on a 2-core CPU, then runs:
bare diffusers; each of diffusers' cache hooks the engine knows (``engine/speed.py`` RECIPES)
around the same bare call; engine jobs at ``exact``, ``fast`` and ``fastest``; and an engine job
with compiled blocks (first job: compile time apart; then warm). For each: seconds (the best of
``--repeats`` runs, the order rotated each round), ratio to bare diffusers, and PSNR of the
frames against the bare call (= ``exact``; inf = bit-exact).

    python bench/speed.py [--steps 12] [--threads 2] [--repeats 2] [--skip-compile]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from steadyframe.contracts import NullHooks
from steadyframe.engine import compiled, run_job
from steadyframe.engine import stages as engine_stages
from steadyframe.engine.loading import load_pipeline, locate_weights
from steadyframe.engine.speed import RECIPES, SPEED_RECIPES, cache_enabled
from steadyframe.families import FAMILIES, ModelRef
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec

BENCH_FAMILY = dataclasses.replace(
    FAMILIES["tiny-i2v"], name="bench-5b-t2v", task="t2v", default_width=192, default_height=128,
    default_frames=17, max_frames=17, scheduler="dpm",
)  # fmt: skip
PROMPT = "a red car driving along a coastal road at sunset"
GUIDANCE = 6.0


def build_bench_model(folder: Path) -> Path:
    """Random 5B-style T2V pipeline: 8 heads × 64, 6 layers, rotary positions (bench/overhead.py builds it)."""
    from overhead import build_bench_model as build  # bench/ is on sys.path when a bench runs as a script

    return build(folder, BENCH_FAMILY, heads=8, layers=6, rotary=True)


class KeepFirst:
    """A provider that loads once per key and keeps it, so timed jobs exclude loading."""

    def __init__(self) -> None:
        self.loaded: dict[str, Any] = {}

    def acquire(self, key: str, loader: Callable[[], Any], *, size_mb: float | None = None) -> Any:
        @contextmanager
        def _held() -> Iterator[Any]:
            if key not in self.loaded:
                self.loaded[key] = loader()
            yield self.loaded[key]

        return _held()


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each, order rotated; the best counts")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "steadyframe-bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    FAMILIES[BENCH_FAMILY.name] = BENCH_FAMILY  # a bench-only family with the bigger size rules
    folder = build_bench_model(args.cache / BENCH_FAMILY.name)
    settings = Settings(data_dir=args.cache / "data", device="cpu")
    ref = ModelRef(BENCH_FAMILY, str(folder), local_dir=folder)
    provider = KeepFirst()
    pipe = load_pipeline(ref, locate_weights(ref, settings), mode="t2v", device="cpu", memory_level=0)

    def bare() -> np.ndarray:
        frames = pipe(prompt=PROMPT, height=BENCH_FAMILY.default_height, width=BENCH_FAMILY.default_width,
                      num_frames=BENCH_FAMILY.default_frames, num_inference_steps=args.steps, guidance_scale=GUIDANCE,
                      use_dynamic_cfg=False, generator=torch.Generator().manual_seed(42), output_type="np").frames[0]  # fmt: skip
        return engine_stages.to_uint8(frames)

    captured: list[np.ndarray] = []
    original_to_uint8 = engine_stages.to_uint8

    def engine(speed: str, job_settings: Settings) -> tuple[np.ndarray, dict[str, Any]]:
        captured.clear()
        engine_stages.to_uint8 = lambda frames: captured.append(original_to_uint8(frames)) or captured[-1]
        try:
            spec = JobSpec(prompt=PROMPT, model=str(folder), steps=args.steps, seed=42, guidance=GUIDANCE,
                           use_dynamic_cfg=False, speed=speed)  # fmt: skip
            with tempfile.TemporaryDirectory() as out:
                result = run_job(spec, job_settings, Path(out), hooks=NullHooks(), models=provider)
        finally:
            engine_stages.to_uint8 = original_to_uint8
        return captured[-1], result.timings

    def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
        start = time.perf_counter()
        value = fn()
        return time.perf_counter() - start, value

    def best_of(works: dict[str, Callable[[], np.ndarray]]) -> dict[str, tuple[float, np.ndarray]]:
        """Each work ``--repeats`` times, the order rotated every round (a busy spell hits each
        work at another place); the fastest run of each, with its frames."""
        best: dict[str, tuple[float, np.ndarray]] = {}
        names = list(works)
        for round_ in range(args.repeats):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                seconds, frames = timed(works[name])
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, frames)
        return best

    def with_cache(recipe: Any) -> Callable[[], np.ndarray]:
        def cached() -> np.ndarray:
            with cache_enabled(pipe, recipe, guidance=GUIDANCE):
                return bare()

        return cached

    bare()  # warm-up: first-call allocations and lazy imports
    engine("exact", settings)  # warm the engine's own path (model already loaded through the provider)
    chosen = {name: speed for speed, name in SPEED_RECIPES.items() if name}
    works: dict[str, Callable[[], np.ndarray]] = {"bare diffusers": bare}
    notes = {"bare diffusers": ""}
    for name, recipe in RECIPES.items():
        works[f"bare + {name}"] = with_cache(recipe)
        notes[f"bare + {name}"] = f"= {chosen[name]}" if name in chosen else ""
    for speed in ("exact", "fast", "fastest"):
        works[f"engine speed={speed}"] = lambda speed=speed: engine(speed, settings)[0]
        notes[f"engine speed={speed}"] = SPEED_RECIPES[speed] or "no cache"
    best = best_of(works)
    bare_s, reference = best["bare diffusers"]
    rows = [(label, seconds, frames, notes[label]) for label, (seconds, frames) in best.items()]
    compile_note = ""
    if not args.skip_compile:  # last: compiling changes the loaded model's blocks in place
        on = settings.model_copy(update={"compile_blocks": True})
        first_s, (_frames, timings) = timed(lambda: engine("exact", on))
        compile_note = f"first compiled job {first_s:.1f} s, of which compile {timings.get('compile', 0.0):.1f} s"
        compiled_best = best_of({"compiled": lambda: engine("exact", on)[0]})["compiled"]
        rows.append(("engine exact, compiled blocks (warm)", *compiled_best, f"backend {compiled.BACKEND}"))

    print(f"\nmodel {BENCH_FAMILY.name}: 8×64 heads, 6 layers, {BENCH_FAMILY.default_width}x{BENCH_FAMILY.default_height}"
          f" {BENCH_FAMILY.default_frames} frames, {args.steps} steps, CFG {GUIDANCE}, {args.threads} thread(s), "
          f"torch {torch.__version__}; bare diffusers {bare_s / args.steps:.2f} s/step")  # fmt: skip
    print(f"{'run':<38}{'s':>8}{'vs bare':>9}{'PSNR dB':>9}  note")
    for label, seconds, frames, note in rows:
        print(f"{label:<38}{seconds:>8.2f}{bare_s / seconds:>8.2f}x{psnr(frames, reference):>9.1f}  {note}")
    if compile_note:
        print(compile_note)


if __name__ == "__main__":
    main()
