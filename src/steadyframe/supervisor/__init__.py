"""Supervisor: the dispatcher the server embeds and the worker pools it drives (no torch here).

    dispatcher = Dispatcher(settings, store); dispatcher.start(); ...; dispatcher.stop()
"""

from steadyframe.supervisor.dispatcher import Dispatcher, DispatcherStats, InvalidTransition, WorkerInfo, WorkerState
from steadyframe.supervisor.pool import ExitCause, WorkerExited, WorkerPool, WorkerSlot

__all__ = [
    "Dispatcher",
    "DispatcherStats",
    "ExitCause",
    "InvalidTransition",
    "WorkerExited",
    "WorkerInfo",
    "WorkerPool",
    "WorkerSlot",
    "WorkerState",
]
