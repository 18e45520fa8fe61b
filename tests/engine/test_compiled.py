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
