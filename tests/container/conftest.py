"""The container suite: the image `make test-container` builds, run under a memory limit.

Needs a Docker daemon and the image named by STEADYFRAME_TEST_IMAGE (make test-container sets
both up); without them every test here is skipped, so the normal `make test` does not run them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyframe.testing.container import Container

IMAGE = os.environ.get("STEADYFRAME_TEST_IMAGE", "")
MEMORY_LIMIT = "3g"  # a few GB: the server, one worker and a tiny model fit; a 4 GB ballast does not


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason="container tests run with `make test-container` (STEADYFRAME_TEST_IMAGE unset)")
    for item in items:
        if "/tests/container/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.container)
            if not IMAGE:
                item.add_marker(skip)


@pytest.fixture(scope="module")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    """One memory-limited container of the test image, healthy, its token in a secret file."""
    secrets_dir: Path = tmp_path_factory.mktemp("secrets")
    box = Container(IMAGE, memory_limit=MEMORY_LIMIT, token_file=secrets_dir / "steadyframe_api_token")
    try:
        box.start()
        box.wait_healthy()
        yield box
    finally:
        box.remove()
