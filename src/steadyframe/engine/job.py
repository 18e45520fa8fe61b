"""``run_job``: one generation job from spec to files, stage by stage, reporting through hooks."""

from __future__ import annotations

import platform
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from PIL import Image

import steadyframe
from steadyframe.contracts import JobHooks, JobResult, ModelProvider
from steadyframe.frame_file import FrameFile, Frames
from steadyframe.engine import stages
from steadyframe.engine.checkpoints import Checkpoint, StageCheckpoints
from steadyframe.engine.compiled import compile_blocks, compiler_missing, is_compiled
from steadyframe.engine.devices import resolve_device
from steadyframe.engine.loading import (
    count_tokens,
    load_pipeline,
    load_tokenizer,
    locate_weights,
    pipeline_class,
    torch_dtype,
    weights_size_mb,
)
from steadyframe.engine.memory_levels import describe, effective_level
from steadyframe.engine.plan import JobPlan, check_prompt_tokens, plan_job
from steadyframe.job_files import checkpoints_dir
from steadyframe.logs import get_logger
from steadyframe.engine.speed import speed_mode
from steadyframe.media import load_image, load_video_frames
from steadyframe.postprocess.plan import interpolated_fps, interpolated_frame_count, rife_flow_scale
from steadyframe.settings import Settings
from steadyframe.spec import JobSpec
from steadyframe.stages import Stage
from steadyframe.taxonomy import is_out_of_memory
from steadyframe.video_io import write_gif, write_mp4, write_sidecar

log = get_logger("engine.job")

VIDEO_NAME, GIF_NAME, SIDECAR_NAME = "video.mp4", "preview.gif", "result.json"
SMALLEST_RECOVERY_TILE = 64  # upscale tiles halve after an out-of-memory down to this side


def _release_memory() -> None:
    """Give a failed attempt's memory back before the stage retries (the model stays loaded):
    the worker's one cleanup (gc, CUDA cache, malloc_trim)."""
    from steadyframe.worker.memory import cleanup

    cleanup()


def _return_freed_memory() -> None:
    """What a finished stage freed goes back to the OS before the next stage, so a job's peak is
    its largest stage, not their sum (the worker's one trim: CUDA cache, malloc_trim)."""
    from steadyframe.worker.memory import trim

    trim()


class _Clock:
    """Wall time per stage, in seconds, in the order the stages ran."""

    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[str(name)] = round(self.timings.get(str(name), 0.0) + time.perf_counter() - start, 4)


@dataclass
class _Run:
    """One run of a job: what every stage function needs, passed as one thing."""

    plan: JobPlan
    settings: Settings
    hooks: JobHooks
    models: ModelProvider
    device: str
    level: int
    clock: _Clock
    saved: StageCheckpoints
    recoveries: dict[str, str] = field(default_factory=dict)  # stage -> what got it past an out-of-memory


def _load_inputs(plan: JobPlan, settings: Settings) -> tuple[Image.Image | None, list[Image.Image] | None]:
    spec = plan.spec
    image = load_image(spec.image_path, settings, plan.width, plan.height) if spec.image_path else None
    video = None
    if spec.video_path:
        video = load_video_frames(spec.video_path, settings, plan.width, plan.height, plan.fps, plan.num_frames)
    return image, video


def _check_tokens(tokenizer: Any, plan: JobPlan) -> None:
    check_prompt_tokens(count_tokens(tokenizer, plan.spec.prompt))
    if plan.spec.negative_prompt:
        check_prompt_tokens(count_tokens(tokenizer, plan.spec.negative_prompt), what="negative prompt")


def _check_tokens_on_disk(plan: JobPlan, folder: Path | None) -> bool:
    """Count prompt tokens with the model's own tokenizer when its files are on disk -> checked?"""
    if folder is None or not (folder / "tokenizer").is_dir():
        return False
    _check_tokens(load_tokenizer(folder), plan)
    return True


