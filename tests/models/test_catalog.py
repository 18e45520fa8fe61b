"""The catalog: names only from API clients, folder states by marker, offline lookup (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steadyframe.catalog import CatalogConfigError, NotInCatalog, api_entry, catalog, entry_state, resolve_model
from steadyframe.errors import ModelUnavailableError
from steadyframe.model_files import (
    COMPLETE_MARKER,
    PULL_MARKER,
    CompletionRecord,
    inspect_repo,
    repo_folder,
    write_complete_marker,
)
from steadyframe.pull import wanted_files
from steadyframe.settings import Settings


def _diffusers_folder(folder: Path) -> dict[str, int]:
    files = {
        "model_index.json": json.dumps({"_class_name": "CogVideoXPipeline"}).encode(),
        "transformer/config.json": b"{}",
        "transformer/diffusion_pytorch_model.safetensors": b"x" * 1000,
    }
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return {name: len(data) for name, data in files.items()}


def test_catalog_offers_builtins_real_families_and_the_operators_models(tmp_path: Path) -> None:
    local = tmp_path / "my-model"
    local.mkdir()
    settings = Settings(
        data_dir=tmp_path,
        models={
            "mirror-2b": {"source": "someone/CogVideoX-2b@v1.0"},
            "mine": {"source": str(local), "family": "CogVideoX-5b"},
            "pinned": {"source": "org/custom-video", "family": "CogVideoX1.5-5b"},
        },
    )
    entries = catalog(settings)
    assert {"tiny-t2v", "tiny-1.5-i2v", "CogVideoX-2b", "CogVideoX1.5-5b-I2V", "mirror-2b", "mine", "pinned"} <= set(entries)
    assert entries["CogVideoX-5b"].repo_id == "THUDM/CogVideoX-5b"
    assert (entries["mirror-2b"].repo_id, entries["mirror-2b"].revision) == ("someone/CogVideoX-2b", "v1.0")
    assert entries["mirror-2b"].family.name == "CogVideoX-2b"  # from the repo's last part
    assert entries["mine"].folder == local and entries["mine"].source == "local folder"
    assert entries["tiny-t2v"].builtin and not entries["tiny-t2v"].pullable


@pytest.mark.parametrize(
    "models",
    [
        {"x": {"source": "org/unknown-model"}},  # no family and the name says none
        {"x": {"source": "org/m", "family": "Nope"}},
        {"bad/name": {"source": "org/CogVideoX-2b"}},
        {"x": {"family": "CogVideoX-2b"}},
    ],
)
def test_a_bad_catalog_setting_is_a_clear_startup_error(tmp_path: Path, models: dict) -> None:
    with pytest.raises(CatalogConfigError):
        catalog(Settings(data_dir=tmp_path, models=models))


@pytest.mark.parametrize(
    "model",
    [
        "a" * 300,
        "~nosuchuser",
        "~root",
        "🎬CogVideoX",
        "CogVideoX-2b\u202e",
        "../../etc",
        "../models/CogVideoX-2b",
        "/etc",
        "/nope",
        "THUDM/CogVideoX-5b",
        "someone/CogVideoX-5b",
        "",
    ],
)
def test_api_clients_may_name_catalog_models_only_and_learn_nothing_about_paths(tmp_path: Path, model: str) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(NotInCatalog) as caught:
        api_entry(model, settings)
    text = caught.value.message + (caught.value.advice or "")
    assert "CogVideoX-2b" in caught.value.advice and "tiny-t2v" in caught.value.advice
    assert str(tmp_path) not in text and "/etc" not in text and "nosuchuser" not in text
    # every bad string gets the very same answer: no folder-existence oracle
    with pytest.raises(NotInCatalog) as other:
        api_entry("/definitely/not/here", settings)
    assert other.value.message == caught.value.message


def test_the_cli_may_still_name_a_folder_or_a_repo_id(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    folder = tmp_path / "copied"
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "CogVideoXPipeline"}))
    (folder / "transformer").mkdir()
    (folder / "transformer" / "config.json").write_text("{}")
    assert resolve_model(str(folder), settings).local_dir == folder
    ref = resolve_model("zai-org/CogVideoX-5b@abc", settings)
    assert (ref.repo_id, ref.revision, ref.local_dir, ref.family.name) == ("zai-org/CogVideoX-5b", "abc", None, "CogVideoX-5b")
    with pytest.raises(ModelUnavailableError, match="neither a catalog name"):
        resolve_model("~nosuchuser", settings)  # no 500: a clear error


def test_present_only_with_a_marker_that_agrees_with_the_files(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    entry = catalog(settings)["CogVideoX-2b"]
    folder = repo_folder(settings.resolved_models_dir, "THUDM/CogVideoX-2b", None)
    assert folder.name == "THUDM--CogVideoX-2b"
    folder.mkdir(parents=True)
    sizes = _diffusers_folder(folder)
    (folder / PULL_MARKER).write_text("{}")  # a pull started and never finished
    assert entry_state(entry, settings).state == "absent"
    assert entry_state(entry, settings).partial_bytes > 0
    (folder / PULL_MARKER).unlink()
    write_complete_marker(folder, CompletionRecord("THUDM/CogVideoX-2b", "c" * 40, sizes))
    state = entry_state(entry, settings)
    assert state.state == "present" and state.folder == folder and state.size_bytes >= sum(sizes.values())
    (folder / "transformer" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 10)  # truncated
    broken = entry_state(entry, settings)
    assert broken.state == "broken" and "diffusion_pytorch_model.safetensors" in (broken.problem or "")
    assert str(tmp_path) not in (broken.problem or "")


def test_a_folder_copied_in_appears_and_the_hf_cache_is_found_by_repo_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    settings = Settings(data_dir=tmp_path / "data")
    # air-gapped: someone copies a downloaded model folder in; no marker, still usable
    copied = repo_folder(settings.resolved_models_dir, "THUDM/CogVideoX-5b", None)
    copied.mkdir(parents=True)
    _diffusers_folder(copied)
    assert entry_state(catalog(settings)["CogVideoX-5b"], settings).state == "present"
    assert not (copied / COMPLETE_MARKER).exists()  # the operator's copy is not written to
    # an interrupted `hf download --local-dir` copied in is not present
    (copied / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (copied / ".cache" / "huggingface" / "download" / "x.incomplete").write_bytes(b"x")
    assert entry_state(catalog(settings)["CogVideoX-5b"], settings).state == "absent"
    # the Hugging Face cache, offline, by repo id
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--THUDM--CogVideoX-2b" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    _diffusers_folder(snapshot)
    (cache / "models--THUDM--CogVideoX-2b" / "refs").mkdir()
    (cache / "models--THUDM--CogVideoX-2b" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    state = inspect_repo(settings.resolved_models_dir, "THUDM/CogVideoX-2b", None)
    assert state.state == "present" and state.folder == snapshot and state.where == "hf_cache"
    assert resolve_model("CogVideoX-2b", settings).local_dir == snapshot


def test_only_the_files_a_pipeline_loads_are_fetched() -> None:
    listing = [
        "model_index.json", "README.md", ".gitattributes", "demo.gif",
        "scheduler/scheduler_config.json", "tokenizer/spiece.model", "tokenizer/tokenizer_config.json",
        "text_encoder/config.json", "text_encoder/model-00001-of-00002.safetensors",
        "text_encoder/model-00002-of-00002.safetensors", "text_encoder/model.safetensors.index.json",
        "text_encoder/pytorch_model.bin", "transformer/diffusion_pytorch_model.safetensors",
        "transformer/diffusion_pytorch_model.bin", "vae/diffusion_pytorch_model.bin", "vae/config.json",
    ]  # fmt: skip
    wanted = set(wanted_files(listing))
    assert wanted == {
        "model_index.json", "scheduler/scheduler_config.json", "tokenizer/spiece.model",
        "tokenizer/tokenizer_config.json", "text_encoder/config.json",
        "text_encoder/model-00001-of-00002.safetensors", "text_encoder/model-00002-of-00002.safetensors",
        "text_encoder/model.safetensors.index.json", "transformer/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.bin", "vae/config.json",
    }  # fmt: skip
