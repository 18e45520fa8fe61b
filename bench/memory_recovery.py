"""Memory recovery after every stage x fault: steadyframe's supervisor vs the naive in-process way.

    python bench/memory_recovery.py [--ballast-mb 300] [--stages decode,upscale] [--kinds oom,crash]
                                    [--device cpu|cuda] [--naive/--no-naive] [--markdown out.md]

Supervised: the real engine (tiny CogVideoX + tiny upscaler and RIFE) in a worker process under
the Dispatcher. For each case: memory (RSS of this process + the worker; GPU memory used when a
GPU is present) before the job, the peak while it ran, after (once a worker is ready again), and
the seconds from submission until a worker is ready again.

Naive: the same engine and faults run inside one long-lived process with ``try/except``, then
``gc.collect()`` and ``torch.cuda.empty_cache()`` only, the pipeline kept loaded. Two variants:
"naive-keep" keeps the exception for the error response (``job.error = exc``, as many apps do);
"naive-drop" keeps only its text. A crash kills that process (the whole server, in a naive app);
a hang never ends (the bench kills it ``--hang-wait`` seconds after the warm-up).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import psutil  # noqa: E402

STAGES = ["load", "encode_prompt", "denoise", "decode", "upscale", "interpolate", "encode_video", "save"]
KINDS = ["oom", "error", "device_error", "crash", "hang", "leak"]
_MB = 2**20


@dataclass
class Row:
    stage: str
    kind: str
    handling: str
    before: float
    peak: float
    after: float
    gpu_before: float | None
    gpu_peak: float | None
    gpu_after: float | None
    ready_s: float | None
    outcome: str


# --- measuring -----------------------------------------------------------------------------------


def _gpu_used_mb() -> float | None:
    """Device-wide GPU memory in use (NVML), or None without a GPU."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        return pynvml.nvmlDeviceGetMemoryInfo(handle).used / _MB
    except Exception:
        return None


