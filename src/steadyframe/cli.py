"""The ``steadyframe`` command line: ``generate``, ``models`` and ``serve``.

Errors print one line (with advice) and exit non-zero: 2 for bad input, 1 for anything else;
``--debug`` also prints the traceback. Torch is imported only when a job actually runs.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Optional

import typer
from pydantic import ValidationError

from steadyframe.contracts import JobHooks, JobResult
from steadyframe.errors import ErrorKind, SteadyframeError
from steadyframe.settings import Settings, load_settings
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage

app = typer.Typer(
    name="steadyframe",
    help="Generate videos with CogVideoX; runs a built-in tiny model when none is configured.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

EXIT_INVALID_INPUT = 2
EXIT_FAILED = 1


class ProgressBars:
    """Job hooks that draw one tqdm bar per stage on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self._bar = None
        self._enabled = enabled

    def enter_stage(self, stage: Stage, total: int | None = None) -> None:
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=total, desc=f"{stage.value:<13}", unit="step", disable=not self._enabled, leave=True)

    def step(self, stage: Stage, step: int, total: int) -> None:
        if self._bar is not None:
            if self._bar.total != total:
                self._bar.total = total
            self._bar.update(step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def execute_spec(spec: JobSpec, settings: Settings, out_dir: Path, hooks: JobHooks) -> JobResult:
    """Run one job in a supervised worker process, as the server does (same guarantees:
    OOM ladder, crash and hang handling, memory back to baseline); its files land in ``out_dir``.
    Failures raise ``JobFailedError`` (kind, message with error id, advice)."""
    from steadyframe.engine.plan import plan_job
    from steadyframe.supervisor.oneshot import run_one

    plan_job(spec, settings)  # bad input fails here, in a second, before a worker starts (no torch)
    quiet_logs = settings.model_copy(update={"log_to_stderr": False})  # the log file keeps them; stderr has the bars
    return run_one(spec, quiet_logs, out_dir, hooks)


def _place_outputs(result: JobResult, output: Path) -> dict[str, Path]:
    """Move the job's files next to ``output``: X.mp4, X.gif and X.json."""
    targets = {
        "video": output,
        "preview": output.with_suffix(".gif"),
        "sidecar": output.with_suffix(".json"),
    }
    for source, target in zip((result.video_path, result.gif_path, result.sidecar_path), targets.values()):
        shutil.move(source, target)
    return targets


def _one_line_error(exc: BaseException) -> tuple[str, int]:
    """A single user-facing line for ``exc`` and the exit code it maps to."""
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "input"
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        return f"Error: invalid {field}: {message}", EXIT_INVALID_INPUT
    if isinstance(exc, SteadyframeError):
        advice = f" {exc.advice}" if exc.advice else ""
        code = EXIT_INVALID_INPUT if exc.kind == ErrorKind.INVALID_INPUT else EXIT_FAILED
        return f"Error: {exc.message}{advice}", code
    from steadyframe.taxonomy import classify  # the one place that names library failures

    classified = classify(exc)
    code = EXIT_INVALID_INPUT if classified.kind == ErrorKind.INVALID_INPUT else EXIT_FAILED
    return f"Error: {classified.message} {classified.advice}".rstrip(), code


def _fail(exc: BaseException, debug: bool) -> typer.Exit:
    line, code = _one_line_error(exc)
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    typer.echo(line, err=True)
    return typer.Exit(code)


def _guarded(debug: bool, action: Callable[[], None]) -> None:
    failure: typer.Exit | None = None
    try:
        action()
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except Exception as exc:  # every failure becomes one line and an exit code
        failure = _fail(exc, debug)
    if failure is not None:
        raise failure


@app.command()
def generate(
    prompt: str = typer.Argument(..., help="what the video shows"),
    image: Optional[Path] = typer.Option(None, "--image", help="image-to-video: the first frame"),
    video: Optional[Path] = typer.Option(None, "--video", help="video-to-video: the video to transform"),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="family, repo id or folder; default built-in"),
    preset: str = typer.Option("balanced", "--preset", "-p", help="balanced, fast, quality, high_motion, subtle"),
    negative_prompt: str = typer.Option("", "--negative-prompt", "-n"),
    steps: Optional[int] = typer.Option(None, "--steps"),
    guidance: Optional[float] = typer.Option(None, "--guidance"),
    dynamic_cfg: Optional[bool] = typer.Option(None, "--dynamic-cfg/--no-dynamic-cfg"),
    seed: Optional[int] = typer.Option(None, "--seed", help="random when not given; always recorded"),
    frames: Optional[int] = typer.Option(None, "--frames"),
    width: Optional[int] = typer.Option(None, "--width"),
    height: Optional[int] = typer.Option(None, "--height"),
    strength: float = typer.Option(0.8, "--strength", help="video-to-video: how far to move from the input"),
    upscale: int = typer.Option(1, "--upscale", help="1, 2 or 4"),
    interpolate: int = typer.Option(1, "--interpolate", help="1, 2 or 4"),
    upscale_model: Optional[str] = typer.Option(None, "--upscale-model"),
    rife_model: Optional[str] = typer.Option(None, "--rife-model"),
    crf: Optional[int] = typer.Option(None, "--crf", help="H.264 quality, lower is better"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N"),
    output: Path = typer.Option(Path("steadyframe.mp4"), "--output", "-o", help="the MP4; .gif and .json go beside it"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
    debug: bool = typer.Option(False, "--debug", help="show the traceback on errors"),
) -> None:
    """Generate a video and write OUTPUT.mp4, OUTPUT.gif (preview) and OUTPUT.json (settings)."""

    def action() -> None:
        mode = "i2v" if image else "v2v" if video else "t2v"
        spec = JobSpec(
            mode=mode, prompt=prompt, negative_prompt=negative_prompt, model=model, preset=preset,
            steps=steps, guidance=guidance, use_dynamic_cfg=dynamic_cfg, seed=seed, num_frames=frames,
            width=width, height=height, strength=strength, upscale=upscale, interpolate=interpolate,
            upscale_model=upscale_model, rife_model=rife_model, crf=crf,
            image_path=str(image) if image else None, video_path=str(video) if video else None,
        )  # fmt: skip
        settings = load_settings(device=device)
        target = output.expanduser().resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        bars = ProgressBars(enabled=not quiet)
        with tempfile.TemporaryDirectory(prefix=".steadyframe-", dir=target.parent) as work:
            try:
                result = execute_spec(spec, settings, Path(work), bars)
            finally:
                bars.close()
            placed = _place_outputs(result, target)
        typer.echo(f"video:   {placed['video']}  ({result.frames} frames, {result.fps:g} fps, "
                   f"{result.width}×{result.height}, seed {result.seed})")  # fmt: skip
        typer.echo(f"preview: {placed['preview']}")
        typer.echo(f"sidecar: {placed['sidecar']}")
        if result.test_noise:
            typer.echo("note:    built-in tiny model with random weights: this video is test noise.")

    _guarded(debug, action)


@app.command()
def models(debug: bool = typer.Option(False, "--debug")) -> None:
    """List the model families and which are present on this machine."""

    def action() -> None:
        from steadyframe.families import families_status

        rows = families_status(load_settings())
        typer.echo(f"{'FAMILY':<22}{'MODES':<10}{'SIZE':<11}{'FRAMES':<9}{'FPS':<5}PRESENT")
        for row in rows:
            size = f"{row['default_width']}x{row['default_height']}"
            typer.echo(
                f"{row['name']:<22}{'/'.join(row['modes']):<10}{size:<11}{row['default_frames']:<9}"
                f"{row['fps']:<5}{'yes' if row['present'] else 'no'}  ({row['note']})"
            )

    _guarded(debug, action)


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, "--host"),
    port: Optional[int] = typer.Option(None, "--port"),
    model: Optional[str] = typer.Option(None, "--model"),
    ray_address: Optional[str] = typer.Option(
        None, "--ray-address", help="HOST:PORT of a Ray cluster: run the workers as Ray actors there"
    ),
) -> None:
    """Start the server: web UI, REST API and workers (local processes, or Ray actors with --ray-address)."""
    settings = load_settings(host=host, port=port, model=model, ray_address=ray_address)
    from steadyframe.server.main import serve

    _guarded(False, lambda: serve(settings))  # a refused bind (no token beyond loopback) is one line, not a traceback


def main() -> None:  # pragma: no cover - entry point for `python -m steadyframe.cli`
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
