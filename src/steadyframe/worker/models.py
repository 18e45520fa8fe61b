"""The worker's model manager: load once, reuse, evict (keep-alive, LRU under a budget), unload all.

Satisfies ``contracts.ModelProvider``. Only the worker's main thread uses it, so no locks.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from steadyframe.logs import get_logger
from steadyframe.worker import memory

T = TypeVar("T")
_MB = 1024 * 1024
log = get_logger("worker.models")


@dataclass
class _Loaded:
    model: Any
    size_mb: float
    host_mb: float  # the part that counts in RSS (weights on the CPU)
    last_used: float
    in_use: int = 0


def model_size_mb(model: Any) -> tuple[float, float] | None:
    """(all, host-resident) MB of parameters and buffers of a torch module or diffusers pipeline.

    Returns None for objects that hold no torch modules (the caller then measures RSS).
    """
    modules: list[Any] = []
    components = getattr(model, "components", None)
    if isinstance(components, dict):
        modules = [c for c in components.values() if hasattr(c, "parameters")]
    elif hasattr(model, "parameters") and callable(model.parameters):
        modules = [model]
    if not modules:
        return None
    seen: set[int] = set()
    total = host = 0
    for module in modules:
        tensors = list(module.parameters())
        if hasattr(module, "buffers"):
            tensors += list(module.buffers())
        for tensor in tensors:
            if id(tensor) in seen:
                continue
            seen.add(id(tensor))
            size = tensor.numel() * tensor.element_size()
            total += size
            host += size if tensor.device.type == "cpu" else 0
    return total / _MB, host / _MB


class ModelManager:
    """Keeps loaded models between jobs while they are used and fit; forgets them otherwise.

    ``budget_mb`` caps the summed size of loaded models; ``reserve_mb`` of it is kept free as
    working memory for a job. ``keep_alive_s`` unloads a model idle that long (0 = at once).
    ``clock`` is injectable so tests can move time.
    """

    def __init__(
        self,
        *,
        budget_mb: float,
        reserve_mb: float = 0.0,
        keep_alive_s: float = 600.0,
        release_after_job: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if budget_mb <= 0 or reserve_mb < 0 or reserve_mb >= budget_mb:
            raise ValueError("need budget_mb > reserve_mb >= 0")
        self.budget_mb = budget_mb
        self.reserve_mb = reserve_mb
        self.keep_alive_s = keep_alive_s
        self.release_after_job = release_after_job
        self._clock = clock
        self._models: OrderedDict[str, _Loaded] = OrderedDict()  # least recently used first

    # --- ModelProvider ---------------------------------------------------------------------

    def acquire(self, key: str, loader: Callable[[], T], *, size_mb: float | None = None) -> AbstractContextManager[T]:
        """Yield the model under ``key``; load it (evicting idle models to fit) when absent.

        A loader that raises leaves nothing registered under ``key``.
        """

        @contextmanager
        def _held() -> Iterator[T]:
            entry = self._models.get(key)
            if entry is None:
                entry = self._load(key, loader, size_mb)
            self._models.move_to_end(key)
            entry.in_use += 1
            try:
                yield entry.model
            finally:
                entry.in_use -= 1
                entry.last_used = self._clock()

        return _held()

    def _load(self, key: str, loader: Callable[[], Any], size_mb: float | None) -> _Loaded:
        if size_mb is not None:
            self._evict_to_fit(size_mb, keep=None)
        rss_before, vram_before = memory.rss_mb(), memory.vram_mb()[0]
        model = loader()  # may raise: nothing is registered yet, so nothing is half-loaded
        sizes = model_size_mb(model)
        if sizes is None:
            host = max(0.0, memory.rss_mb() - rss_before)
            sizes = (host + max(0.0, memory.vram_mb()[0] - vram_before), host)
        total, host = sizes
        entry = _Loaded(
            model=model, size_mb=size_mb if size_mb is not None else total, host_mb=host, last_used=self._clock()
        )
        self._models[key] = entry
        log.info("loaded model %s (%.0f MB)", key, entry.size_mb)
        self._evict_to_fit(0.0, keep=key)
        return entry

    # --- eviction ---------------------------------------------------------------------------

    @property
    def usable_mb(self) -> float:
        return self.budget_mb - self.reserve_mb

    def loaded(self) -> list[str]:
        """Keys of loaded models, least recently used first."""
        return list(self._models)

    def loaded_mb(self) -> float:
        return sum(e.size_mb for e in list(self._models.values()))

    def host_mb(self) -> float:
        """MB of loaded weights living in host RAM (what loaded models add to RSS)."""
        return sum(e.host_mb for e in list(self._models.values()))  # a copy: the heartbeat thread reads this

    def _evict_to_fit(self, incoming_mb: float, *, keep: str | None) -> None:
        """Unload idle models, least recently used first, until ``incoming_mb`` more fits."""
        for key in list(self._models):
            if self.loaded_mb() + incoming_mb <= self.usable_mb:
                return
            entry = self._models[key]
            if key != keep and entry.in_use == 0:
                self.unload(key, reason="budget")
        if self.loaded_mb() + incoming_mb > self.usable_mb:
            log.warning("models over budget: %.0f MB loaded, %.0f MB usable", self.loaded_mb(), self.usable_mb)

    def unload(self, key: str, *, reason: str = "request") -> bool:
        """Forget the model under ``key`` (if not in use). -> whether it was unloaded."""
        entry = self._models.get(key)
        if entry is None or entry.in_use:
            return False
        del self._models[key]
        log.info("unloaded model %s (%s)", key, reason)
        return True

    def expire_idle(self) -> list[str]:
        """Unload models unused for ``keep_alive_s``; returns their keys. Cleans up if any went."""
        now = self._clock()
        expired = [
            k for k, e in self._models.items() if e.in_use == 0 and now - e.last_used >= self.keep_alive_s
        ]
        for key in expired:
            self.unload(key, reason="keep-alive expired")
        if expired:
            self.cleanup()
        return expired

    def unload_all(self) -> None:
        """Forget every model, in use or not: called after any failure, before cleanup."""
        if self._models:
            log.info("unloading all models: %s", ", ".join(self._models))
        self._models.clear()

    def after_job(self) -> None:
        """End-of-job policy: release everything on shared machines, else expire idle models."""
        if self.release_after_job:
            self.unload_all()
        else:
            self.expire_idle()

    def cleanup(self) -> None:
        """Idempotent: gc, CUDA caches, malloc_trim (see ``worker.memory.cleanup``)."""
        memory.cleanup()
