"""Finding weight files: job value, settings, default names; clear errors for missing files."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadyframe.errors import ErrorKind, ModelUnavailableError
from steadyframe.postprocess.weights import (
    RIFE_DEFAULT_NAMES,
    UPSCALE_DEFAULT_NAMES,
    resolve_rife_weights,
    resolve_upscale_weights,
)
from steadyframe.settings import Settings


def settings_for(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path / "data", models_dir=tmp_path / "models", **values)


def test_default_names_are_found_in_the_models_folder(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    models = settings.resolved_models_dir
    (models / "model_rife").mkdir(parents=True)
    (models / "model_rife" / "flownet.pkl").write_bytes(b"x")
    (models / "RealESRGAN_x2plus.pth").write_bytes(b"x")
    assert resolve_rife_weights(None, settings) == models / "model_rife" / "flownet.pkl"
    assert resolve_upscale_weights(None, settings) == models / "RealESRGAN_x2plus.pth"
    # an earlier default name wins
    (models / "RealESRGAN_x4plus.pth").write_bytes(b"x")
    assert resolve_upscale_weights(None, settings) == models / "RealESRGAN_x4plus.pth"


def test_job_value_beats_settings_and_bare_names_live_in_the_models_folder(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.pth"
    elsewhere.write_bytes(b"x")
    settings = settings_for(tmp_path, upscale_model=elsewhere)
    settings.resolved_models_dir.mkdir(parents=True)
    (settings.resolved_models_dir / "mine.pth").write_bytes(b"x")
    assert resolve_upscale_weights(None, settings) == elsewhere
    assert resolve_upscale_weights("mine.pth", settings) == settings.resolved_models_dir / "mine.pth"
    assert resolve_upscale_weights(str(elsewhere), settings) == elsewhere


def test_missing_job_file_names_the_file_and_where_to_get_it_but_not_the_path(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_upscale_weights("RealESRGAN_x4plus.pth", settings)
    error = caught.value
    assert error.kind == ErrorKind.MODEL_UNAVAILABLE
    assert "'RealESRGAN_x4plus.pth'" in error.message
    assert "github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth" in error.message
    assert str(tmp_path) not in error.message and str(tmp_path) not in (error.advice or "")


def test_missing_settings_file_is_reported_not_skipped(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, rife_model=tmp_path / "gone" / "flownet.pkl")
    with pytest.raises(ModelUnavailableError, match="'flownet.pkl'.*AlexWortega/RIFE"):
        resolve_rife_weights(None, settings)


def test_nothing_configured_and_empty_folder_says_what_to_download(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(ModelUnavailableError) as caught:
        resolve_rife_weights(None, settings)
    assert f"'{RIFE_DEFAULT_NAMES[0]}'" in caught.value.message
    assert "Practical-RIFE" not in caught.value.message or "hzwer" in caught.value.message
    with pytest.raises(ModelUnavailableError, match=UPSCALE_DEFAULT_NAMES[0]):
        resolve_upscale_weights(None, settings)
