"""The graph IR: Graph, Node, Tensor; passes; sub-graph cutting; counters."""

from conveyor.graph.tensor import Node, Tensor
from conveyor.graph.ir import Graph
from conveyor.graph.counters import LayerCounters, layer_counters

__all__ = ["Graph", "Node", "Tensor", "LayerCounters", "layer_counters"]
