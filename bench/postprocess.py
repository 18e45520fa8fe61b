"""Throughput and peak memory of the post-processing stages at 720×480, random weights.

Prints one table row per (stage, model, size, tiling): output frames per second and peak
memory above the starting level (CUDA: max allocated; CPU: sampled process RSS).

    python bench/postprocess.py                      # tiny + full-size models, CPU or CUDA
    python bench/postprocess.py --skip-full          # tiny models only (seconds)
    python bench/postprocess.py --device cuda --frames 8 --full-frames 4
    python bench/postprocess.py --demo-only          # only ours vs CogVideo's demo code, with ratios

The "vs CogVideo demo" table runs the demo's upscaler (512-px tiles, 32-px overlap, one frame
at a time) and RIFE loop (``bench/demo_reference.py``) beside ours on the same full-size random
weights and the same 720×480 frames, in one run.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import psutil
import torch

from demo_reference import demo_interpolate_video, demo_upscale_video
from spandrel import ModelLoader

from steadyframe.contracts import LoadEachTime, ModelProvider
from steadyframe.postprocess import interpolate_frames, runtime, upscale_frames
from steadyframe.postprocess.rife import load_rife
from steadyframe.postprocess.runtime import resolve_device
from steadyframe.testing import tiny_weights

HEIGHT, WIDTH = 480, 720


@dataclass
class Row:
    stage: str
    model: str
    size: str
    mode: str
    frames_out: int
    seconds: float
    peak_mb: float

    @property
    def fps(self) -> float:
        return self.frames_out / self.seconds if self.seconds > 0 else float("inf")


@contextmanager
def peak_memory(device: torch.device) -> Iterator[list[float]]:
    """Yields a one-item list that holds the peak MB above the start once the block ends."""
    result = [0.0]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        result[0] = (torch.cuda.max_memory_allocated(device) - start) / 2**20
        return
    process = psutil.Process()
    start = process.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        # RSS sampling: CPU allocations have no peak counter that can be reset per run
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            stop.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        stop.set()
        sampler.join()
        peak[0] = max(peak[0], process.memory_info().rss)
        result[0] = (peak[0] - start) / 2**20


def clip(frames: int) -> np.ndarray:
    """A panning structured clip, RGB uint8 [frames, 480, 720, 3]."""
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = []
    for index in range(frames):
        shifted = xx - 3 * index
        red = 128 + 100 * np.sin(shifted / 9) * np.cos(yy / 13)
        green = shifted * 255 / WIDTH
        blue = np.where(((shifted // 24 + yy // 24) % 2) == 0, 40, 220)
        out.append(np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8))
    return np.stack(out)


def release_freed_memory() -> None:
    """Hand freed heap back to the OS so each row's RSS peak starts from a fair level."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


def measure(
    device: torch.device, work: Callable[[np.ndarray], np.ndarray], frames: np.ndarray
) -> tuple[int, float, float]:
    """Run ``work`` once on a small crop (warm-up: allocator, kernels), then time it on ``frames``."""
    work(np.ascontiguousarray(frames[:, :64, :64]))
    release_freed_memory()
    with peak_memory(device) as peak:
        start = time.perf_counter()
        out = work(frames)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - start
    return out.shape[0], seconds, peak[0]


class KeepOne:
    """A provider that keeps what it loaded, so timed runs exclude loading (as a warm worker does)."""

    def __init__(self) -> None:
        self.loaded: dict[str, object] = {}

    def acquire(self, key, loader, *, size_mb=None):  # type: ignore[no-untyped-def]
        @contextmanager
        def _held():  # type: ignore[no-untyped-def]
            if key not in self.loaded:
                self.loaded[key] = loader()
            yield self.loaded[key]

        return _held()


