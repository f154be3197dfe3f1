"""Run a Plan: long-lived stages on Devices, joined by channels, many requests in flight.

    with conveyor.Pipeline(plan, graph, executor="local") as p:
        y = p.submit(x).result()

See docs/runtime.md.
"""

from conveyor.runtime.device import BACKENDS, Device, open_device
from conveyor.runtime.pipeline import EXECUTORS, Pipeline
from conveyor.runtime.stages import StageSpec, build_stages

__all__ = ["Pipeline", "EXECUTORS", "Device", "BACKENDS", "open_device", "StageSpec", "build_stages"]
