"""Which torch device a job runs on (``settings.device``: auto, cpu, cuda, cuda:N, mps).

The one rule for the whole product: the worker, the engine and post-processing all call
``resolve_device``; names are case-insensitive and surrounding spaces are ignored.
"""

from __future__ import annotations

import torch

from steadyframe.errors import InvalidInputError

_ADVICE = "Set STEADYFRAME_DEVICE to auto, cpu, cuda, cuda:N or mps."


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(requested: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; other names are checked and returned.

    Raises InvalidInputError for a name that is not a device or a device this machine lacks.
    """
    name = str(requested).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "mps":
        if not _mps_available():
            raise InvalidInputError("The device 'mps' was asked for but no Apple GPU is available.", advice=_ADVICE)
        return "mps"
    if name == "cuda" or name.startswith("cuda:"):
        index_text = name.partition(":")[2]
        if index_text and not index_text.isdigit():
            raise InvalidInputError(f"Unknown device {requested!r}.", advice=_ADVICE)
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"The device {requested!r} was asked for but no CUDA GPU is visible.",
                advice="Set STEADYFRAME_DEVICE=auto or cpu.",
            )
        if int(index_text or 0) >= torch.cuda.device_count():
            raise InvalidInputError(f"The device {requested!r} does not exist on this machine.", advice=_ADVICE)
        return name
    raise InvalidInputError(f"Unknown device {requested!r}.", advice=_ADVICE)
