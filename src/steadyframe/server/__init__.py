"""The server process: REST API, Gradio UI, metrics and probes on one FastAPI app (no torch here)."""
