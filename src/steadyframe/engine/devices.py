"""Which torch device a job runs on (``settings.device``: auto, cpu, cuda, cuda:N)."""

from __future__ import annotations

import torch

from steadyframe.errors import InvalidInputError


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names are checked and returned."""
    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"The device {requested!r} was asked for but no CUDA GPU is visible.",
                advice="Set STEADYFRAME_DEVICE=auto or cpu.",
            )
        index = int(requested.split(":", 1)[1]) if ":" in requested else 0
        if index >= torch.cuda.device_count():
            raise InvalidInputError(f"The device {requested!r} does not exist on this machine.")
        return requested
    raise InvalidInputError(f"Unknown device {requested!r}.", advice="Use auto, cpu, cuda or cuda:N.")
