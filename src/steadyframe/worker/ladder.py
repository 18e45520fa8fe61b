"""The out-of-memory degrade ladder: which memory-saving level to try next.

What each level does, and where it applies, is decided once in ``steadyframe.engine.memory_levels``;
this module only walks that ladder.
"""

from __future__ import annotations

from steadyframe.engine.memory_levels import MEMORY_LEVELS, applicable_levels


def supported_levels(device: str, max_level: int) -> list[int]:
    """Levels worth trying on ``device`` ("cpu", "cuda", "cuda:1"...), lowest first, up to ``max_level``."""
    if max_level < 0:
        raise ValueError("max_level must be >= 0")
    return [level for level in applicable_levels(device) if level <= max_level]


def next_level(current: int, levels: list[int]) -> int | None:
    """The next level after ``current`` in ``levels``, or None when the ladder is exhausted."""
    higher = [level for level in levels if level > current]
    return higher[0] if higher else None


def describe_level(level: int) -> str:
    """Words for logs and the UI: "recovered from out-of-memory by <this>"."""
    return MEMORY_LEVELS.get(level, f"memory level {level}")
