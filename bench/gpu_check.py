"""GPU check: speed options, peak VRAM per memory level, a real OOM and a real sticky device error.

One run on one GPU (target: under 8 minutes), the CogVideoX-5B architecture with random weights
built from ``bench/gpu_configs.py`` (no download), 49 frames at 720×480:

- s/step for exact / fast / fastest / FasterCache (a candidate, for its memory) / compiled
  blocks (plus the compile time), with the peak VRAM of each and the attention kernel used;
- peak VRAM and s/step of a short job (prompt, 2 steps, VAE decode) at every memory level;
- a real CUDA OOM: a steadyframe worker capped by ``set_per_process_memory_fraction`` walks its
  OOM ladder until a level fits, with the VRAM allocated at the start of every attempt (it must
  be back at the baseline after each failure);
- a real device-side assert: the worker is recycled (a new PID) and the next job succeeds.

Each part runs in its own process (a fresh CUDA context); one table at the end.

    python bench/gpu_check.py                 # on the GPU machine
    python bench/gpu_check.py --dry-run       # tiny model on the CPU: exercises every code path it can
    python bench/gpu_check.py --parts speeds levels --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
PARTS = ("speeds", "levels", "oom", "sticky")


# --- parts (each runs in a child process) ------------------------------------------------


def _device(dry_run: bool) -> str:
    return "cpu" if dry_run else "cuda"


def _model(dry_run: bool) -> Any:
    from gpu_configs import COGVIDEOX_5B, TINY

    return TINY if dry_run else COGVIDEOX_5B


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None


def _timed_call(pipe: Any, model: Any, device: str, steps: int, output_type: str = "latent") -> list[float]:
    """Run the pipeline; -> seconds of each denoising step (device synchronised at every step end)."""
    import torch

    ends: list[float] = []

    def on_step(_pipe: Any, _i: int, _t: Any, _tensors: dict) -> dict:
        _sync(device)
        ends.append(time.perf_counter())
        return {}

    _sync(device)
    start = time.perf_counter()
    pipe(prompt="a red fox running through snow", height=model.height, width=model.width, num_frames=model.frames,
         num_inference_steps=steps, guidance_scale=6.0, output_type=output_type,
         generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step)  # fmt: skip
    _sync(device)
    marks = [start, *ends]
    return [b - a for a, b in zip(marks, marks[1:])]


def part_speeds(dry_run: bool, steps: int) -> list[dict[str, Any]]:
    from gpu_configs import build_pipeline

    from steadyframe.engine.compiled import compile_blocks
    from steadyframe.engine.speed import RECIPES, cache_enabled, speed_mode

    device, model = _device(dry_run), _model(dry_run)
    pipe = build_pipeline(model, device)
    rows: list[dict[str, Any]] = []
    _timed_call(pipe, model, device, 1)  # warm-up: cuDNN/cuBLAS plans, allocator

    def measure(label: str, run: Callable[[], tuple[list[float], str]], note: str = "") -> None:
        _peak_reset(device)
        durations, kernel = run()
        rows.append({"part": "speed", "what": label, "s_per_step": statistics.median(durations[1:] or durations),
                     "first_step_s": durations[0], "peak_gb": _peak_gb(device), "note": f"{kernel} {note}".strip()})  # fmt: skip

    for speed in ("exact", "fast", "fastest"):

        def run(speed: str = speed) -> tuple[list[float], str]:
            with speed_mode(pipe, speed, guidance=6.0, fast_attention=True, device=device) as record:
                durations = _timed_call(pipe, model, device, steps)
            return durations, f"{record.cache or 'no cache'}, {record.attention}"

        measure(speed, run)

    def faster_cache() -> tuple[list[float], str]:
        with cache_enabled(pipe, RECIPES["faster_cache"], guidance=6.0):
            return _timed_call(pipe, model, device, steps), "faster_cache (candidate), sdpa"

    measure("FasterCache", faster_cache)

    def compiled() -> tuple[list[float], str]:
        from steadyframe.engine import compiled as compiled_module

        compile_blocks(pipe.transformer)
        return _timed_call(pipe, model, device, steps), f"exact, compiled blocks ({compiled_module.BACKEND})"

    from steadyframe.engine.compiled import compiler_missing

    if dry_run:  # inductor's C++ compile takes minutes on a CPU; the wiring is the same
        from steadyframe.engine import compiled as compiled_module

        compiled_module.BACKEND = "eager"
    missing = compiler_missing(device)
    if missing is None:
        measure("compiled", compiled, note="first step includes the compile")
    else:  # what a job would do: run uncompiled, saying why
        rows.append({"part": "speed", "what": "compiled", "note": f"skipped: {missing}"})
    return rows


def part_levels(dry_run: bool, levels: list[int]) -> list[dict[str, Any]]:
    """A short job (prompt, 2 steps, decode) at each level; levels 0-2 share one GPU-built model."""
    import torch
    from gpu_configs import build_pipeline

    from steadyframe.engine.memory_levels import applicable_levels, apply_memory_level, level as level_of

    device, model = _device(dry_run), _model(dry_run)
    rows: list[dict[str, Any]] = []
    runnable = [n for n in levels if n in applicable_levels(device)]
    for number in sorted(set(levels) - set(runnable)):
        rows.append({"part": "level", "what": f"{number} {level_of(number).name}", "note": f"skipped: not on {device}"})
    if not runnable:
        return rows
    pipe = build_pipeline(model, device)
    if max(runnable) >= 3:
        pipe.to("cpu")  # offload levels start from a model in host memory, as a real load does
    for number in runnable:
        _peak_reset(device)
        apply_memory_level(pipe, number, device)
        start = time.perf_counter()
        note = ""
        try:
            durations = _timed_call(pipe, model, device, 2, output_type="np")
            per_step = statistics.median(durations)
        except torch.OutOfMemoryError:
            per_step, note = None, "out of memory"
        rows.append({"part": "level", "what": f"{number} {level_of(number).name}", "s_per_step": per_step,
                     "job_s": time.perf_counter() - start, "peak_gb": _peak_gb(device), "note": note})  # fmt: skip
    return rows


def _harness(settings: Any, runner: str) -> tuple[Any, Any]:
    from steadyframe.jobs.sqlite import SqliteJobStore
    from steadyframe.supervisor.dispatcher import Dispatcher
    from steadyframe.supervisor.local import LocalProcessPool
    from steadyframe.supervisor.pool import WorkerSlot

    store = SqliteJobStore(settings.jobs_db)
    pool = LocalProcessPool(settings, [WorkerSlot("gpu0", gpu_index=None)], runner=runner)
    dispatcher = Dispatcher(settings, store, pool=pool)
    dispatcher.start()
    return store, dispatcher


def _idle_pid(dispatcher: Any, not_pid: int | None = None, timeout: float = 300.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for info in dispatcher.workers():
            if info.state == "idle" and info.pid is not None and info.pid != not_pid:
                return int(info.pid)
        time.sleep(0.1)
    raise RuntimeError(f"no idle worker after {timeout} s: {dispatcher.workers()}")


def _run(store: Any, dispatcher: Any, prompt: str, timeout: float = 400.0) -> Any:
    job, _ = store.submit({"prompt": prompt})
    dispatcher.wake()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = store.get(job.id)
        if record.status.terminal:
            return record
        time.sleep(0.1)
    raise RuntimeError(f"job {prompt!r} not finished after {timeout} s")


def _worker_settings(scratch: Path, dry_run: bool) -> Any:
    from steadyframe.settings import Settings

    return Settings(data_dir=scratch, device=_device(dry_run), max_memory_level=5, stall_timeout_s=600.0,
                    worker_silence_timeout_s=300.0, log_to_stderr=False)  # fmt: skip


def part_oom(dry_run: bool, cap_gb: float) -> list[dict[str, Any]]:
    if dry_run:
        return [{"part": "oom", "what": "OOM ladder", "note": "skipped: a real CUDA OOM needs a GPU"}]
    os.environ["GPU_CHECK_CAP_GB"] = str(cap_gb)
    with tempfile.TemporaryDirectory() as scratch:
        store, dispatcher = _harness(_worker_settings(Path(scratch), dry_run), "gpu_check_jobs:run")
        try:
            _idle_pid(dispatcher)
            record = _run(store, dispatcher, "oom ladder")
            if record.status.value != "succeeded":
                return [{"part": "oom", "what": "OOM ladder", "note": f"FAILED: {record.error}"}]
            details = record.result["speed"]
            idle_vram = [info.vram_allocated_mb for info in dispatcher.workers()]
        finally:
            dispatcher.stop()
    starts = [round(a["allocated_mb_at_start"]) for a in details["attempts"]]
    baseline = round(details["baseline_mb"])
    ok = all(abs(s - baseline) <= 64 for s in starts)
    return [{"part": "oom", "what": f"OOM ladder under a {cap_gb:g} GB cap", "peak_gb": details["peak_mb"] / 1024,
             "note": f"recovered at level {record.result['memory_level']} after levels "
                     f"{[a['level'] for a in details['attempts'][:-1]]} ran out of memory; VRAM at each attempt's "
                     f"start {starts} MB vs baseline {baseline} MB: {'back at baseline' if ok else 'NOT at baseline'}; "
                     f"idle worker reports {idle_vram} MB"}]  # fmt: skip


def part_sticky(dry_run: bool) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as scratch:
        store, dispatcher = _harness(_worker_settings(Path(scratch), dry_run), "gpu_check_jobs:run")
        try:
            first_pid = _idle_pid(dispatcher)
            failed = _run(store, dispatcher, "device assert")
            second_pid = _idle_pid(dispatcher, not_pid=first_pid) if not dry_run else first_pid
            after = _run(store, dispatcher, "after the assert")
        finally:
            dispatcher.stop()
    if dry_run:
        note = f"device assert skipped on the CPU; a job ran and {after.status.value} (plumbing only)"
    else:
        note = (f"assert job {failed.status.value} ({failed.error.kind if failed.error else '-'}); worker pid "
                f"{first_pid} -> {second_pid} ({'recycled' if second_pid != first_pid else 'NOT recycled'}); "
                f"next job {after.status.value}")  # fmt: skip
    return [{"part": "sticky", "what": "device-side assert", "note": note}]


# --- orchestration (no torch in this process) ------------------------------------------


def _child(part: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    command = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--json-out", str(out),
               "--steps", str(args.steps), "--cap-gb", str(args.cap_gb), "--levels", *map(str, args.levels)]  # fmt: skip
    if args.dry_run:
        command.append("--dry-run")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))
    if args.dry_run:
        env["GPU_CHECK_DRY_RUN"] = "1"
    start = time.perf_counter()
    try:
        done = subprocess.run(command, env=env, timeout=args.part_timeout)
    except subprocess.TimeoutExpired:
        return [{"part": part, "what": "(part timed out)", "note": f"killed after {args.part_timeout:.0f} s"}]
    seconds = time.perf_counter() - start
    if done.returncode != 0 or not out.stat().st_size:
        return [{"part": part, "what": "(part failed)", "note": f"exit {done.returncode} after {seconds:.0f} s"}]
    rows = json.loads(out.read_text())
    out.unlink()
    for row in rows:
        row.setdefault("part_s", round(seconds))
    return rows


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--steps", type=int, default=6, help="denoising steps per speed row")
    parser.add_argument("--levels", nargs="+", type=int, default=[0, 1, 2, 3, 4, 5])
    parser.add_argument("--cap-gb", type=float, default=8.0, help="memory cap for the OOM part")
    parser.add_argument("--part-timeout", type=float, default=420.0)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--json-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:  # child process
        sys.path.insert(0, str(HERE))
        run = {
            "speeds": lambda: part_speeds(args.dry_run, args.steps),
            "levels": lambda: part_levels(args.dry_run, args.levels),
            "oom": lambda: part_oom(args.dry_run, args.cap_gb),
            "sticky": lambda: part_sticky(args.dry_run),
        }[args.part]
        args.json_out.write_text(json.dumps(run()))
        return
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for part in args.parts:
        print(f"  part {part} ...", flush=True)
        rows += _child(part, args)
    gpu = "cpu (dry run)"
    if not args.dry_run:
        probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.cuda.get_device_name(0))"],
                               capture_output=True, text=True)  # fmt: skip
        gpu = probe.stdout.strip() or "unknown GPU"
    model = "tiny" if args.dry_run else "CogVideoX-5B architecture (random bf16)"
    print(f"\ngpu_check: {gpu}, {model}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"total {time.perf_counter() - started:.0f} s")  # fmt: skip
    print(f"{'part':<7}{'what':<34}{'s/step':>8}{'1st step':>9}{'peak GB':>9}  note")
    for row in rows:
        print(f"{row['part']:<7}{row['what']:<34}{_fmt(row.get('s_per_step'), '.2f'):>8}"
              f"{_fmt(row.get('first_step_s'), '.1f'):>9}{_fmt(row.get('peak_gb'), '.1f'):>9}  {row.get('note', '')}")  # fmt: skip


if __name__ == "__main__":
    main()