class PeakSampler:
    """Samples ``measure()`` every 20 ms on a thread; ``peak`` is the highest value seen."""

    def __init__(self, measure: Callable[[], float | None]) -> None:
        self._measure = measure
        self.peak: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            value = self._measure()
            if value is not None:
                self.peak = value if self.peak is None else max(self.peak, value)
            time.sleep(0.02)

    def __enter__(self) -> "PeakSampler":
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _rss_of(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / _MB


# --- the job every case runs ---------------------------------------------------------------------


def base_spec(work: Path) -> dict[str, Any]:
    from steadyframe.testing.tiny_weights import save_practical_rife_v4, save_realesrgan_x2plus

    return {
        "prompt": "a red ball rolling",
        "steps": 2,
        "upscale": 2,
        "interpolate": 2,
        "upscale_model": str(save_realesrgan_x2plus(work / "RealESRGAN_x2plus.pth")),
        "rife_model": str(save_practical_rife_v4(work / "flownet.pkl")),
    }


# --- supervised ----------------------------------------------------------------------------------


def run_supervised(work: Path, spec: dict[str, Any], stages: list[str], kinds: list[str], args: argparse.Namespace) -> list[Row]:
    from steadyframe.jobs.sqlite import SqliteJobStore
    from steadyframe.settings import Settings
    from steadyframe.supervisor import Dispatcher

    settings = Settings(
        data_dir=work / "supervised",
        device=args.device,
        fault_injection=True,
        stall_timeout_s=args.stall_timeout,
        max_attempts=1,
        rss_tolerance_mb=args.ballast_mb * 2 / 3,
        workers=1,
    )
    store = SqliteJobStore(settings.jobs_db)
    dispatcher = Dispatcher(settings, store)
    dispatcher.start()

    def ready_pid(not_pid: int | None = None) -> int:
        while True:
            for info in dispatcher.workers():
                if info.state == "idle" and info.pid is not None and info.pid != not_pid:
                    return info.pid
            time.sleep(0.02)

    def pids() -> list[int]:
        return [os.getpid(), *[w.pid for w in dispatcher.workers() if w.pid is not None]]

    def run(job_spec: dict[str, Any]) -> Any:
        job, _ = store.submit(job_spec)
        dispatcher.wake()
        while not (record := store.get(job.id)).status.terminal:  # type: ignore[union-attr]
            time.sleep(0.02)
        return record

    rows: list[Row] = []
    try:
        ready_pid()
        warm = run(spec)
        assert warm.status == "succeeded", warm.error
        run(spec)  # a second warm run: the first-use growth is over before any baseline
        for stage in stages:
            for kind in kinds:
                pid = ready_pid()
                time.sleep(0.3)
                before, gpu_before = _rss_of(pids()), _gpu_used_mb()
                started = time.monotonic()
                fault = {"stage": stage, "kind": kind, "ballast_mb": args.ballast_mb}
                with PeakSampler(lambda: _rss_of(pids())) as rss_peak, PeakSampler(_gpu_used_mb) as gpu_peak:
                    record = run({**spec, "fault": fault})
                    replaced = kind in ("crash", "hang", "device_error", "leak")
                    ready_pid(not_pid=pid if replaced else None)
                ready_s = time.monotonic() - started
                time.sleep(0.3)
                after, gpu_after = _rss_of(pids()), _gpu_used_mb()
                outcome = f"{record.status}" + (f" ({record.error.kind})" if record.error else "")
                nxt = run({"prompt": "the next job", "steps": 1})
                outcome += "; next job " + nxt.status
                rows.append(
                    Row(stage, kind, "supervised", before, rss_peak.peak or before, after,
                        gpu_before, gpu_peak.peak, gpu_after, ready_s, outcome)  # fmt: skip
                )
                print(_format_row(rows[-1]), flush=True)
    finally:
        dispatcher.stop()
    return rows


# --- naive (child process) -----------------------------------------------------------------------


def naive_child(config_path: str) -> None:
    """Runs in a child process: the engine in-process, try/except + gc + empty_cache only."""
    import gc

    import torch

    from steadyframe.engine import run_job
    from steadyframe.settings import Settings
    from steadyframe.spec import JobSpec
    from steadyframe.worker.faults import FaultInjector
    from steadyframe.worker.hooks import WorkerHooks
    from steadyframe.worker.models import ModelManager

    config = json.loads(Path(config_path).read_text())
    settings = Settings(data_dir=Path(config["data_dir"]), device=config["device"], fault_injection=True)
    models = ModelManager(budget_mb=64_000, keep_alive_s=10**9)  # keeps the pipeline, like a global
    device = "cuda" if config["device"] == "cuda" else "cpu"
    job_errors: dict[str, Any] = {}  # what the naive app keeps for its error response
    keep = config["keep_exception"]

    def job(spec_dict: dict[str, Any], job_id: str) -> str:
        spec = JobSpec.model_validate(spec_dict)
        hooks = WorkerHooks(job_id, lambda _m: None, threading.Event(), FaultInjector(spec.fault, memory_level=0, device=device))
        try:
            run_job(spec, settings, settings.outputs_dir / job_id, hooks=hooks, models=models)
            return "succeeded"
        except Exception as exc:  # the naive handler
            job_errors[job_id] = exc if keep else f"{type(exc).__name__}: {exc}"
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return f"failed ({type(exc).__name__})"

    def mem() -> tuple[float, float | None]:
        return psutil.Process().memory_info().rss / _MB, _gpu_used_mb()

    job(config["spec"], "warm")
    job(config["spec"], "warm2")
    print("WARM " + json.dumps(mem()), flush=True)
    for i, stage in enumerate(config["stages"]):
        before, gpu_before = mem()
        spec = {**config["spec"], "fault": {"stage": stage, "kind": config["kind"], "ballast_mb": config["ballast_mb"]}}
        with PeakSampler(lambda: mem()[0]) as rss_peak, PeakSampler(_gpu_used_mb) as gpu_peak:
            started = time.monotonic()
            outcome = job(spec, f"j{i}")
        ready_s = time.monotonic() - started
        after, gpu_after = mem()
        outcome += "; next job " + job({"prompt": "the next job", "steps": 1}, f"n{i}")
        print("ROW " + json.dumps([stage, before, rss_peak.peak, after, gpu_before, gpu_peak.peak, gpu_after, ready_s, outcome]), flush=True)


def run_naive(work: Path, spec: dict[str, Any], stages: list[str], kinds: list[str], args: argparse.Namespace) -> list[Row]:
    rows: list[Row] = []
    for kind, keep in [(k, v) for k in kinds for v in (True, False)]:
        if kind in ("crash", "hang") and not keep:
            continue  # the process ends either way: nothing to compare
        handling = "naive-keep" if keep else "naive-drop"
        # Crash and hang end the naive process: one process per stage. Others share one, like a server.
        groups = [[s] for s in stages] if kind in ("crash", "hang") else [stages]
        for group in groups:
            config = {"data_dir": str(work / "naive"), "device": args.device, "spec": spec, "stages": group,
                      "kind": kind, "ballast_mb": args.ballast_mb, "keep_exception": keep}  # fmt: skip
            config_path = work / "naive-config.json"
            config_path.write_text(json.dumps(config))
            proc = subprocess.Popen(
                [sys.executable, __file__, "--naive-child", str(config_path)], stdout=subprocess.PIPE, text=True
            )
            peak_box = PeakSampler(lambda: _rss_of([proc.pid]))
            seen: list[Row] = []
            guard = threading.Timer(900, proc.kill)  # nothing here should take this long
            hang_timer = threading.Timer(args.hang_wait, proc.kill)  # a hang never returns by itself
            limit = args.hang_wait
            warm_rss = float("nan")
            with peak_box:
                guard.start()
                assert proc.stdout is not None
                for line in proc.stdout:
                    if line.startswith("WARM "):
                        warm_rss = json.loads(line[5:])[0]
                        if kind == "hang":
                            hang_timer.start()
                    if line.startswith("ROW "):
                        st, b, p, a, gb, gp, ga, r, outcome = json.loads(line[4:])
                        seen.append(Row(st, kind, handling, b, p, a, gb, gp, ga, r, outcome))
                        print(_format_row(seen[-1]), flush=True)
                code = proc.wait()
                guard.cancel()
                hang_timer.cancel()
            if not seen:
                if kind == "hang":
                    outcome = f"never finished; the bench killed the process after {limit:.0f} s"
                elif code < 0:
                    outcome = f"the whole server process died (signal {-code})"
                else:
                    outcome = f"exit {code}"
                row = Row(group[0], kind, handling, warm_rss, peak_box.peak or 0.0, 0.0, None, None, None, None, outcome)
                seen.append(row)
                print(_format_row(row), flush=True)
            rows += seen
    return rows


# --- output --------------------------------------------------------------------------------------


def _f(value: float | None) -> str:
    return "–" if value is None or value != value else f"{value:.0f}"


def _format_row(row: Row) -> str:
    delta = row.after - row.before if row.before == row.before and row.after else None
    gpu = ""
    if row.gpu_before is not None:
        gdelta = (row.gpu_after or 0) - row.gpu_before
        gpu = f" {_f(row.gpu_before)} | {_f(row.gpu_peak)} | {_f(row.gpu_after)} | {gdelta:+.0f} |"
    return (
        f"| {row.stage} | {row.kind} | {row.handling} | {_f(row.before)} | {_f(row.peak)} | {_f(row.after)} | "
        f"{'–' if delta is None else f'{delta:+.0f}'} |{gpu} {'–' if row.ready_s is None else f'{row.ready_s:.1f}'} | {row.outcome} |"
    )


def _header(gpu: bool) -> str:
    gpu_cols = " GPU before | GPU peak | GPU after | GPU Δ |" if gpu else ""
    line = "| stage | fault | handling | RSS before MB | RSS peak MB | RSS after MB | RSS Δ MB |" + gpu_cols + " ready again s | outcome |"
    return line + "\n" + "|---" * (line.count("|") - 1) + "|"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ballast-mb", type=int, default=300)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--stall-timeout", type=float, default=5.0)
    parser.add_argument("--hang-wait", type=float, default=10.0)
    parser.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    parser.add_argument("--naive-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_child:
        naive_child(args.naive_child)
        return
    stages = [s for s in args.stages.split(",") if s]
    kinds = [k for k in args.kinds.split(",") if k]
    gpu = _gpu_used_mb() is not None and args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="sf-bench-") as tmp:
        work = Path(tmp)
        spec = base_spec(work)
        print(_header(gpu), flush=True)
        rows = run_supervised(work, spec, stages, kinds, args)
        if args.naive:
            rows += run_naive(work, spec, stages, kinds, args)
    table = _header(gpu) + "\n" + "\n".join(_format_row(r) for r in sorted(rows, key=lambda r: (STAGES.index(r.stage), KINDS.index(r.kind), r.handling)))
    print("\n" + table)
    if args.markdown:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    main()
