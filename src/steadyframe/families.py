"""The one registry of model families: what each CogVideoX variant can do and needs (no torch).

A *family* holds the rules (task, resolutions, frame counts, fps, dtype, scheduler); a
:class:`ModelRef` pairs a family with where its weights live (a built-in folder, a local
folder, or a Hugging Face repo id). The operator's catalog (:mod:`steadyframe.catalog`) decides
which names resolve to what; ``families_status`` lists every family and whether it is present.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.settings import Settings
from steadyframe.spec import Mode

Task = Literal["t2v", "i2v"]
Generation = Literal["1.0", "1.5"]
SchedulerName = Literal["ddim", "dpm"]
DtypeName = Literal["float16", "bfloat16", "float32"]

# Written into every built-in tiny model folder; its presence marks the folder as test noise.
BUILTIN_MARKER = "steadyframe-builtin.json"


@dataclass(frozen=True)
class ModelSizes:
    """What a family's weights and transformer look like, for the submit-time memory estimate.

    Parameter counts are the published checkpoints' file sizes divided by their 2-byte dtype
    (THUDM repos on the Hub: transformer 3.39 GB for 2b, 11.1 GB for the 5b models; text encoder
    T5-XXL 9.52 GB; VAE 431 MB). The tiny ones are the built-in folders' float32 files / 4.
    """

    transformer_params: int
    text_encoder_params: int
    vae_params: int
    hidden_size: int  # transformer width: attention heads x head dim
    num_layers: int  # transformer blocks (group offload holds about two at a time)
    text_encoder_layers: int = 24  # T5-XXL encoder blocks
    patch_size: int = 2  # latent pixels per token side
    patch_size_t: int = 1  # latent frames per token (2 for 1.5 models)


@dataclass(frozen=True)
class Family:
    """The rules of one model family; sizes are in pixels, ``frame_step`` gives N*step+1 frames."""

    name: str
    task: Task
    generation: Generation
    default_width: int
    default_height: int
    fixed_resolution: bool  # 1.0 models (and their learned position embeddings) only know one size
    min_side: int
    max_side: int
    size_multiple: int
    frame_step: int
    default_frames: int
    max_frames: int
    fps: int
    dtype: DtypeName
    scheduler: SchedulerName
    sizes: ModelSizes
    repo_id: str | None = None
    builtin: bool = False
    description: str = ""

    @property
    def modes(self) -> tuple[Mode, ...]:
        """Job modes this family serves: a text-to-video model also does video-to-video."""
        return ("t2v", "v2v") if self.task == "t2v" else ("i2v",)

    @property
    def test_noise(self) -> bool:
        """Built-in tiny models have random weights: their output is noise, for tests only."""
        return self.builtin

    def dtype_on(self, device: str) -> DtypeName:
        """The dtype weights load in on ``device``: fp16 off CUDA becomes fp32 (CPU half kernels are slow or missing)."""
        if not device.strip().lower().startswith("cuda") and self.dtype == "float16":
            return "float32"
        return self.dtype

    def default_frames_for(self, mode: Mode) -> int:
        """The frame count a job gets when it asks for none."""
        return self.v2v_frames(self.default_frames) if mode == "v2v" else self.default_frames

    def v2v_frames(self, frames: int) -> int:
        """Frames fed to video-to-video: 1.5 models need an even latent count, so 16N instead of 16N+1."""
        return frames - 1 if self.generation == "1.5" else frames

    def check_frames(self, frames: int, mode: Mode) -> None:
        """Raise InvalidInputError unless ``frames`` follows this family's rule for ``mode``."""
        step = self.frame_step
        if mode == "v2v" and self.generation == "1.5":
            ok = frames % step == 0 and step <= frames <= self.max_frames - 1
            rule = f"a multiple of {step} (e.g. {self.v2v_frames(self.default_frames)})"
        else:
            ok = frames % step == 1 and 1 + step <= frames <= self.max_frames
            rule = f"{step}N+1 (e.g. {self.default_frames})"
        if not ok:
            raise InvalidInputError(
                f"{self.name} cannot make {frames} frames: the frame count must be {rule}, "
                f"at most {self.max_frames}.",
                advice=f"Leave the frame count empty to get {self.default_frames_for(mode)} frames.",
            )

    def check_resolution(self, width: int, height: int) -> None:
        """Raise InvalidInputError unless ``width``×``height`` is allowed for this family."""
        if self.fixed_resolution:
            if (width, height) != (self.default_width, self.default_height):
                raise InvalidInputError(
                    f"{self.name} only generates {self.default_width}×{self.default_height}, "
                    f"not {width}×{height}.",
                    advice="Leave width and height empty; inputs are resized and cropped to fit.",
                )
            return
        problems = []
        if min(width, height) < self.min_side:
            problems.append(f"the shorter side must be at least {self.min_side}")
        if max(width, height) > self.max_side:
            problems.append(f"the longer side must be at most {self.max_side}")
        if width % self.size_multiple or height % self.size_multiple:
            problems.append(f"both sides must be multiples of {self.size_multiple}")
        if problems:
            raise InvalidInputError(
                f"{self.name} cannot generate {width}×{height}: " + "; ".join(problems) + ".",
                advice=f"Try {self.default_width}×{self.default_height}.",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "task": self.task,
            "modes": list(self.modes),
            "generation": self.generation,
            "default_width": self.default_width,
            "default_height": self.default_height,
            "fixed_resolution": self.fixed_resolution,
            "frame_rule": f"{self.frame_step}N+1",
            "default_frames": self.default_frames,
            "max_frames": self.max_frames,
            "fps": self.fps,
            "dtype": self.dtype,
            "scheduler": self.scheduler,
            "repo_id": self.repo_id,
            "builtin": self.builtin,
            "description": self.description,
        }


