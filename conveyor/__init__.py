"""conveyor: deploy a trained neural network across a cluster of FPGA boards."""

from conveyor.errors import (
    ConveyorError,
    HardwareSpecError,
    ModelError,
    PlanError,
    PrecisionError,
    RuntimeFault,
)
from conveyor.graph import Graph, Node, Tensor
from conveyor.frontends.onnx import load, from_model
from conveyor.frontends.torch import from_torch
from conveyor.plan import Plan
from conveyor.planner import plan  # the function; it shadows the `conveyor.plan` module attribute on purpose

__version__ = "0.1.0"

__all__ = [
    "Graph", "Node", "Tensor", "load", "from_model", "from_torch", "Plan", "plan", "Pipeline",
    "ConveyorError", "ModelError", "PrecisionError", "HardwareSpecError", "PlanError", "RuntimeFault",
]


def __getattr__(name):
    # The hardware room is loaded on first use, so that importing conveyor stays light.
    if name == "Cluster":
        from conveyor.hardware import Cluster

        return Cluster
    if name == "Pipeline":
        from conveyor.runtime import Pipeline

        return Pipeline
    if name == "simulate":
        from conveyor.sim import simulate

        return simulate
    if name == "compile":  # conveyor.compile(plan, graph, out_dir): HLS projects per board
        from conveyor.codegen import compile

        return compile
    if name == "zoo":
        import importlib

        return importlib.import_module("conveyor.zoo")
    raise AttributeError(f"module 'conveyor' has no attribute {name!r}")
