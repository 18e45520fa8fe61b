"""Built-in tiny models: deterministic, safe to build concurrently, loaded like real models."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest

from steadyframe.engine.loading import load_pipeline, locate_weights
from steadyframe.engine.tiny_models import ensure_tiny_model
from steadyframe.families import BUILTIN_MARKER, FAMILIES, resolve_model


def _weights_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*.safetensors"))
    }


def test_two_builds_give_identical_weights(tmp_path):
    family = FAMILIES["tiny-1.5-i2v"]
    first = _weights_digest(ensure_tiny_model(family, tmp_path / "a"))
    second = _weights_digest(ensure_tiny_model(family, tmp_path / "b"))
    assert first == second and len(first) == 3  # text encoder, transformer, vae


def test_concurrent_builds_in_two_processes_leave_one_complete_model(tmp_path):
    target = tmp_path / "models" / "tiny-t2v"
    code = (
        "import sys; from pathlib import Path; from steadyframe.families import FAMILIES; "
        "from steadyframe.engine.tiny_models import ensure_tiny_model; "
        "ensure_tiny_model(FAMILIES['tiny-t2v'], Path(sys.argv[1]))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target)]) for _ in range(2)]
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert codes == [0, 0]
    assert (target / BUILTIN_MARKER).is_file()
    assert [p.name for p in target.parent.iterdir()] == ["tiny-t2v"]  # no staging folders left behind


@pytest.mark.parametrize(
    ("name", "mode", "pipeline", "scheduler"),
    [
        ("tiny-t2v", "t2v", "CogVideoXPipeline", "CogVideoXDDIMScheduler"),
        ("tiny-t2v", "v2v", "CogVideoXVideoToVideoPipeline", "CogVideoXDDIMScheduler"),
        ("tiny-i2v", "i2v", "CogVideoXImageToVideoPipeline", "CogVideoXDPMScheduler"),
        ("tiny-1.5-i2v", "i2v", "CogVideoXImageToVideoPipeline", "CogVideoXDPMScheduler"),
    ],
)
def test_tiny_models_load_through_from_pretrained_with_family_settings(settings, name, mode, pipeline, scheduler):
    ref = resolve_model(name, settings, mode)
    pipe = load_pipeline(ref, locate_weights(ref, settings), mode=mode, device="cpu", memory_level=0)
    assert type(pipe).__name__ == pipeline
    assert type(pipe.scheduler).__name__ == scheduler
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    config = pipe.transformer.config
    assert config.attention_head_dim % 16 == 0
    assert (config.patch_size_t is not None) == (ref.family.generation == "1.5")
    if name == "tiny-1.5-i2v":
        assert config.ofs_embed_dim == config.time_embed_dim
    assert (pipe.vae.config.sample_height, pipe.vae.config.sample_width) == (480, 720)


def test_memory_level_one_turns_on_vae_slicing_and_tiling(settings):
    ref = resolve_model("tiny-t2v", settings)
    pipe = load_pipeline(ref, locate_weights(ref, settings), mode="t2v", device="cpu", memory_level=1)
    assert pipe.vae.use_slicing and pipe.vae.use_tiling


def test_damaged_model_folder_fails_as_model_unavailable(settings, tmp_path):
    import shutil

    from steadyframe.errors import ModelUnavailableError

    ref = resolve_model("tiny-t2v", settings)
    damaged = tmp_path / "damaged"
    shutil.copytree(locate_weights(ref, settings), damaged)
    for weights in (damaged / "transformer").glob("*.safetensors"):
        weights.write_bytes(b"not safetensors")
    broken = resolve_model(str(damaged), settings)
    assert broken.family.name == "tiny-t2v"  # recognised by its marker file
    with pytest.raises(ModelUnavailableError, match="incomplete or damaged") as info:
        load_pipeline(broken, damaged, mode="t2v", device="cpu", memory_level=0)
    assert info.value.__context__ is None  # raised outside the handler: the failed load's frames are freed


def test_a_worker_never_downloads_an_absent_model(settings, monkeypatch):
    from steadyframe.errors import ModelUnavailableError

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # even online
    ref = resolve_model("THUDM/CogVideoX-5b", settings)
    with pytest.raises(ModelUnavailableError, match="THUDM/CogVideoX-5b is not downloaded") as info:
        locate_weights(ref, settings)
    assert "steadyframe pull THUDM/CogVideoX-5b" in (info.value.advice or "")
    assert not settings.resolved_models_dir.exists() or not any(settings.resolved_models_dir.iterdir())