# The one place for the real families' sizes (see ModelSizes): T5-XXL encoder 4.76 B, VAE 0.22 B.
_T5_XXL_PARAMS = 4_760_000_000
_VAE_PARAMS = 215_000_000
SIZES_2B = ModelSizes(1_695_000_000, _T5_XXL_PARAMS, _VAE_PARAMS, hidden_size=30 * 64, num_layers=30)
SIZES_5B = ModelSizes(5_570_000_000, _T5_XXL_PARAMS, _VAE_PARAMS, hidden_size=48 * 64, num_layers=42)
SIZES_15_5B = ModelSizes(5_570_000_000, _T5_XXL_PARAMS, _VAE_PARAMS, hidden_size=48 * 64, num_layers=42, patch_size_t=2)
# The built-in tiny models (engine/tiny_models.py): about 1 MB of float32 files in all.
SIZES_TINY = ModelSizes(60_000, 20_000, 185_000, hidden_size=2 * 16, num_layers=2, text_encoder_layers=1)
SIZES_TINY_15 = ModelSizes(60_000, 20_000, 185_000, hidden_size=2 * 16, num_layers=2, text_encoder_layers=1, patch_size_t=2)


def _v10(name: str, task: Task, dtype: DtypeName, scheduler: SchedulerName, sizes: ModelSizes, description: str) -> Family:
    return Family(
        name=name, task=task, generation="1.0", default_width=720, default_height=480, fixed_resolution=True,
        min_side=480, max_side=720, size_multiple=16, frame_step=8, default_frames=49, max_frames=49, fps=8,
        dtype=dtype, scheduler=scheduler, sizes=sizes, repo_id=f"THUDM/{name}", description=description,
    )  # fmt: skip


def _v15(name: str, task: Task, description: str) -> Family:
    return Family(
        name=name, task=task, generation="1.5", default_width=1360, default_height=768, fixed_resolution=False,
        min_side=768, max_side=1360, size_multiple=16, frame_step=16, default_frames=81, max_frames=161, fps=16,
        dtype="bfloat16", scheduler="dpm", sizes=SIZES_15_5B, repo_id=f"THUDM/{name}", description=description,
    )  # fmt: skip


def _tiny(name: str, task: Task, generation: Generation, scheduler: SchedulerName, description: str) -> Family:
    v15 = generation == "1.5"
    return Family(
        name=name, task=task, generation=generation, default_width=96, default_height=64,
        fixed_resolution=not v15, min_side=32, max_side=160, size_multiple=16,
        frame_step=16 if v15 else 8, default_frames=17 if v15 else 9, max_frames=33 if v15 else 17,
        fps=16 if v15 else 8, dtype="float32", scheduler=scheduler, sizes=SIZES_TINY_15 if v15 else SIZES_TINY, builtin=True,
        description="built-in random weights, output is test noise; " + description,
    )  # fmt: skip


REAL_FAMILIES: tuple[Family, ...] = (
    _v10("CogVideoX-2b", "t2v", "float16", "ddim", SIZES_2B, "text/video-to-video, 720×480, 6 s at 8 fps"),
    _v10("CogVideoX-5b", "t2v", "bfloat16", "dpm", SIZES_5B, "text/video-to-video, 720×480, 6 s at 8 fps"),
    _v10("CogVideoX-5b-I2V", "i2v", "bfloat16", "dpm", SIZES_5B, "image-to-video, 720×480 only, 6 s at 8 fps"),
    _v15("CogVideoX1.5-5b", "t2v", "text/video-to-video up to 1360×768, 5-10 s at 16 fps"),
    _v15("CogVideoX1.5-5b-I2V", "i2v", "image-to-video up to 1360×768, 5-10 s at 16 fps"),
)

