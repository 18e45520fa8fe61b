"""The family registry: rules per family, resolving names/repo ids/folders, local status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from steadyframe.errors import InvalidInputError, ModelUnavailableError
from steadyframe.families import (
    FAMILIES,
    REAL_FAMILIES,
    families_status,
    family_from_folder,
    resolve_family,
    resolve_model,
)
from steadyframe.presets import PRESETS, get_preset


def test_real_families_carry_their_published_settings():
    rules = {f.name: (f.task, f.fps, f.dtype, f.scheduler, f.default_frames, f.frame_step) for f in REAL_FAMILIES}
    assert rules == {
        "CogVideoX-2b": ("t2v", 8, "float16", "ddim", 49, 8),
        "CogVideoX-5b": ("t2v", 8, "bfloat16", "dpm", 49, 8),
        "CogVideoX-5b-I2V": ("i2v", 8, "bfloat16", "dpm", 49, 8),
        "CogVideoX1.5-5b": ("t2v", 16, "bfloat16", "dpm", 81, 16),
        "CogVideoX1.5-5b-I2V": ("i2v", 16, "bfloat16", "dpm", 81, 16),
    }


def test_cogvideox_1_0_only_allows_720x480():
    family = FAMILIES["CogVideoX-5b-I2V"]
    family.check_resolution(720, 480)
    with pytest.raises(InvalidInputError, match="only generates 720×480"):
        family.check_resolution(768, 512)


@pytest.mark.parametrize(
    ("width", "height", "fragment"),
    [(1360, 768, None), (768, 1360, None), (1024, 768, None), (640, 768, "at least 768"),
     (1376, 768, "at most 1360"), (1000, 776, "multiples of 16")],
)  # fmt: skip
def test_cogvideox_1_5_resolution_rules(width, height, fragment):
    family = FAMILIES["CogVideoX1.5-5b"]
    if fragment is None:
        family.check_resolution(width, height)
    else:
        with pytest.raises(InvalidInputError, match=fragment):
            family.check_resolution(width, height)


def test_frame_rules_follow_each_generation():
    v10, v15 = FAMILIES["CogVideoX-5b"], FAMILIES["CogVideoX1.5-5b"]
    for ok in (9, 17, 49):
        v10.check_frames(ok, "t2v")
    for bad in (48, 50, 57):
        with pytest.raises(InvalidInputError, match="8N\\+1"):
            v10.check_frames(bad, "t2v")
    v15.check_frames(81, "t2v")
    v15.check_frames(161, "i2v")
    with pytest.raises(InvalidInputError, match="16N\\+1"):
        v15.check_frames(57, "t2v")
    # video-to-video on 1.5 needs an even latent count: 16N input frames
    assert v15.default_frames_for("v2v") == 80
    v15.check_frames(80, "v2v")
    with pytest.raises(InvalidInputError, match="multiple of 16"):
        v15.check_frames(81, "v2v")


@pytest.mark.parametrize(("mode", "expected"), [("t2v", "tiny-t2v"), ("v2v", "tiny-t2v"), ("i2v", "tiny-i2v")])
def test_no_model_means_the_builtin_tiny_family_for_the_mode(settings, mode, expected):
    ref = resolve_model(None, settings, mode)
    assert ref.family.name == expected and ref.family.test_noise
    assert ref.local_dir == settings.builtin_models_dir / expected


def test_settings_model_is_the_default(settings):
    configured = settings.model_copy(update={"model": "tiny-1.5-t2v"})
    assert resolve_family(None, configured).name == "tiny-1.5-t2v"


def test_repo_ids_and_mirrors_resolve_to_their_family(settings):
    assert resolve_family("THUDM/CogVideoX-5b", settings).name == "CogVideoX-5b"
    assert resolve_family("zai-org/CogVideoX1.5-5b-I2V", settings, "i2v").name == "CogVideoX1.5-5b-I2V"
    with pytest.raises(ModelUnavailableError, match="not a supported CogVideoX family"):
        resolve_family("someone/stable-diffusion", settings)


def test_unknown_names_and_wrong_modes_get_clear_errors(settings):
    with pytest.raises(ModelUnavailableError, match="neither a catalog name"):
        resolve_family("no-such-model", settings)
    with pytest.raises(InvalidInputError, match="cannot do image-to-video"):
        resolve_family("CogVideoX-5b", settings, "i2v")
    with pytest.raises(InvalidInputError, match="cannot do video-to-video"):
        resolve_family("tiny-1.5-i2v", settings, "v2v")


def _fake_model_folder(root: Path, transformer: dict, class_name: str = "CogVideoXPipeline") -> Path:
    (root / "transformer").mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    (root / "transformer" / "config.json").write_text(json.dumps(transformer))
    return root


@pytest.mark.parametrize(
    ("transformer", "expected"),
    [
        ({"in_channels": 16, "out_channels": 16}, "CogVideoX-2b"),
        ({"in_channels": 16, "out_channels": 16, "use_rotary_positional_embeddings": True}, "CogVideoX-5b"),
        ({"in_channels": 32, "out_channels": 16, "use_learned_positional_embeddings": True}, "CogVideoX-5b-I2V"),
        ({"in_channels": 16, "out_channels": 16, "patch_size_t": 2}, "CogVideoX1.5-5b"),
        ({"in_channels": 32, "out_channels": 16, "patch_size_t": 2, "ofs_embed_dim": 512}, "CogVideoX1.5-5b-I2V"),
    ],
)
def test_local_folders_are_recognised_from_their_configs(tmp_path, transformer, expected):
    assert family_from_folder(_fake_model_folder(tmp_path / "m", transformer)).name == expected


def test_folder_of_another_pipeline_is_refused(tmp_path, settings):
    folder = _fake_model_folder(tmp_path / "sd", {"in_channels": 4}, class_name="StableDiffusionPipeline")
    with pytest.raises(ModelUnavailableError, match="StableDiffusionPipeline model, not a CogVideoX"):
        resolve_model(str(folder), settings)
    with pytest.raises(ModelUnavailableError, match="model_index.json"):
        resolve_model(str(tmp_path), settings)


def test_status_lists_every_family_and_what_is_present(settings):
    rows = {row["name"]: row for row in families_status(settings)}
    assert set(rows) == set(FAMILIES)
    assert rows["CogVideoX-5b"]["present"] is False and "steadyframe pull CogVideoX-5b" in rows["CogVideoX-5b"]["note"]
    # each repo has its own folder, <owner>--<name>; one copied in (no pull marker) is present
    folder = settings.resolved_models_dir / "THUDM--CogVideoX-5b"
    _fake_model_folder(folder, {"use_rotary_positional_embeddings": True})
    rows = {row["name"]: row for row in families_status(settings)}
    assert rows["CogVideoX-5b"]["present"] is True
    assert rows["CogVideoX-5b"]["location"] == str(folder)
    assert resolve_model("CogVideoX-5b", settings).local_dir == folder


def test_presets_are_complete_and_documented():
    assert set(PRESETS) == {"balanced", "fast", "quality", "high_motion", "subtle"}
    assert get_preset("fast").steps < get_preset("balanced").steps < get_preset("quality").steps
    assert get_preset("subtle").guidance < get_preset("balanced").guidance < get_preset("high_motion").guidance
    assert all(p.description for p in PRESETS.values())
    with pytest.raises(ValueError, match="choose one of balanced"):
        get_preset("turbo")


def test_torch_free_modules_do_not_import_torch():
    code = (
        "import sys; import steadyframe.families, steadyframe.media, steadyframe.video_io, "
        "steadyframe.presets, steadyframe.engine, steadyframe.engine.plan, steadyframe.engine.memory_levels, "
        "steadyframe.estimate, steadyframe.capacity, steadyframe.cli; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
