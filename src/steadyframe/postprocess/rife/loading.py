"""Read a RIFE weight file, tell its layout from its keys, and build the matching network.

Layouts (keys after removing the ``module.`` prefix the files carry):
- ``v3-hd``: ``block0.convblock0.0.0.weight`` present -> ``IFNetV3HD`` (midpoint only);
- ``v4``: ``encode.cnn0.weight`` and ``block0.lastconv.0.weight`` present -> ``IFNetV4``
  (Practical-RIFE 4.25/4.26; ``teacher.*``/``caltime.*`` training extras are dropped).
Widths are read from tensor shapes. Anything else is refused with ``ModelUnavailableError``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from steadyframe.errors import ModelUnavailableError
from steadyframe.postprocess.rife.ifnet_v3 import IFNetV3HD
from steadyframe.postprocess.rife.ifnet_v4 import FLOW_AND_MASK, IFNetV4

logger = logging.getLogger(__name__)

Layout = Literal["v3-hd", "v4"]
TRAINING_ONLY_PREFIXES = ("teacher.", "caltime.")
_WRAPPER_KEYS = ("state_dict", "model", "params", "flownet")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a RIFE file (``.pkl``/``.pth``/``.pt`` pickles loaded weights-only, or ``.safetensors``).

    Unwraps a single known wrapper key and strips the ``module.`` prefix of DataParallel saves.
    Raises ``ModelUnavailableError`` when the file is missing, unreadable or holds no tensors.
    """
    name = path.name
    if not path.is_file():
        raise ModelUnavailableError(f"The RIFE weight file '{name}' was not found.")
    problem: str | None = None
    raw: object = None
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            raw = load_file(str(path), device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safetensors errors all mean "unreadable file"
        logger.warning("could not read %s: %s: %s", path, type(exc).__name__, exc)
        problem = f"'{name}' could not be read as a RIFE weight file ({type(exc).__name__})."
    # raised outside the except block so the failed load is not kept alive by exception chaining
    if problem is not None:
        raise ModelUnavailableError(problem, advice="Download the weight file again or choose another one.")
    if isinstance(raw, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(raw.get(key), dict):
                raw = raw[key]
                break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise ModelUnavailableError(f"'{name}' does not hold a RIFE state dict (a mapping of names to tensors).")
    return {re.sub(r"^module\.", "", str(key)): value for key, value in raw.items()}


def detect_layout(state: dict[str, torch.Tensor]) -> Layout | None:
    """``"v3-hd"``, ``"v4"`` or None when the keys match neither layout."""
    if "block0.convblock0.0.0.weight" in state and "block0.conv1.0.weight" in state:
        return "v3-hd"
    if "encode.cnn0.weight" in state and "block0.lastconv.0.weight" in state:
        return "v4"
    return None


def _build_v4(state: dict[str, torch.Tensor]) -> IFNetV4:
    widths: list[int] = []
    while f"block{len(widths)}.conv0.1.0.weight" in state:
        widths.append(int(state[f"block{len(widths)}.conv0.1.0.weight"].shape[0]))
    depth = len({k.split(".")[2] for k in state if k.startswith("block0.convblock.") and k.endswith(".conv.weight")})
    out_channels = int(state["block0.lastconv.0.weight"].shape[1]) // 4
    return IFNetV4(
        widths=tuple(widths),
        encoder_hidden=int(state["encode.cnn0.weight"].shape[0]),
        encoder_out=int(state["encode.cnn3.weight"].shape[1]),
        feature_channels=out_channels - FLOW_AND_MASK,
        depth=depth,
    )


def build_network(state: dict[str, torch.Tensor], name: str) -> tuple[nn.Module, Layout]:
    """The network matching ``state``, with its weights loaded strictly; ``name`` is for messages."""
    layout = detect_layout(state)
    if layout is None:
        raise ModelUnavailableError(
            f"'{name}' is not a RIFE file this server knows: it supports the v3.x HD flownet.pkl "
            "(CogVideo's demo) and Practical-RIFE 4.25/4.26.",
        )
    problem: str | None = None
    network: nn.Module | None = None
    try:
        if layout == "v3-hd":
            network = IFNetV3HD(width=int(state["block0.conv0.1.0.weight"].shape[0]))
            network.load_state_dict(state, strict=True)
        else:
            needed = {k: v for k, v in state.items() if not k.startswith(TRAINING_ONLY_PREFIXES)}
            network = _build_v4(needed)
            network.load_state_dict(needed, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:  # missing/unexpected keys or shape mismatches
        logger.warning("RIFE file %s does not match the %s layout: %s", name, layout, exc)
        problem = f"'{name}' looks like a RIFE {layout} file but its tensors do not match that layout."
    if problem is not None:
        raise ModelUnavailableError(problem, advice="Download the weight file again or choose another one.")
    assert network is not None
    return network.eval().requires_grad_(False), layout
