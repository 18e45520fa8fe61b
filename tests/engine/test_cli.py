"""The steadyframe CLI: generate writes three files, errors are one line with an exit code."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from steadyframe.cli import app
from steadyframe.video_io import read_video_facts


@pytest.fixture
def cli(settings, monkeypatch):
    monkeypatch.setenv("STEADYFRAME_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("STEADYFRAME_DEVICE", "cpu")
    monkeypatch.delenv("STEADYFRAME_MODEL", raising=False)
    return CliRunner()


def test_generate_writes_video_preview_and_sidecar(cli, tmp_path):
    out = tmp_path / "clips" / "fox.mp4"
    result = cli.invoke(app, ["generate", "a fox in the snow", "--steps", "2", "--seed", "9", "-q", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"video:   {out}" in result.output and "test noise" in result.output
    assert read_video_facts(out)["frames"] == 9
    assert out.with_suffix(".gif").read_bytes()[:6] == b"GIF89a"
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["settings"]["seed"] == 9 and sidecar["settings"]["prompt"] == "a fox in the snow"
    assert sorted(p.name for p in out.parent.iterdir()) == ["fox.gif", "fox.json", "fox.mp4"]


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["generate", "   "], 2, "Error: invalid prompt: the prompt is empty"),
        (["generate", "a cat", "--frames", "10"], 2, "Error: tiny-t2v cannot make 10 frames"),
        (["generate", "a cat", "--preset", "turbo"], 2, "Error: invalid preset"),
        (["generate", "a cat", "--image", "/no/such.png"], 2, "Error: The input image was not found."),
        (["generate", "a cat", "--model", "nonsense-model"], 1, "Error: The model 'nonsense-model' is neither"),
    ],
)
def test_errors_print_one_line_and_exit_non_zero(cli, tmp_path, args, code, fragment):
    result = cli.invoke(app, args + ["-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == code
    lines = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(lines) == 1 and lines[0].startswith(fragment), result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "x.mp4").exists()


def test_debug_flag_adds_the_traceback(cli, tmp_path):
    result = cli.invoke(app, ["generate", "a cat", "--frames", "10", "--debug", "-o", str(tmp_path / "x.mp4")])
    assert result.exit_code == 2
    assert "Traceback" in result.output and "InvalidInputError" in result.output


def test_models_lists_every_family(cli):
    result = cli.invoke(app, ["models"])
    assert result.exit_code == 0
    for name in ("CogVideoX-2b", "CogVideoX1.5-5b-I2V", "tiny-t2v", "tiny-1.5-i2v"):
        assert name in result.output