def _model_key(plan: JobPlan, folder: Path, device: str, level: int, compiled: bool) -> str:
    """One entry per weights folder (not per task): t2v and v2v on one folder share its modules."""
    key = f"pipeline:{folder}:{torch_dtype(plan.family, device)}:{device}:level{level}"
    return key + (":compiled" if compiled else "")


_WARM_SHAPES = "_steadyframe_warm_shapes"  # on a compiled pipeline: the shapes it has already run


class _StepTimes:
    """When each denoise step ended, to tell a compiling first step from a warm one."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ends: list[float] = []

    def mark(self) -> None:
        self.ends.append(time.perf_counter())

    def first_step_excess(self) -> float | None:
        """Seconds the first step took beyond a typical later step (None with fewer than 2 steps)."""
        if len(self.ends) < 2:
            return None
        durations = np.diff([self.start, *self.ends])
        return max(0.0, float(durations[0] - np.median(durations[1:])))


def _record_compile(pipe: Any, plan: JobPlan, steps: _StepTimes, clock: _Clock) -> None:
    """On a compiled model's first run at a shape, move the first step's extra time into "compile"."""
    if not is_compiled(pipe.transformer):
        return
    shape = (plan.mode, plan.num_frames, plan.height, plan.width, plan.spec.speed)
    warm: set = getattr(pipe, _WARM_SHAPES, set())
    if shape in warm:
        return
    warm.add(shape)
    setattr(pipe, _WARM_SHAPES, warm)
    excess = steps.first_step_excess()
    if excess is not None:
        clock.timings["compile"] = round(excess, 4)
        clock.timings[str(Stage.DENOISE)] = round(clock.timings[str(Stage.DENOISE)] - excess, 4)


def _for_mode(pipe: Any, plan: JobPlan) -> Any:
    """The loaded pipeline as the one ``plan.mode`` needs; ``from_pipe`` shares every module."""
    cls = pipeline_class(plan.ref, plan.mode)
    return pipe if type(pipe) is cls else cls.from_pipe(pipe)


@contextmanager
def _vae_tiled(pipe: Any) -> Iterator[None]:
    """VAE slicing and tiling for one decode, then the pipeline as it was (it stays loaded)."""
    vae = pipe.vae
    was_slicing, was_tiling = bool(getattr(vae, "use_slicing", False)), bool(getattr(vae, "use_tiling", False))
    vae.enable_slicing()
    vae.enable_tiling()
    try:
        yield
    finally:
        if not was_slicing:
            vae.disable_slicing()
        if not was_tiling:
            vae.disable_tiling()


def _decode(run: _Run, pipe: Any, latents: torch.Tensor) -> np.ndarray:
    """DECODE; out of memory here retries this decode with VAE tiling, not the whole job."""
    plan, hooks = run.plan, run.hooks
    try:
        hooks.enter_stage(Stage.DECODE, 1)
        frames = stages.to_uint8(stages.decode(pipe, plan, latents))
        recovered = False
    except Exception as exc:
        if not is_out_of_memory(exc) or getattr(pipe.vae, "use_tiling", False):
            raise
        recovered = True  # retried outside the except block, so the failed attempt's frames are gone
    if recovered:
        _release_memory()
        hooks.enter_stage(Stage.DECODE, 1)
        with _vae_tiled(pipe):
            frames = stages.to_uint8(stages.decode(pipe, plan, latents))
        run.recoveries[Stage.DECODE.value] = "VAE slicing and tiling"
    hooks.step(Stage.DECODE, 1, 1)
    return frames

def _generate(run: _Run, latents: torch.Tensor | None) -> FrameFile:
    """LOAD, ENCODE_PROMPT, DENOISE, DECODE -> uint8 frames [F, H, W, 3] in the decode frame file;
    with ``latents`` (a denoise checkpoint) only LOAD and DECODE run."""
    plan, settings, hooks, models, device, level, clock, saved = (
        run.plan, run.settings, run.hooks, run.models, run.device, run.level, run.clock, run.saved
    )  # fmt: skip
    with clock.stage("prepare"):
        tokens_checked = latents is not None or _check_tokens_on_disk(plan, plan.ref.local_dir)
        image, video = _load_inputs(plan, settings) if latents is None else (None, None)
    with ExitStack() as stack:
        hooks.enter_stage(Stage.LOAD, 1)
        with clock.stage(Stage.LOAD):
            folder = locate_weights(plan.ref, settings)  # builds or downloads when absent
            tokens_checked = tokens_checked or _check_tokens_on_disk(plan, folder)  # before the weights load

            no_compiler = compiler_missing(device) if settings.compile_blocks else None
            if no_compiler is not None:
                log.warning("compiled blocks are on but this job runs uncompiled: %s", no_compiler)
            compile_wanted = settings.compile_blocks and no_compiler is None

            def loader() -> Any:
                pipe = load_pipeline(plan.ref, folder, mode=plan.mode, device=device, memory_level=level)
                if compile_wanted:
                    compile_blocks(pipe.transformer)
                return pipe

            key = _model_key(plan, folder, device, level, compile_wanted)
            pipe = _for_mode(stack.enter_context(models.acquire(key, loader, size_mb=weights_size_mb(folder))), plan)
        hooks.step(Stage.LOAD, 1, 1)
        if latents is None:
            if not tokens_checked:
                _check_tokens(pipe.tokenizer, plan)
            hooks.enter_stage(Stage.ENCODE_PROMPT, 1)
            with clock.stage(Stage.ENCODE_PROMPT):
                embeds = stages.encode_prompt(pipe, plan)
            hooks.step(Stage.ENCODE_PROMPT, 1, 1)
            hooks.enter_stage(Stage.DENOISE, plan.denoise_steps)
            step_times = _StepTimes()

            def on_step(index: int, total: int) -> None:
                step_times.mark()
                hooks.step(Stage.DENOISE, index, total)

            with clock.stage(Stage.DENOISE):
                generator = torch.Generator().manual_seed(plan.seed)  # CPU generator: same noise on any device
                with speed_mode(
                    pipe, plan.spec.speed, guidance=plan.guidance, fast_attention=settings.fast_attention, device=device
                ) as speed_record:
                    latents = stages.denoise(
                        pipe, plan, embeds, image=image, video=video, generator=generator, on_step=on_step
                    )
            _record_compile(pipe, plan, step_times, clock)
            saved.speed = speed_record.to_dict() | {"compiled_blocks": is_compiled(pipe.transformer)}
            if no_compiler is not None:
                saved.speed["compile_skipped"] = no_compiler
            del embeds, image, video
            saved.save_latents(latents, plan.seed)
        with clock.stage(Stage.DECODE):
            frames = _decode(run, pipe, latents)
        del latents, pipe  # the provider alone decides whether the pipeline stays loaded
    decoded = saved.write_frames(Stage.DECODE, frames, plan.seed)  # from here on, frames stream from disk
    del frames
    _return_freed_memory()  # the VAE's activations for the whole clip
    return decoded


def _upscale(run: _Run, frames: Frames) -> FrameFile:
    """UPSCALE; out of memory here retries with smaller tiles (halving down to 64 px), one tile a pass."""
    from steadyframe.postprocess import upscale_frames

    plan, hooks, models, device = run.plan, run.hooks, run.models, run.device
    spec = plan.spec
    count, height, width = frames.shape[:3]
    file = run.saved.frames_path(Stage.UPSCALE, count * height * width * 3 * spec.upscale**2, "Upscaling")
    tile: int | None = None  # first try: tiles only when a frame does not fit free memory
    used: dict[str, str] = {}
    while True:
        if tile is not None:
            _release_memory()
        try:
            hooks.enter_stage(Stage.UPSCALE, len(frames))
            made = upscale_frames(
                frames,
                weights=plan.upscale_weights,
                scale=spec.upscale,
                device=device,
                models=models,
                on_frame=lambda i, total: hooks.step(Stage.UPSCALE, i, total),
                tile=tile,
                out=file,
                reduced_precision=spec.speed != "exact",  # exact: full precision end to end
                used=used,
            )
        except Exception as exc:
            smaller = _smaller_tile(tile, frames, SMALLEST_RECOVERY_TILE)
            if not is_out_of_memory(exc) or smaller is None:
                raise
            tile = smaller
            continue  # the failed pass's memory is released at the top of the loop, once exc is gone
        if tile is not None:
            run.recoveries[Stage.UPSCALE.value] = f"{tile}-px tiles"
        run.saved.speed["upscale_dtype"] = used["dtype"]  # kept in the manifests after this stage
        assert isinstance(made, FrameFile)  # a factor above 1 with ``out`` streams to the file
        return made


def _smaller_tile(tile: int | None, frames: Frames, floor: int) -> int | None:
    """The next tile size after an out-of-memory, or None when already at the floor."""
    current = tile if tile else max(frames.shape[1], frames.shape[2])
    smaller = max(floor, current // 2)
    return smaller if smaller < current else None


def _interpolate(run: _Run, frames: Frames) -> FrameFile:
    """INTERPOLATE; out of memory here retries at a lower flow scale, then on the CPU."""
    from steadyframe.postprocess import interpolate_frames
    from steadyframe.postprocess.rife import FLOW_SCALES

    plan, hooks, models, device = run.plan, run.hooks, run.models, run.device
    spec = plan.spec
    total = interpolated_frame_count(len(frames), spec.interpolate)
    file = run.saved.frames_path(Stage.INTERPOLATE, total * frames.shape[1] * frames.shape[2] * 3, "Frame interpolation")
    flow_scale, where = rife_flow_scale(spec.upscale), device
    while True:
        if (flow_scale, where) != (rife_flow_scale(spec.upscale), device):
            _release_memory()
        try:
            hooks.enter_stage(Stage.INTERPOLATE, total)
            made = interpolate_frames(
                frames,
                weights=plan.rife_weights,
                factor=spec.interpolate,
                device=where,
                models=models,
                on_frame=lambda i, total: hooks.step(Stage.INTERPOLATE, i, total),
                flow_scale=flow_scale,
                out=file,
            )
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            lower = [s for s in FLOW_SCALES if s < flow_scale]
            if lower:
                flow_scale = max(lower)
            elif where != "cpu":
                where = "cpu"
            else:
                raise
            continue
        if (flow_scale, where) != (rife_flow_scale(spec.upscale), device):
            run.recoveries[Stage.INTERPOLATE.value] = f"flow scale {flow_scale}" + (" on the CPU" if where != device else "")
        assert isinstance(made, FrameFile)
        return made


def _postprocess(run: _Run, frames: Frames, done: Stage | None) -> Frames:
    """UPSCALE and INTERPOLATE when the spec asks for them and ``done`` (a checkpoint's stage) is before them."""
    spec, clock, saved = run.plan.spec, run.clock, run.saved
    order = list(Stage)
    finished = order.index(done) if done is not None else -1
    if spec.upscale > 1 and finished < order.index(Stage.UPSCALE):
        with clock.stage(Stage.UPSCALE):
            frames = _upscale(run, frames)
        saved.commit_frames(Stage.UPSCALE, frames, run.plan.seed)
        _return_freed_memory()
    if spec.interpolate > 1 and finished < order.index(Stage.INTERPOLATE):
        with clock.stage(Stage.INTERPOLATE):
            frames = _interpolate(run, frames)
        saved.commit_frames(Stage.INTERPOLATE, frames, run.plan.seed)
        _return_freed_memory()
    return frames



def _versions() -> dict[str, str]:
    import av
    import diffusers
    import transformers

    return {
        "steadyframe": steadyframe.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "av": av.__version__,
    }


def run_job(
    spec: JobSpec,
    settings: Settings,
    out_dir: Path,
    *,
    hooks: JobHooks,
    models: ModelProvider,
    memory_level: int = 0,
) -> JobResult:
    """Validate ``spec``, generate, post-process and write ``video.mp4``, ``preview.gif`` and
    ``result.json`` into ``out_dir`` -> the JobResult.

    Raises InvalidInputError / ModelUnavailableError before any model loads when the spec, its
    inputs or its model are unusable. Exceptions raised by ``hooks`` propagate untouched.
    """
    clock = _Clock()
    out_dir = Path(out_dir)
    with clock.stage("validate"):
        plan = plan_job(spec, settings)
        device = resolve_device(settings.device)
        level = effective_level(memory_level, device)
        saved = StageCheckpoints(checkpoints_dir(out_dir), spec, keep=settings.stage_checkpoints)
        resume = saved.latest()
        if resume is not None:
            plan = replace(plan, seed=resume.seed)  # the seed the finished stages were made with
            saved.speed = resume.speed  # what the denoise that made them ran
    run = _Run(plan, settings, hooks, models, device, level, clock, saved)
    try:
        return _finish(run, resume, out_dir)
    except BaseException:
        if not saved.keep:  # no retry may use them; with checkpoints the dispatcher decides
            saved.discard()
        raise


def _finish(run: _Run, resume: Checkpoint | None, out_dir: Path) -> JobResult:
    """Every stage from the checkpoint (or the start) to the written outputs -> the JobResult."""
    plan, settings, hooks, level, clock, saved, device = (
        run.plan, run.settings, run.hooks, run.level, run.clock, run.saved, run.device
    )  # fmt: skip
    spec = plan.spec
    frames = _resume_or_generate(run, resume)
    frames = _postprocess(run, frames, resume.stage if resume else None)
    recoveries = run.recoveries
    fps = float(interpolated_fps(plan.fps, spec.interpolate))
    count, height, width = frames.shape[:3]
    out_dir.mkdir(parents=True, exist_ok=True)
    video_path, gif_path, sidecar_path = out_dir / VIDEO_NAME, out_dir / GIF_NAME, out_dir / SIDECAR_NAME

    hooks.enter_stage(Stage.ENCODE_VIDEO, count)
    with clock.stage(Stage.ENCODE_VIDEO):
        write_mp4(frames, video_path, fps=fps, crf=plan.crf, on_frame=lambda i, n: hooks.step(Stage.ENCODE_VIDEO, i, n))

    hooks.enter_stage(Stage.SAVE, 2)
    with clock.stage(Stage.SAVE):
        write_gif(frames, gif_path, fps=fps, test_noise=plan.family.test_noise)
        hooks.step(Stage.SAVE, 1, 2)
        result = JobResult(
            video_path=str(video_path),
            gif_path=str(gif_path),
            sidecar_path=str(sidecar_path),
            seed=plan.seed,
            frames=count,
            fps=fps,
            width=width,
            height=height,
            duration_s=round(count / fps, 4),
            memory_level=level,
            model=plan.ref.source,
            family=plan.family.name,
            test_noise=plan.family.test_noise,
            timings=clock.timings,
            resumed_from=resume.stage.value if resume else None,
            stage_recoveries=recoveries,
            speed=saved.speed,
        )
        sidecar = {
            "model": plan.ref.source,
            "family": plan.family.name,
            "test_noise": plan.family.test_noise,
            "settings": plan.settings_dict(),
            "frames": count,
            "fps": fps,
            "width": width,
            "height": height,
            "duration_s": result.duration_s,
            "device": device,
            "dtype": str(torch_dtype(plan.family, device)).removeprefix("torch."),
            "memory_level": level,
            "memory_saving": describe(level),
            "speed": saved.speed,
            "timings": clock.timings,
            "resumed_from": result.resumed_from,
            "stage_recoveries": recoveries,
            "versions": _versions(),
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_sidecar(sidecar, sidecar_path)
        hooks.step(Stage.SAVE, 2, 2)
    saved.discard()
    return result


def _resume_or_generate(run: _Run, resume: Checkpoint | None) -> Frames:
    """Frames after DECODE: an earlier attempt's checkpoint when it got that far, else generated."""
    if resume is not None and resume.stage != Stage.DENOISE:
        return resume.frames()
    latents = resume.latents() if resume is not None else None
    return _generate(run, latents)
