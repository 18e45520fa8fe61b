"""Pulls through the real huggingface_hub client against the loopback Hub: progress, cuts, resume,
disk check, gated repos, only the needed files."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from .conftest import DECOYS, GATED_REPO, REPO, TOKEN, wanted_bytes

from steadyframe.catalog import catalog, entry_state
from steadyframe.model_files import COMPLETE_MARKER, repo_folder
from steadyframe.pull import NotEnoughDisk, PullFailed, pull_repo
from steadyframe.settings import Settings
from steadyframe.testing.local_hub import LocalHub


def _pull(settings: Settings, repo: str = REPO, **kwargs) -> Path:
    return pull_repo(
        repo, None, models_dir=settings.resolved_models_dir, name="hub-tiny", token=kwargs.pop("token", None),
        reserve_bytes=kwargs.pop("reserve_bytes", 0), **kwargs,
    )  # fmt: skip


def test_a_pull_reports_growing_bytes_and_ends_present_with_only_the_needed_files(
    online: LocalHub, settings: Settings, tiny_repo: Path
) -> None:
    online.bytes_per_second = 600_000  # about two seconds for the tiny model
    seen: list[tuple[int, int]] = []
    folder = _pull(settings, on_progress=lambda done, total: seen.append((done, total)))
    total = wanted_bytes(tiny_repo)
    assert folder == settings.resolved_models_dir / "steadyframe--tiny-t2v"
    assert seen[-1] == (total, total) and len({d for d, _ in seen}) > 5  # many steps, not one jump
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert entry_state(catalog(settings)["hub-tiny"], settings).state == "present"
    assert (folder / COMPLETE_MARKER).is_file()
    for decoy in DECOYS:
        assert not (folder / decoy).exists()
        assert (REPO, decoy) not in online.stats.sent
    assert online.stats.bytes_for(REPO) == total  # every byte once


def test_a_cut_connection_leaves_it_resumable_never_present_and_the_resume_sends_no_byte_twice(
    online: LocalHub, settings: Settings, tiny_repo: Path
) -> None:
    total = wanted_bytes(tiny_repo)
    online.cut_after(total // 2)  # the network goes away half-way through, inside a file
    with pytest.raises(PullFailed) as failed:
        _pull(settings)
    assert "pull again" in (failed.value.advice or "").lower()
    state = entry_state(catalog(settings)["hub-tiny"], settings)
    assert state.state == "absent" and state.partial_bytes == total // 2 and state.total_bytes == total
    assert not (repo_folder(settings.resolved_models_dir, REPO, None) / COMPLETE_MARKER).exists()
    online.restore()
    _pull(settings)
    assert entry_state(catalog(settings)["hub-tiny"], settings).state == "present"
    assert online.stats.bytes_for(REPO) == total  # the second pull fetched only what the first did not
    ranged = [r for r in online.stats.requests if r[0] == "GET" and r[2]]
    assert ranged and ranged[0][2] != "bytes=0-"


def test_too_little_disk_is_a_clear_error_before_any_byte(
    online: LocalHub, settings: Settings, tiny_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotEnoughDisk) as refused:
        _pull(settings, reserve_bytes=10**15)  # keep a petabyte free: no disk is that big
    assert "Not enough disk space to pull hub-tiny" in refused.value.message
    assert str(settings.data_dir) not in refused.value.message + (refused.value.advice or "")
    assert online.stats.bytes_for(REPO) == 0
    assert not [r for r in online.stats.requests if "/resolve/" in r[1]]


def test_a_gated_repo_needs_the_token_setting(online: LocalHub, settings: Settings) -> None:
    with pytest.raises(PullFailed) as refused:
        _pull(settings, GATED_REPO)
    assert "STEADYFRAME_HF_TOKEN" in (refused.value.advice or "")
    assert _pull(settings, GATED_REPO, token=TOKEN).name == "steadyframe--gated-tiny"


def test_one_pull_per_model_at_a_time(online: LocalHub, settings: Settings) -> None:
    from steadyframe.pull import PullBusy

    online.bytes_per_second = 300_000
    started = threading.Event()
    first = threading.Thread(target=_pull, args=(settings,), kwargs={"on_progress": lambda d, t: started.set()})
    first.start()
    assert started.wait(30)
    with pytest.raises(PullBusy):
        _pull(settings)
    first.join(60)
    assert entry_state(catalog(settings)["hub-tiny"], settings).state == "present"
