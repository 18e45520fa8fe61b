"""Regional compile: each block compiled once, kept warm across jobs, first run's compile timed apart.

Compiled with dynamo's "eager" backend here: the wiring (per-block compile, warm model, timing)
is the same as with inductor, whose C++ compile of even the tiny model takes minutes on a shared
2-core CPU (``bench/speed.py`` times the real inductor path).
"""

from __future__ import annotations

import numpy as np

from steadyframe.engine import compiled, run_job
from steadyframe.engine import stages as engine_stages
from steadyframe.spec import JobSpec


def test_compiled_blocks_stay_warm_and_the_first_job_reports_its_compile_time(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    captured: list[np.ndarray] = []
    original = engine_stages.to_uint8
    monkeypatch.setattr(engine_stages, "to_uint8", lambda frames: captured.append(frames.copy()) or original(frames))
    spec = JobSpec(prompt="a red fox running through snow", model="tiny-t2v", steps=3, seed=2)
    plain = run_job(spec, settings, tmp_path / "plain", hooks=hooks, models=keep_loaded)
    on = settings.model_copy(update={"compile_blocks": True})
    first = run_job(spec, on, tmp_path / "first", hooks=hooks, models=keep_loaded)
    pipe = keep_loaded.last()
    second = run_job(spec, on, tmp_path / "second", hooks=hooks, models=keep_loaded)
    assert keep_loaded.last() is pipe  # the compiled model stayed loaded
    blocks = pipe.transformer.transformer_blocks
    assert all(block._compiled_call_impl is not None for block in blocks)  # every block, not the model
    assert getattr(pipe.transformer, "_compiled_call_impl", None) is None
    assert plain.speed["compiled_blocks"] is False
    assert first.speed["compiled_blocks"] is True and second.speed["compiled_blocks"] is True
    assert "compile" in first.timings and first.timings["compile"] >= 0.0
    assert "compile" not in second.timings  # warm: same shape, nothing to compile
    assert "compile" not in plain.timings
    np.testing.assert_allclose(captured[1], captured[0], atol=1e-4)
    np.testing.assert_allclose(captured[2], captured[0], atol=1e-4)


def test_without_a_compiler_a_compiled_blocks_job_runs_uncompiled_bit_exact_and_says_why(
    settings, keep_loaded, hooks, tmp_path, monkeypatch
):
    from torch._inductor import config as inductor_config

    monkeypatch.setattr(compiled, "BACKEND", "inductor")
    monkeypatch.setattr(inductor_config.cpp, "cxx", (None, str(tmp_path / "no-such-g++")))  # as in an image without g++
    assert "C++ compiler" in (compiled.compiler_missing("cpu") or "")
    spec = JobSpec(prompt="a red fox running through snow", model="tiny-t2v", steps=2, seed=2)
    plain = run_job(spec, settings, tmp_path / "plain", hooks=hooks, models=keep_loaded)
    on = settings.model_copy(update={"compile_blocks": True})
    skipped = run_job(spec, on, tmp_path / "skipped", hooks=hooks, models=keep_loaded)
    assert skipped.speed["compiled_blocks"] is False and "C++ compiler" in skipped.speed["compile_skipped"]
    assert not any(b._compiled_call_impl for b in keep_loaded.last().transformer.transformer_blocks)
    assert (tmp_path / "skipped" / "video.mp4").read_bytes() == (tmp_path / "plain" / "video.mp4").read_bytes()
    assert "compile_skipped" not in plain.speed


def test_cuda_compiles_only_with_a_c_compiler_for_triton(monkeypatch, tmp_path):
    monkeypatch.setattr(compiled, "BACKEND", "inductor")
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no gcc, no clang
    assert "C compiler" in (compiled.compiler_missing("cuda:0") or "")
    monkeypatch.setenv("CC", "/usr/bin/cc")
    assert compiled.compiler_missing("cuda") is None
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    monkeypatch.delenv("CC")
    assert compiled.compiler_missing("cuda") is None  # dynamo's eager backend compiles nothing
