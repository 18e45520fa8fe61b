"""Sizes read while a pull or retention removes folders under the walk: counted, never raised."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

from steadyframe.disk_usage import bytes_under, files_under
from steadyframe.model_files import PARTIAL_DIR, PULL_MARKER, inspect_folder, weights_bytes


def test_files_under_lists_nested_and_symlinked_files_and_filters_by_suffix(tmp_path: Path) -> None:
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "weights.safetensors").write_bytes(b"x" * 100)
    (tmp_path / "config.json").write_bytes(b"{}")
    (tmp_path / "linked.bin").symlink_to(tmp_path / "transformer" / "weights.safetensors")
    assert sorted(p.name for p in files_under(tmp_path)) == ["config.json", "linked.bin", "weights.safetensors"]
    assert bytes_under(tmp_path) == 202
    assert weights_bytes(tmp_path) == 200  # the symlink counts its target's bytes, as in the HF cache
    assert bytes_under(tmp_path / "nowhere") == 0


def test_a_folder_inspected_while_its_partial_files_are_removed_never_raises(tmp_path: Path) -> None:
    folder = tmp_path / "owner--repo"
    folder.mkdir()
    (folder / PULL_MARKER).write_text("{}")
    stop = threading.Event()

    def churn() -> None:  # what a finishing pull does: nested partial folders appear and go
        while not stop.is_set():
            nested = folder / PARTIAL_DIR / "transformer" / "deeper"
            nested.mkdir(parents=True, exist_ok=True)
            (nested / "weights.safetensors.part").write_bytes(b"x" * 10)
            shutil.rmtree(folder / PARTIAL_DIR, ignore_errors=True)

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 2.0
        reads = 0
        while time.monotonic() < deadline:
            state = inspect_folder(folder)
            assert state.state == "absent" and state.partial_bytes in (0, 10)
            reads += 1
    finally:
        stop.set()
        thread.join()
    assert reads > 100
