"""How close fp32 upscaling on this CPU is to its convolution ceiling, and what compiling adds.

For each full-size upscaler (random weights in the published layouts), on one tile of the size
our CPU tiling uses, in fp32 and ``channels_last`` as ``postprocess.upscale`` runs it:

- the rate of one bare 64→64 3×3 convolution on that tile (oneDNN's best case here, GFLOP/s);
- the network's own rate: its convolution FLOPs (counted with forward hooks) over its time, and
  that as a share of the bare convolution's rate;
- the same network through ``torch.compile`` (inductor, weights frozen as constants): compile
  time, speed ratio against eager, largest difference in the output.

The first two say whether layout, tiling or copies still cost anything; the last, what fusing the
activations into the convolutions is worth. Each time is the best of ``--repeats``, eager and
compiled alternating.

    python bench/upscale_ceiling.py [--models anime rrdb] [--repeats 4] [--skip-compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from spandrel import ModelLoader

from steadyframe.testing import tiny_weights

# (weight file maker, tile height, width): anime at our 2×2 split of 720×480; RRDB smaller (slow)
MODELS = {
    "anime": (tiny_weights.save_realesr_animevideov3, 256, 376),
    "rrdb": (tiny_weights.save_cogvideo_realesrgan_x4, 128, 192),
}


def conv_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """Multiply-adds × 2 of every Conv2d in one forward pass of ``example``."""
    total = 0.0

    def count(module: torch.nn.Conv2d, _inputs: object, output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        total += 2.0 * output.numel() * (module.in_channels // module.groups) * kernel

    handles = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.inference_mode():
        model(example)
    for handle in handles:
        handle.remove()
    return total


def best_seconds(works: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in works}
    names = list(works)
    with torch.inference_mode():
        for round_ in range(repeats):
            for name in names if round_ % 2 == 0 else names[::-1]:
                start = time.perf_counter()
                works[name]()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-compile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[str] = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.models:
            save, height, width = MODELS[name]
            net = ModelLoader(device="cpu").load_from_file(save(Path(scratch) / f"{name}.pth", full=True)).model
            net = net.eval().to(memory_format=torch.channels_last)
            tile = torch.rand(1, 3, height, width).contiguous(memory_format=torch.channels_last)
            bare = torch.nn.Conv2d(64, 64, 3, padding=1).eval().to(memory_format=torch.channels_last)
            features = torch.rand(1, 64, height, width).contiguous(memory_format=torch.channels_last)
            works: dict[str, Callable[[], object]] = {"conv": lambda: bare(features), "eager": lambda: net(tile)}
            compile_s, difference = None, None
            if not args.skip_compile:
                compiled = torch.compile(net, backend="inductor", options={"freezing": True})
                start = time.perf_counter()
                with torch.inference_mode():
                    out = compiled(tile)
                    compile_s = time.perf_counter() - start
                    difference = float((out.float() - net(tile).float()).abs().max())
                works["compiled"] = lambda: compiled(tile)
            best_seconds(works, 1)  # warm-up
            best = best_seconds(works, args.repeats)
            conv_rate = 2.0 * 9 * 64 * 64 * height * width / best["conv"] / 1e9
            net_rate = conv_flops(net, tile) / best["eager"] / 1e9
            row = (f"{name:<6} {width}x{height}  conv {conv_rate:6.1f} GFLOP/s  network {net_rate:6.1f} GFLOP/s "
                   f"({net_rate / conv_rate:4.0%} of conv)  eager {best['eager']:.3f} s")  # fmt: skip
            if compile_s is not None:
                row += (f"  compiled {best['compiled']:.3f} s ({best['eager'] / best['compiled']:.2f}x), "
                        f"compile {compile_s:.1f} s, max |diff| {difference:.1e}")  # fmt: skip
            rows.append(row)
            print(row, flush=True)
    print(f"\nupscale ceiling: fp32, channels_last, {args.threads} thread(s), torch {torch.__version__}")
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
