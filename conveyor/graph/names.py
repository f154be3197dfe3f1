"""Short layer names, as users see them in hls4ml configs and reports (`fc1`, not `/fc1/Gemm`).

Exporters name ONNX nodes after the module path and the op: torch's TorchScript exporter
writes `/fc1/Gemm`, `/features/features.0/Conv`, `/Relu_1` for a functional relu. A layer
name is the innermost module path with dots as underscores (`fc1`, `features_0`, as hls4ml
and torch.fx spell modules), else the op part in lower case (`relu_1`); a node name that is
no path (`conv1`, `Gemm_0`) is its own layer name. Names are unique: a second node of the
same module (an unfused `/fc1/MatMul` + `/fc1/Add`) gets `fc1_add`, then a number.
"""

from __future__ import annotations

import re

_SAFE = re.compile(r"[^0-9A-Za-z_]+")


def short_name(node_name: str) -> str:
    """The layer name a node name suggests, before making it unique."""
    parts = [p for p in node_name.split("/") if p]
    if len(parts) >= 2:
        return _SAFE.sub("_", parts[-2]).strip("_") or _SAFE.sub("_", parts[-1]).lower()
    if node_name.startswith("/") and parts:
        return _SAFE.sub("_", parts[0]).strip("_").lower()
    return node_name


def layer_names(graph) -> dict[str, str]:
    """node name -> unique layer name, for every node of `graph` (cached on the graph)."""
    if "_layer_names" in graph.__dict__:
        return graph.__dict__["_layer_names"]
    node_names = {n.name for n in graph.nodes}
    taken: set[str] = set()
    out: dict[str, str] = {}
    for n in graph.nodes:
        base = short_name(n.name)
        name = base
        if name in taken or (name in node_names and name != n.name):
            name = f"{base}_{n.op_type.lower()}"
        k = 1
        while name in taken or (name in node_names and name != n.name):
            name, k = f"{base}_{n.op_type.lower()}_{k}", k + 1
        taken.add(name)
        out[n.name] = name
    graph.__dict__["_layer_names"] = out
    return out


def node_by_layer(graph) -> dict[str, str]:
    """layer name -> node name (cached on the graph)."""
    if "_node_by_layer" not in graph.__dict__:
        graph.__dict__["_node_by_layer"] = {v: k for k, v in layer_names(graph).items()}
    return graph.__dict__["_node_by_layer"]


def resolve(graph, name: str) -> str:
    """The node name for `name`, which may be a node name or a layer name (None if neither)."""
    if name in graph._node_by_name:
        return name
    return node_by_layer(graph).get(name)


def resolve_config(graph, precision):
    """`precision` (anything PrecisionConfig.coerce takes) with its `nodes:` keys as node names,
    so that a config may name layers (`fc1`) or nodes (`/fc1/Gemm`); a config with
    `infer: hls4ml_name` gets the types hls4ml's granularity="name" inference gives this graph."""
    from conveyor.numerics.config import PrecisionConfig

    config = PrecisionConfig.coerce(precision).with_node_keys(lambda key: resolve(graph, key))
    if config.infer == "hls4ml_name":
        from conveyor.numerics.hls4ml_defaults import with_name_types

        config = with_name_types(graph, config)
    return config
