"""Suite-wide settings: offline, no analytics, one torch thread per test process (2-core CI)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def pytest_collection_modifyitems(items: list) -> None:  # type: ignore[type-arg]
    """xdist (``--dist loadgroup``) runs each test module as a whole on one worker, so a module's
    fixtures are built once and its tests never interleave with another module's; every Ray test
    (tests/ray) forms one group, so one local Ray cluster serves them all."""
    import pytest

    for item in items:
        path = str(item.path).replace(os.sep, "/")
        group = "ray-cluster" if "/tests/ray/" in path else item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group(group))
