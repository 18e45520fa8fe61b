"""Screenshot of the System tab's memory timeline around an injected out-of-memory failure.

    python bench/timeline_screenshot.py                       # writes docs/memory-timeline.png
    python bench/timeline_screenshot.py --ballast-mb 1024 --out /tmp/timeline.png

Starts its own server (built-in tiny model, fault injection on, a sample every 0.5 s), runs one
normal job, then one whose denoise step allocates ``--ballast-mb`` and raises out of memory at
every memory-saving level, waits for memory to settle, opens the UI in Chromium (Playwright,
``/usr/bin/chromium``), hovers the failure marker and screenshots the chart. It prints each job's
per-stage peaks, the level after cleanup and the sampler's CPU cost. Nothing here is drawn by hand.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from steadyframe.testing.serve import CHROMIUM, CHROMIUM_ARGS, TRACE_POINTS_JS, start_serve, stop_serve

ROOT = Path(__file__).resolve().parent.parent
def start_server(data_dir: Path, sample_s: float) -> tuple[subprocess.Popen[bytes], str]:
    """A server with fault injection and a memory sample every ``sample_s`` seconds."""
    env = {"STEADYFRAME_FAULT_INJECTION": "1", "STEADYFRAME_HISTORY_SAMPLE_S": str(sample_s), "STEADYFRAME_LOG_LEVEL": "WARNING"}
    return start_serve(data_dir, env)


def run_job(http: httpx.Client, **spec: Any) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=spec)
    response.raise_for_status()
    job_id = response.json()["id"]
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)


def print_profile(job: dict[str, Any]) -> None:
    profile = (job.get("result") or job.get("error") or {}).get("memory_profile") or {}
    print(f"\njob {job['id']} {job['status']}" + (f" ({job['error']['kind']}, {job['error']['error_id']})" if job.get("error") else ""))
    print(f"{'stage':<14}{'level':>6}{'peak RSS MB':>14}{'peak VRAM MB':>14}")
    for stage in profile.get("stages", []):
        print(f"{stage['stage']:<14}{stage['memory_level']:>6}{stage['peak_rss_mb']:>14,.0f}{stage['peak_vram_reserved_mb']:>14,.0f}")
    after = profile.get("after_cleanup") or {}
    if after:
        print(f"after cleanup: {after['rss_mb']:,.0f} MB RSS (empty worker {after['baseline_rss_mb']:,.0f} MB)")


def screenshot(url: str, out: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(f"{url}/ui/")
        page.get_by_role("tab", name="System").click()
        page.locator("#memory-window").get_by_text("5 min", exact=True).click()
        page.wait_for_function(f"({TRACE_POINTS_JS})('failure').length > 0", timeout=60_000)
        page.wait_for_timeout(1500)  # the chart settles after the window change
        for _ in range(20):  # hover the failure until its label shows (a redraw drops a label)
            x, y = page.evaluate(TRACE_POINTS_JS, "failure")[-1]
            page.mouse.move(x, y)
            page.wait_for_timeout(300)
            if "error id" in (page.locator("#memory-timeline .hoverlayer").text_content() or ""):
                break
            page.mouse.move(5, 5)
        page.locator("#memory-timeline").screenshot(path=str(out), animations="disabled")
        browser.close()


def shrink_png(path: Path, colors: int = 64) -> None:
    """A chart has few colours: a palette PNG is a fraction of the size of a true-colour one."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "memory-timeline.png")
    parser.add_argument("--ballast-mb", type=int, default=1024, help="memory the failing step allocates before it raises")
    parser.add_argument("--steps", type=int, default=40, help="denoise steps of each job (longer jobs, wider humps)")
    parser.add_argument("--sample-s", type=float, default=0.5)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="steadyframe-timeline-"))
    process, url = start_server(data_dir, args.sample_s)
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            time.sleep(3)  # some idle baseline on the left of the chart
            ok = run_job(http, prompt="a lighthouse at dusk", steps=args.steps, num_frames=17)
            time.sleep(3)
            fault = {"stage": "denoise", "kind": "oom", "at_step": args.steps // 2, "ballast_mb": args.ballast_mb}
            failed = run_job(http, prompt="this one runs out of memory", steps=args.steps, num_frames=17, fault=fault)
            time.sleep(5)  # memory back at idle, on the right of the chart
            for job in (ok, failed):
                print_profile(job)
            sampling = http.get("/v1/system/history").json()["sampling"]
            print(
                f"\nsampler: {sampling['cpu_s'] * 1000:.1f} ms CPU over {sampling['running_s']:.0f} s "
                f"= {sampling['cpu_ms_per_minute']:.1f} ms CPU per minute at one sample every {args.sample_s} s"
            )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(url, args.out)
        shrink_png(args.out)
        print(f"screenshot: {args.out} ({args.out.stat().st_size / 1024:.0f} KB)")
    finally:
        stop_serve(process)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
