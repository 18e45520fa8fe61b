"""Pull throughput against `hf download` of the same files from the same local Hub, in one run,
and the bytes a resume fetches again after the connection is cut half-way.

    python bench/pull.py [--mb 256] [--repeat 3]

The hub is ``steadyframe.testing.local_hub`` on loopback (unthrottled), serving a diffusers-shaped
repo of random bytes; both clients fetch exactly the files ``steadyframe pull`` selects. Numbers
are medians of ``--repeat`` runs; "re-fetched" is what the hub sent beyond the files' size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "0"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["HF_HUB_DISABLE_XET"] = "1"

from steadyframe.testing.local_hub import LocalHub  # noqa: E402

REPO = "bench/cogvideox-shaped"


def make_repo(root: Path, total_mb: int) -> Path:
    """A diffusers-shaped repo: configs plus three weight files holding ``total_mb`` random MB."""
    folder = root / "repo"
    shares = {"transformer/diffusion_pytorch_model.safetensors": 0.6, "text_encoder/model.safetensors": 0.3,
              "vae/diffusion_pytorch_model.safetensors": 0.1}  # fmt: skip
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    for part in ("transformer", "text_encoder", "vae", "scheduler", "tokenizer"):
        (folder / part).mkdir(exist_ok=True)
        (folder / part / "config.json").write_text("{}")
    for name, share in shares.items():
        with open(folder / name, "wb") as handle:
            left = int(total_mb * share * 2**20)
            while left:
                block = os.urandom(min(left, 8 * 2**20))
                handle.write(block)
                left -= len(block)
    shutil.copyfile(folder / "vae/diffusion_pytorch_model.safetensors", folder / "vae/diffusion_pytorch_model.bin")
    return folder


def ours(models_dir: Path) -> None:
    from steadyframe.pull import pull_repo

    pull_repo(REPO, None, models_dir=models_dir, name="bench", token=None, reserve_bytes=0)


def hf_cli(target: Path, files: list[str], hub: LocalHub) -> None:
    hf = Path(sys.executable).with_name("hf")
    env = {**os.environ, "HF_ENDPOINT": hub.url}
    subprocess.run([str(hf), "download", REPO, *files, "--local-dir", str(target)], env=env, check=True,
                   capture_output=True)  # fmt: skip


def hf_api(target: Path, files: list[str]) -> None:
    from huggingface_hub import snapshot_download

    snapshot_download(REPO, local_dir=target, allow_patterns=files)


def timed(action) -> float:
    began = time.perf_counter()
    action()
    return time.perf_counter() - began


def resume_refetch(hub: LocalHub, total: int, run_once, cut_at: int) -> int:
    """Cut the connection after ``cut_at`` bytes, let ``run_once`` fail, restore, run again: -> bytes sent twice."""
    hub.stats.sent.clear()
    hub.cut_after(cut_at)
    try:
        run_once()
    except Exception:  # the cut: expected
        pass
    hub.restore()
    run_once()
    return sum(v for (repo, _), v in hub.stats.sent.items() if repo == REPO) - total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=256, help="repo size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="steadyframe-bench-pull-"))
    try:
        hub = LocalHub().start()
        hub.add_repo(REPO, make_repo(work, args.mb))
        os.environ["HF_ENDPOINT"] = hub.url
        from huggingface_hub import constants
        from huggingface_hub.utils import logging as hf_logging

        hf_logging.set_verbosity_error()  # its "trying to resume" warnings during the cut are expected

        constants.ENDPOINT = hub.url  # this process imported huggingface_hub before HF_ENDPOINT was set
        constants.HUGGINGFACE_CO_URL_TEMPLATE = hub.url + "/{repo_id}/resolve/{revision}/{filename}"
        from steadyframe.pull import wanted_files

        files = wanted_files(list(hub.repos[REPO].files))
        total = sum(hub.repos[REPO].files[f].size for f in files)
        runs: dict[str, list[float]] = {"steadyframe pull": [], "hf download (CLI)": [], "snapshot_download (API)": []}
        for index in range(args.repeat):
            for label, action in (
                ("steadyframe pull", lambda d: ours(d)),
                ("hf download (CLI)", lambda d: hf_cli(d, files, hub)),
                ("snapshot_download (API)", lambda d: hf_api(d, files)),
            ):
                target = work / f"{label.split()[0]}-{index}"
                runs[label].append(timed(lambda: action(target)))
                shutil.rmtree(target, ignore_errors=True)
        mb = total / 2**20
        base = statistics.median(runs["hf download (CLI)"])
        print(f"repo: {mb:.1f} MB in {len(files)} files (the .bin beside .safetensors skipped by all); "
              f"median of {args.repeat}")  # fmt: skip
        print(f"{'client':<26}{'seconds':>9}{'MB/s':>9}{'vs hf download':>16}")
        for label, seconds in runs.items():
            median = statistics.median(seconds)
            print(f"{label:<26}{median:>9.2f}{mb / median:>9.1f}{base / median:>15.2f}x")
        cut_at = total // 2
        ours_dir = work / "resume-ours"
        our_refetch = resume_refetch(hub, total, lambda: ours(ours_dir), cut_at)
        api_dir = work / "resume-api"
        api_refetch = resume_refetch(hub, total, lambda: hf_api(api_dir, files), cut_at)
        print(f"\nconnection cut after {cut_at / 2**20:.1f} MB, then pulled again:")
        print(f"{'client':<26}{'re-fetched MB':>14}")
        print(f"{'steadyframe pull':<26}{our_refetch / 2**20:>14.2f}")
        print(f"{'snapshot_download (API)':<26}{api_refetch / 2**20:>14.2f}")
        hub.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