def _timed(device: torch.device, work: Callable[[], object]) -> float:
    start = time.perf_counter()
    work()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def _best_of(device: torch.device, works: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Best of ``repeats`` for each work, the order rotating every repeat (a busy shared CPU drifts)."""
    times: dict[str, list[float]] = {name: [] for name in works}
    order = list(works)
    for repeat in range(repeats):
        shift = repeat % len(order)
        for name in order[shift:] + order[:shift]:
            times[name].append(_timed(device, works[name]))
    return {name: min(spent) for name, spent in times.items()}


def compare_with_demo(
    device: torch.device, folder: Path, up_frames: int, rife_frames: int, which: list[str], rrdb_size: tuple[int, int],
    repeats: int = 2,
) -> None:
    """Ours vs CogVideo's demo code, same weights and frames, one table with speed ratios."""
    demo_dtype = torch.float16 if device.type == "cuda" else torch.float32  # the demo's .half(), where it is fast
    models: ModelProvider = KeepOne()
    results: list[tuple[str, float, float]] = []
    upscalers = []
    if "anime" in which:
        upscalers.append(("animevideov3 x4", tiny_weights.save_realesr_animevideov3(folder / "anime.pth", full=True), (HEIGHT, WIDTH)))
    if "rrdb" in which:
        path = tiny_weights.save_cogvideo_realesrgan_x4(folder / "demo-rrdb.pth", full=True)
        upscalers.append(("RRDB x4 (demo's file)", path, rrdb_size))
    for name, path, (height, width) in upscalers:
        frames = np.ascontiguousarray(clip(up_frames)[:, :height, :width])
        as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0).to(device)
        name = f"{name} {width}x{height}"
        demo_net = ModelLoader(device="cpu").load_from_file(path).to(device).to(demo_dtype).eval()
        def ours(crop: np.ndarray = frames, reduced: bool = False, path: Path = path) -> object:
            return upscale_frames(crop, weights=path, scale=4, device=str(device), models=models,
                                  on_frame=lambda d, t: None, reduced_precision=reduced)  # fmt: skip

        demo = lambda: demo_upscale_video(as_float.to(demo_dtype), demo_net, 4)  # noqa: E731
        ours(frames[:, :64, :64])
        ours(frames[:, :64, :64], reduced=True)
        demo_upscale_video(as_float[:, :, :64, :64].to(demo_dtype), demo_net, 4)  # warm all three
        # fast/fastest jobs: bf16 on a CPU with bf16 in hardware (CUDA runs fp16 either way)
        best = _best_of(device, {"demo": demo, "ours": ours, "fast": lambda: ours(reduced=True)}, repeats)
        results.append((f"upscale x4 {name}", best["demo"], best["ours"]))
        if device.type == "cpu":
            results.append((f"  same, fast/fastest (bf16: {runtime.cpu_has_native_bf16()})", best["demo"], best["fast"]))
        print(f"  done: demo vs ours (vs fast), {name}: {best['demo']:.2f} s vs {best['ours']:.2f} s "
              f"({best['fast']:.2f} s)", flush=True)  # fmt: skip
        del demo_net
        release_freed_memory()
    if "rife" not in which:
        _print_demo_table(device, up_frames, rife_frames, results)
        return
    rife_path = tiny_weights.save_rife_v3_hd(folder / "demo-v3.pkl", full=True)
    rife = load_rife(rife_path, device)
    frames = clip(rife_frames)
    as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float().div(255.0).to(device)
    middle = lambda a, b: rife.predict(a, b, 0.5, 1.0)  # noqa: E731  the same network for both loops
    ours = lambda: interpolate_frames(frames, weights=rife_path, factor=2, device=str(device), models=models, on_frame=lambda d, t: None)  # noqa: E731
    interpolate_frames(frames[:2, :64, :64], weights=rife_path, factor=2, device=str(device), models=models, on_frame=lambda d, t: None)
    best = _best_of(device, {"demo": lambda: demo_interpolate_video(as_float, middle), "ours": ours}, repeats)
    demo_s, ours_s = best["demo"], best["ours"]
    results.append((f"RIFE v3 HD x2 loop {WIDTH}x{HEIGHT}", demo_s, ours_s))
    _print_demo_table(device, up_frames, rife_frames, results)


