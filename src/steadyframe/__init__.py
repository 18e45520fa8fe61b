"""steadyframe: a self-hosted CogVideoX video-generation server that never dies silently."""

__version__ = "0.1.0"
