"""The worker process and what runs inside it (the only part of steadyframe that imports torch).

Import ``steadyframe.worker.messages`` freely (no torch); the rest is for the worker process.
"""