TINY_FAMILIES: tuple[Family, ...] = (
    _tiny("tiny-t2v", "t2v", "1.0", "ddim", "1.0-style text/video-to-video (like CogVideoX-2b)"),
    _tiny("tiny-i2v", "i2v", "1.0", "dpm", "1.0-style image-to-video, learned positions (like 5b-I2V)"),
    _tiny("tiny-1.5-t2v", "t2v", "1.5", "dpm", "1.5-style text/video-to-video, temporal patches"),
    _tiny("tiny-1.5-i2v", "i2v", "1.5", "dpm", "1.5-style image-to-video with ofs, temporal patches"),
)

FAMILIES: dict[str, Family] = {f.name: f for f in REAL_FAMILIES + TINY_FAMILIES}
_BY_REPO: dict[str, Family] = {f.repo_id.lower(): f for f in REAL_FAMILIES if f.repo_id}


@dataclass(frozen=True)
class ModelRef:
    """A family plus where its weights are: ``local_dir`` when on disk, else ``repo_id`` to pull."""

    family: Family
    source: str  # what the user named (catalog name, repo id or folder): shown and recorded
    local_dir: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    build_tiny: bool = False  # a built-in tiny model: built into ``local_dir`` on first use

    @property
    def cache_key(self) -> str:
        return str(self.local_dir) if self.local_dir else f"hf:{self.repo_id}"


def builtin_dir(family: Family, settings: Settings) -> Path:
    """Where a built-in tiny family's folder lives (it is built there on first use)."""
    return settings.builtin_models_dir / family.name


def family_for_repo(repo_id: str) -> Family | None:
    lowered = repo_id.lower()
    if lowered in _BY_REPO:
        return _BY_REPO[lowered]
    tail = lowered.rsplit("/", 1)[-1]  # mirrors and re-uploads keep the model's own name
    return next((f for f in REAL_FAMILIES if f.name.lower() == tail), None)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelUnavailableError(
            f"The model folder has no readable {path.parent.name}/{path.name}; it is not a diffusers CogVideoX model."
        ) from exc
    return data if isinstance(data, dict) else {}


def family_from_folder(folder: Path) -> Family:
    """Read a diffusers model folder's configs and say which family it belongs to."""
    marker = folder / BUILTIN_MARKER
    if marker.is_file():
        name = _read_json(marker).get("family")
        if name in FAMILIES:
            return FAMILIES[name]
    index = _read_json(folder / "model_index.json")
    if not str(index.get("_class_name", "")).startswith("CogVideoX"):
        raise ModelUnavailableError(
            f"The model folder holds a {index.get('_class_name', 'unknown')} model, not a CogVideoX pipeline."
        )
    config = _read_json(folder / "transformer" / "config.json")
    i2v = config.get("in_channels", 16) == 2 * (config.get("out_channels") or 16)
    if config.get("patch_size_t"):
        return FAMILIES["CogVideoX1.5-5b-I2V" if i2v else "CogVideoX1.5-5b"]
    if i2v:
        return FAMILIES["CogVideoX-5b-I2V"]
    return FAMILIES["CogVideoX-5b" if config.get("use_rotary_positional_embeddings") else "CogVideoX-2b"]


def resolve_model(model: str | None, settings: Settings, mode: Mode = "t2v") -> ModelRef:
    """See :func:`steadyframe.catalog.resolve_model` (the catalog decides; kept here for callers)."""
    from steadyframe.catalog import resolve_model as resolve_in_catalog

    return resolve_in_catalog(model, settings, mode)


def resolve_family(model: str | None, settings: Settings, mode: Mode = "t2v") -> Family:
    """The family of ``model`` (see ``resolve_model``)."""
    return resolve_model(model, settings, mode).family


def families_status(settings: Settings) -> list[dict[str, Any]]:
    """Every family with whether the catalog entry of that name is present (for /v1/models, CLI)."""
    from steadyframe.catalog import catalog, entry_state

    entries = catalog(settings)
    rows = []
    for family in REAL_FAMILIES + TINY_FAMILIES:
        entry = entries.get(family.name)
        state = entry_state(entry, settings) if entry is not None else None
        present = state is not None and state.state == "present"
        if family.builtin:
            note = "built" if (builtin_dir(family, settings) / BUILTIN_MARKER).is_file() else "built on first use"
        else:
            note = "downloaded" if present else f"steadyframe pull {family.name}"
        row = family.to_dict()
        row.update(present=present, location=str(state.folder) if present and state and state.folder else None, note=note)
        rows.append(row)
    return rows
