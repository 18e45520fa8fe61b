"""Regional compilation: ``torch.compile`` each CogVideoX transformer block on its own.

diffusers' ``compile_repeated_blocks`` raises for CogVideoX (no ``_repeated_blocks``), so the
blocks are compiled one by one with ``nn.Module.compile``. Every block has the same code, so
dynamo compiles one graph and reuses it; a new resolution or frame count recompiles a block
graph, never the whole model. Compilation happens on the first forward pass, which is why the
engine times that first step apart (``timings["compile"]``).

Inductor needs a compiler on the machine: a C++ compiler for CPU kernels, a C compiler for
Triton's launcher on CUDA. Our container image has neither, and without one every compiled job
would fail at its first step, so the engine asks :func:`compiler_missing` first and runs such
jobs uncompiled, saying why in the log and the result.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

COMPILED_FLAG = "_steadyframe_compiled_blocks"
BACKEND = "inductor"  # tests swap in "eager" to check the wiring without a C++ compile (minutes on a CPU)


def compile_blocks(transformer: Any) -> int:
    """Compile every block of ``transformer`` in place (once) -> how many blocks are compiled."""
    blocks = list(transformer.transformer_blocks)
    if not getattr(transformer, COMPILED_FLAG, False):
        for block in blocks:
            block.compile(backend=BACKEND)
        setattr(transformer, COMPILED_FLAG, True)
    return len(blocks)


def compiler_missing(device: str) -> str | None:
    """Why ``BACKEND`` cannot compile for ``device`` on this machine (no compiler), or None."""
    if BACKEND != "inductor":
        return None
    kind = device.split(":", 1)[0].strip().lower()
    if kind == "cuda":  # Triton builds its kernel launcher with CC, else gcc or clang
        if os.environ.get("CC") or shutil.which("gcc") or shutil.which("clang"):
            return None
        return "Triton needs a C compiler to compile for CUDA (CC, gcc or clang) and none is installed"
    if kind != "cpu":
        return None
    from torch._inductor.cpp_builder import get_cpp_compiler  # inductor's own search (CXX, g++, clang++)

    try:
        get_cpp_compiler()
    except Exception as exc:  # InvalidCxxCompiler: the message names what it looked for
        return f"inductor needs a C++ compiler for CPU kernels: {exc}"
    return None


def is_compiled(transformer: Any) -> bool:
    return bool(getattr(transformer, COMPILED_FLAG, False))
