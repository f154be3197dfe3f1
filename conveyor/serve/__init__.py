"""Serve a Plan over HTTP in the Open Inference Protocol (KServe v2): `conveyor serve`.
See docs/serving.md."""

from conveyor.serve.server import Server

__all__ = ["Server"]
