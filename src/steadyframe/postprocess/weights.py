"""Where the upscaling and RIFE weight files come from. No torch: the server may import this.

A job names a weight file (``upscale_model`` / ``rife_model``), else the settings do
(``STEADYFRAME_UPSCALE_MODEL`` / ``STEADYFRAME_RIFE_MODEL``), else the first of these default
file names found in the models folder (``STEADYFRAME_MODELS_DIR``, default ``DATA_DIR/models``):

Upscaling (any single-image super-resolution file spandrel detects, ``.pth`` or ``.safetensors``):
    RealESRGAN_x4plus.pth, RealESRGAN_x4plus.safetensors, RealESRGAN_x4.pth,
    realesr-general-x4v3.pth, RealESRGAN_x2plus.pth, RealESRGAN_x4plus_anime_6B.pth,
    realesr-animevideov3.pth, model_real_esran/RealESRGAN_x4.pth (CogVideo demo's folder)

RIFE (the v3.x HD ``flownet.pkl`` CogVideo's demo uses, or Practical-RIFE 4.25 / 4.26):
    flownet.pkl, rife/flownet.pkl, train_log/flownet.pkl (Practical-RIFE's zip),
    model_rife/flownet.pkl (CogVideo demo's folder)

A bare file name is looked up in the models folder; a relative path with folders is taken
relative to the models folder; an absolute path is used as it is. Error messages name only the
file name, never the full path (user-facing text must not leak the server's layout).
"""

from __future__ import annotations

from pathlib import Path

from steadyframe.errors import ModelUnavailableError
from steadyframe.settings import Settings

_REAL_ESRGAN_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases"
_PRACTICAL_RIFE = "https://github.com/hzwer/Practical-RIFE (README, model list: 4.25 or 4.26)"

UPSCALE_SOURCES: dict[str, str] = {
    "RealESRGAN_x4plus.pth": f"{_REAL_ESRGAN_RELEASES}/download/v0.1.0/RealESRGAN_x4plus.pth",
    "RealESRGAN_x4plus.safetensors": "a safetensors conversion of RealESRGAN_x4plus.pth",
    "RealESRGAN_x4.pth": "https://huggingface.co/ai-forever/Real-ESRGAN (file RealESRGAN_x4.pth)",
    "realesr-general-x4v3.pth": f"{_REAL_ESRGAN_RELEASES}/download/v0.2.5.0/realesr-general-x4v3.pth",
    "RealESRGAN_x2plus.pth": f"{_REAL_ESRGAN_RELEASES}/download/v0.2.1/RealESRGAN_x2plus.pth",
    "RealESRGAN_x4plus_anime_6B.pth": f"{_REAL_ESRGAN_RELEASES}/download/v0.2.2.4/RealESRGAN_x4plus_anime_6B.pth",
    "realesr-animevideov3.pth": f"{_REAL_ESRGAN_RELEASES}/download/v0.2.5.0/realesr-animevideov3.pth",
}
UPSCALE_DEFAULT_NAMES: tuple[str, ...] = (*UPSCALE_SOURCES, "model_real_esran/RealESRGAN_x4.pth")

RIFE_SOURCE_V3 = "https://huggingface.co/AlexWortega/RIFE (file flownet.pkl, the one CogVideo's demo uses)"
RIFE_DEFAULT_NAMES: tuple[str, ...] = (
    "flownet.pkl",
    "rife/flownet.pkl",
    "train_log/flownet.pkl",
    "model_rife/flownet.pkl",
)


def _candidate(value: str | Path, models_dir: Path) -> Path:
    """The path a job/settings value points at: absolute as is, relative under the models folder."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else models_dir / path


def _resolve(
    what: str,
    spec_value: str | None,
    configured: Path | None,
    models_dir: Path,
    defaults: tuple[str, ...],
    source_for: dict[str, str],
    generic_source: str,
    setting_name: str,
) -> Path:
    for value in (spec_value, configured):
        if value is None or str(value).strip() == "":
            continue
        path = _candidate(value, models_dir)
        if path.is_file():
            return path
        name = path.name
        source = source_for.get(name, generic_source)
        raise ModelUnavailableError(
            f"The {what} weight file '{name}' was not found. Get it from {source}.",
            advice=f"Put '{name}' in the models folder, or point {setting_name} (or the job's field) at it.",
        )
    for name in defaults:
        path = models_dir / name
        if path.is_file():
            return path
    first = defaults[0]
    raise ModelUnavailableError(
        f"No {what} weight file was found: looked for '{first}' and {len(defaults) - 1} other default names "
        f"in the models folder. Get '{first}' from {source_for.get(first, generic_source)}.",
        advice=f"Put the file in the models folder, or set {setting_name}.",
    )


def resolve_upscale_weights(spec_value: str | None, settings: Settings) -> Path:
    """The upscaling weight file to use: job value, else settings, else a default name.

    Raises ``ModelUnavailableError`` naming the missing file and where to download it.
    """
    return _resolve(
        "upscaling",
        spec_value,
        settings.upscale_model,
        settings.resolved_models_dir,
        UPSCALE_DEFAULT_NAMES,
        UPSCALE_SOURCES,
        _REAL_ESRGAN_RELEASES,
        "STEADYFRAME_UPSCALE_MODEL",
    )


def resolve_rife_weights(spec_value: str | None, settings: Settings) -> Path:
    """The RIFE weight file to use: job value, else settings, else a default name.

    Raises ``ModelUnavailableError`` naming the missing file and where to download it.
    """
    sources = {name: RIFE_SOURCE_V3 for name in RIFE_DEFAULT_NAMES}
    return _resolve(
        "RIFE",
        spec_value,
        settings.rife_model,
        settings.resolved_models_dir,
        RIFE_DEFAULT_NAMES,
        sources,
        f"{RIFE_SOURCE_V3} or {_PRACTICAL_RIFE}",
        "STEADYFRAME_RIFE_MODEL",
    )