def _print_demo_table(device: torch.device, up_frames: int, rife_frames: int, results: list[tuple[str, float, float]]) -> None:
    print(f"\nvs CogVideo demo: device={device} threads={torch.get_num_threads()}, "
          f"{up_frames} frame(s) upscaled, {rife_frames} interpolated")  # fmt: skip
    print(f"{'work (best of alternating repeats)':<42} {'demo s':>8} {'ours s':>8} {'speed-up':>9}")
    for work, demo_s, ours_s in results:
        print(f"{work:<42} {demo_s:>8.2f} {ours_s:>8.2f} {demo_s / ours_s:>8.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--frames", type=int, default=3, help="input frames for tiny models")
    parser.add_argument("--full-frames", type=int, default=1, help="input frames for full-size upscalers")
    parser.add_argument("--tile", type=int, default=256, help="tile side for the tiled runs")
    parser.add_argument("--skip-full", action="store_true", help="tiny models only")
    parser.add_argument("--demo-only", action="store_true", help="only the comparison with CogVideo's demo code")
    parser.add_argument("--demo-frames", type=int, default=1, help="frames upscaled in the demo comparison")
    parser.add_argument("--demo-rife-frames", type=int, default=3, help="frames interpolated in the demo comparison")
    parser.add_argument("--demo-repeats", type=int, default=2, help="alternating timed runs of each side")
    parser.add_argument("--demo-models", nargs="+", default=["anime", "rrdb", "rife"], choices=["anime", "rrdb", "rife"])
    parser.add_argument("--rrdb-size", type=int, nargs=2, default=[HEIGHT, WIDTH], metavar=("H", "W"),
                        help="RRDB input size in the demo comparison (a crop of the 720x480 clip)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    if args.demo_only:
        with tempfile.TemporaryDirectory() as scratch:
            compare_with_demo(device, Path(scratch), args.demo_frames, args.demo_rife_frames, args.demo_models,
                              tuple(args.rrdb_size), args.demo_repeats)  # fmt: skip
        return
    models = LoadEachTime()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        rrdb, compact = "RRDB x4plus", "Compact general-x4v3"
        upscalers = [
            (rrdb, "tiny", tiny_weights.save_realesrgan_x4plus(folder / "rrdb-tiny.pth"), args.frames),
            (compact, "tiny", tiny_weights.save_realesr_general_x4v3(folder / "c-tiny.pth"), args.frames),
        ]
        rifes = [
            ("RIFE v3 HD", "tiny", tiny_weights.save_rife_v3_hd(folder / "v3-tiny.pkl")),
            ("RIFE 4.25", "tiny", tiny_weights.save_practical_rife_v4(folder / "v4-tiny.pkl")),
        ]
        if not args.skip_full:
            full_compact = tiny_weights.save_realesr_general_x4v3(folder / "c.pth", full=True)
            upscalers += [
                (rrdb, "full", tiny_weights.save_realesrgan_x4plus(folder / "rrdb.pth", full=True), args.full_frames),
                (compact, "full", full_compact, args.full_frames),
            ]
            rifes += [
                ("RIFE v3 HD", "full", tiny_weights.save_rife_v3_hd(folder / "v3.pkl", full=True)),
                ("RIFE 4.25", "full", tiny_weights.save_practical_rife_v4(folder / "v4.pkl", full=True)),
            ]
        for name, size, path, count in upscalers:
            frames = clip(count)
            for mode, tile in (("untiled", 0), (f"tiles {args.tile}", args.tile)):
                out_frames, seconds, peak = measure(
                    device,
                    lambda batch: upscale_frames(
                        batch, weights=path, scale=4, device=str(device), models=models,
                        on_frame=lambda d, t: None, tile=tile,
                    ),
                    frames,
                )
                rows.append(Row("upscale x4", name, size, mode, out_frames, seconds, peak))
                print(f"  done: upscale {name} {size} {mode}", flush=True)
        frames = clip(args.frames)
        for name, size, path in rifes:
            for factor, flow_scale in ((2, 1.0), (4, 1.0), (2, 0.5)):
                out_frames, seconds, peak = measure(
                    device,
                    lambda batch: interpolate_frames(
                        batch, weights=path, factor=factor, device=str(device), models=models,
                        on_frame=lambda d, t: None, flow_scale=flow_scale,
                    ),
                    frames,
                )
                # fps counts only the frames RIFE made, not the copied originals
                made = out_frames - frames.shape[0]
                rows.append(Row(f"interpolate x{factor}", name, size, f"flow_scale {flow_scale}", made, seconds, peak))
                print(f"  done: interpolate {name} {size} x{factor} {flow_scale}", flush=True)
    print(f"\ndevice={device} threads={torch.get_num_threads()} input={WIDTH}x{HEIGHT} torch={torch.__version__}")
    print(f"{'stage':<15} {'model':<21} {'size':<5} {'mode':<15} {'frames':>6} {'fps':>8} {'peak MB':>9}")
    for row in rows:
        print(
            f"{row.stage:<15} {row.model:<21} {row.size:<5} {row.mode:<15} {row.frames_out:>6} "
            f"{row.fps:>8.3f} {row.peak_mb:>9.0f}"
        )


if __name__ == "__main__":
    main()
