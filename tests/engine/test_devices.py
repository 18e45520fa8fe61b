"""One device rule for worker, engine and post-processing."""

from __future__ import annotations

import pytest
import torch

from steadyframe.engine.devices import resolve_device
from steadyframe.errors import InvalidInputError
from steadyframe.postprocess import runtime
from steadyframe.settings import Settings
from steadyframe.worker import process


@pytest.mark.parametrize("name", ["cpu", "CPU", " cpu ", "auto", "Auto"])
def test_names_are_case_and_space_insensitive(name):
    assert resolve_device(name) == ("cuda" if name.strip().lower() == "auto" and torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "cuda:-1", "", "gpu"])
def test_unknown_names_are_invalid_input_with_advice(name):
    with pytest.raises(InvalidInputError) as caught:
        resolve_device(name)
    assert "auto, cpu, cuda" in caught.value.advice


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_missing_gpu_is_invalid_input_everywhere(tmp_path):
    with pytest.raises(InvalidInputError, match="no CUDA GPU"):
        resolve_device("CUDA:0")
    with pytest.raises(InvalidInputError, match="no CUDA GPU"):
        runtime.resolve_device("cuda")


def test_post_processing_and_worker_follow_the_same_rule(tmp_path):
    assert runtime.resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(InvalidInputError):
        runtime.resolve_device("mps:0")  # torch would parse it; the product rule does not
    assert process.resolve_device(Settings(data_dir=tmp_path, device="Cpu")) == "cpu"
    # an unusable device leaves the worker up (sized as for the CPU); its jobs fail with the message
    assert process.resolve_device(Settings(data_dir=tmp_path, device="tpu")) == "cpu"
