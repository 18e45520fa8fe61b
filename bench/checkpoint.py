"""Time a failure in upscale costs, with and without stage checkpoints, measured in one run.

For each variant, a supervised worker (the real engine on the built-in tiny CogVideoX with many
denoise steps, so denoise dominates as it does on a real model, and a tiny upscaler) runs: a clean job, then the same job with its worker SIGKILLed
(``crash`` fault) as upscale starts in its first attempt (``only_at_attempt: 0``); the job is
requeued and retried. Time lost = failed-then-retried wall time - clean wall time.

    python bench/checkpoint.py [--steps 50] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from steadyframe.jobs.sqlite import SqliteJobStore  # noqa: E402
from steadyframe.settings import Settings  # noqa: E402
from steadyframe.supervisor.dispatcher import Dispatcher  # noqa: E402
from steadyframe.supervisor.local import LocalProcessPool  # noqa: E402
from steadyframe.supervisor.pool import WorkerSlot  # noqa: E402
from steadyframe.testing.tiny_weights import save_realesrgan_x2plus  # noqa: E402


def _run(store: SqliteJobStore, dispatcher: Dispatcher, spec: dict) -> tuple[float, dict]:
    started = time.perf_counter()
    job, _ = store.submit(spec)
    dispatcher.wake()
    while not (record := store.get(job.id)).status.terminal:  # type: ignore[union-attr]
        time.sleep(0.05)
    assert record.status == "succeeded", record.error
    return time.perf_counter() - started, record.result or {}


def measure(root: Path, spec: dict, *, checkpoints: bool) -> tuple[float, float, str | None]:
    settings = Settings(
        data_dir=root / ("with" if checkpoints else "without"), device="cpu", fault_injection=True,
        stage_checkpoints=checkpoints, max_attempts=2, stall_timeout_s=600,
    )  # fmt: skip
    store = SqliteJobStore(settings.jobs_db)
    dispatcher = Dispatcher(settings, store, pool=LocalProcessPool(settings, [WorkerSlot("w0")]))
    dispatcher.start()
    try:
        while not dispatcher.is_ready():
            time.sleep(0.1)
        _run(store, dispatcher, spec)  # warm: the model loads once
        clean, _ = _run(store, dispatcher, spec)
        failed, result = _run(store, dispatcher, {**spec, "fault": {"stage": "upscale", "kind": "crash", "only_at_attempt": 0}})
    finally:
        dispatcher.stop(timeout=15)
        store.close()
    return clean, failed, result.get("resumed_from")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    with tempfile.TemporaryDirectory(prefix="sf-bench-ckpt-") as tmp:
        root = Path(tmp)
        spec = {
            "prompt": "a red ball rolling", "steps": args.steps, "seed": 3, "upscale": 2,
            "upscale_model": str(save_realesrgan_x2plus(root / "RealESRGAN_x2plus.pth")),
        }  # fmt: skip
        rows = [(label, *measure(root, spec, checkpoints=flag)) for label, flag in (("checkpoints", True), ("none", False))]
    print(f"{'variant':<12} {'clean s':>8} {'with failure s':>15} {'lost s':>8} {'resumed from':>13}")
    for label, clean, failed, resumed in rows:
        print(f"{label:<12} {clean:>8.1f} {failed:>15.1f} {failed - clean:>8.1f} {resumed or '-':>13}")
    lost_with, lost_without = rows[0][2] - rows[0][1], rows[1][2] - rows[1][1]
    print(f"time lost without / with checkpoints: {lost_without / max(lost_with, 1e-6):.2f}x")


if __name__ == "__main__":
    main()
