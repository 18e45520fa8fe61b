"""A stand-alone supervisor for tests that kill the whole server: python supervisor_process.py DATA_DIR.

Runs a Dispatcher (synthetic runner) on the job store in DATA_DIR until SIGTERM; prints
"ready" once a worker is up.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from steadyframe.jobs.sqlite import SqliteJobStore
from steadyframe.settings import Settings
from steadyframe.supervisor import Dispatcher, WorkerSlot
from steadyframe.supervisor.local import LocalProcessPool


def main(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, device="cpu", fault_injection=True, stall_timeout_s=30.0)
    store = SqliteJobStore(settings.jobs_db)
    pool = LocalProcessPool(settings, [WorkerSlot("w0")], runner="steadyframe.testing.synthetic_runner:run_job")
    dispatcher = Dispatcher(settings, store, pool=pool)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dispatcher.start()
    while not dispatcher.is_ready():
        time.sleep(0.05)
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass
    dispatcher.stop(timeout=10)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
