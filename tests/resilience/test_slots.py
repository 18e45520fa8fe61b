"""One worker per visible GPU, pinned to it; one on CPU; settings.workers overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadyframe.settings import Settings
from steadyframe.supervisor import WorkerSlot
from steadyframe.supervisor.slots import default_slots, visible_gpu_count


def test_one_worker_per_visible_gpu_each_pinned(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,5")
    assert visible_gpu_count() == 2
    assert default_slots(Settings(data_dir=tmp_path)) == [WorkerSlot("w0", 2), WorkerSlot("w1", 5)]


def test_cpu_only_machines_get_one_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert default_slots(Settings(data_dir=tmp_path)) == [WorkerSlot("w0")]
    assert default_slots(Settings(data_dir=tmp_path, device="cpu", workers=2)) == [WorkerSlot("w0"), WorkerSlot("w1")]


def test_an_explicit_device_gets_one_unpinned_worker(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert default_slots(Settings(data_dir=tmp_path, device="cuda:1")) == [WorkerSlot("w0")]
