"""The model manager: reuse, keep-alive, LRU under a budget, failed loads, unload_all, cleanup."""

from __future__ import annotations

import pytest
import torch

from steadyframe.worker.models import ModelManager, model_size_mb


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _module(mb: float) -> torch.nn.Module:
    """A module whose parameters take ``mb`` MB (float32)."""
    return torch.nn.Linear(int(mb * 2**20 / 4 / 256), 256, bias=False)


def test_a_loaded_model_is_reused_not_reloaded() -> None:
    manager = ModelManager(budget_mb=100)
    loads = []

    def loader() -> torch.nn.Module:
        loads.append(1)
        return _module(1)

    with manager.acquire("a", loader) as first:
        pass
    with manager.acquire("a", loader) as second:
        pass
    assert first is second and len(loads) == 1
    assert manager.loaded() == ["a"] and manager.loaded_mb() == pytest.approx(1.0, rel=0.01)


def test_least_recently_used_idle_models_are_evicted_to_fit_the_budget() -> None:
    manager = ModelManager(budget_mb=10, reserve_mb=2)  # 8 MB usable
    for key in ("a", "b", "c"):
        with manager.acquire(key, lambda: _module(3)):
            pass
    # 9 MB would not fit: the least recently used ("a") went when "c" arrived
    assert manager.loaded() == ["b", "c"]
    with manager.acquire("b", lambda: _module(3)):
        pass  # "b" becomes most recent
    with manager.acquire("d", lambda: _module(3), size_mb=3):
        pass
    assert manager.loaded() == ["b", "d"]


def test_a_model_in_use_is_never_evicted() -> None:
    manager = ModelManager(budget_mb=5, reserve_mb=1)
    with manager.acquire("big", lambda: _module(3)):
        with manager.acquire("other", lambda: _module(3)):
            assert set(manager.loaded()) == {"big", "other"}  # over budget, but both in use
    assert "big" in manager.loaded() or "other" in manager.loaded()


def test_keep_alive_unloads_idle_models() -> None:
    clock = Clock()
    manager = ModelManager(budget_mb=100, keep_alive_s=60, clock=clock)
    with manager.acquire("a", lambda: _module(1)):
        clock.now = 100  # in use: never expires
        assert manager.expire_idle() == []
    clock.now = 130
    assert manager.expire_idle() == []
    clock.now = 161
    assert manager.expire_idle() == ["a"] and manager.loaded() == []


def test_release_after_job_mode_keeps_nothing() -> None:
    manager = ModelManager(budget_mb=100, release_after_job=True)
    with manager.acquire("a", lambda: _module(1)):
        pass
    manager.after_job()
    assert manager.loaded() == []


def test_a_failed_load_leaves_nothing_half_loaded() -> None:
    manager = ModelManager(budget_mb=100)

    def broken() -> torch.nn.Module:
        raise OSError("checkpoint truncated")

    with pytest.raises(OSError):
        with manager.acquire("a", broken):
            pass
    assert manager.loaded() == [] and manager.loaded_mb() == 0
    with manager.acquire("a", lambda: _module(1)) as model:  # the next try loads cleanly
        assert isinstance(model, torch.nn.Linear)


def test_unload_all_and_cleanup_are_safe_to_repeat() -> None:
    manager = ModelManager(budget_mb=100)
    with manager.acquire("a", lambda: _module(1)):
        pass
    manager.unload_all()
    manager.unload_all()
    manager.cleanup()
    manager.cleanup()
    assert manager.loaded() == []


def test_pipeline_like_objects_are_sized_by_their_components() -> None:
    class Pipe:
        def __init__(self) -> None:
            shared = _module(1)
            self.components = {"a": shared, "b": shared, "c": _module(2), "tokenizer": object()}

    total, host = model_size_mb(Pipe())  # type: ignore[misc]
    assert total == pytest.approx(3.0, rel=0.01) and host == total
    assert model_size_mb(object()) is None


def test_bad_budgets_are_refused() -> None:
    with pytest.raises(ValueError):
        ModelManager(budget_mb=10, reserve_mb=10)
