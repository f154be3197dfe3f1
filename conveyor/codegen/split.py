"""Stages split by output channel over several boards (conveyor/planner/split.py): one board
folder per device, each computing its slice of the split layer's output channels.

The planner splits one MAC layer (Conv, Gemm, Dense, MatMul by weights) r ways and runs the
channel-wise layers after it (ReLU, pooling, BatchNorm...) on the same slices. Device k of
the stage gets the stage's sub-graph with the split layer's weights and bias (and a BatchNorm's
parameters) cut to its channels [lo_k, hi_k): every output channel is computed exactly as in
the whole layer (its own products, in the same order, the same formats), so each slice equals
the emulator's values of those channels bit for bit. Every device reads the whole input; the
next board (or the host) reads the slices concatenated along the channel axis, in device order
— in the link's channels-first order a channel slice is one contiguous block, so the gather is
the slices' streams one after another (`gather` in the manifest says whether each slice fills
whole beats, so that the beats themselves concatenate). The fan-out of the input to the r
devices and the gather are not generated: an AXI4-Stream broadcaster / combiner, or the host.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from conveyor.errors import CodegenError

#: per op type: (slot, axis) of each parameter cut to the output channels, for the split layer
_SPLIT_PARAMS = {"Conv": ((1, 0), (2, 0)), "Dense": ((1, -1), (2, -1)), "MatMul": ((1, -1),)}
#: channel-wise layers with per-channel parameters (slots along axis 0)
_CHANNEL_PARAMS = {"BatchNormalization": (1, 2, 3, 4)}


def _gemm_params(node) -> tuple:
    return ((1, 0 if node.attr("transB", 0) else -1), (2, -1))


def slice_bounds(channels: int, ways: int, per_channel_values: int, per_beat: int) -> list[tuple[int, int]]:
    """[lo, hi) per device: ceil(C / r) channels each (the planner's split_work), rounded up to
    a whole number of link beats per slice where that still leaves every device a slice."""
    chunk = -(-channels // ways)
    step = per_beat // math.gcd(per_beat, per_channel_values)
    aligned = -(-chunk // step) * step
    if (ways - 1) * aligned < channels:
        chunk = aligned
    bounds = [(k * chunk, min(channels, (k + 1) * chunk)) for k in range(ways)]
    if any(lo >= hi for lo, hi in bounds):
        raise CodegenError(f"{channels} output channels cannot be split {ways} ways with a slice each")
    return bounds


def _cut(a: np.ndarray, axis: int, lo: int, hi: int, channels: int) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 0 or a.shape[axis] != channels:   # a broadcast scalar / (1,) bias: the same for every slice
        return a
    return np.ascontiguousarray(np.take(a, np.arange(lo, hi), axis=axis))


def split_specs(spec, stage, index: int, formats: dict) -> list[tuple]:
    """(the device's StageSpec, its manifest `split` entry) per device of split stage `index`.
    `formats`: tensor -> number format (the link's element width: the beat alignment of the gather)."""
    from conveyor.codegen.board import STREAM_WIDTH
    from conveyor.graph.ir import Graph

    g = spec.graph
    devices = (stage.device, *stage.replicas)
    ways = len(devices)
    first = g.nodes[0]
    where = f"split stage {index} ({', '.join(devices)})"
    params = _gemm_params(first) if first.op_type == "Gemm" else _SPLIT_PARAMS.get(first.op_type)
    if params is None or any(not first.inputs[s] or not g.is_weight(first.inputs[s]) for s, _ in params[:1]):
        raise CodegenError(f"{where}: its first layer '{first.name}' ({first.op_type}) is not a Conv / Gemm / Dense / "
                           "MatMul by constant weights; code generation splits those by output channel")
    outs = [o for o in spec.forwards]
    last = g.nodes[-1].outputs[0]
    if outs != [last] or list(spec.needs) != [t for t in g.input_names]:
        raise CodegenError(f"{where}: it passes on {outs} (values crossing it, or more than its last layer's "
                           f"output '{last}'); code generation splits stages whose only output is their last layer's")
    for n in g.nodes[1:]:
        if n.op_type not in ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "MaxPool", "AveragePool",
                             "BatchNormalization"):
            raise CodegenError(f"{where}: layer '{n.name}' ({n.op_type}) is not channel-wise")
        if [t for t in n.inputs if t and not g.is_weight(t)] != [g.nodes[g.nodes.index(n) - 1].outputs[0]]:
            raise CodegenError(f"{where}: layer '{n.name}' does not read only the layer before it")
    out_shape = g.tensors[last].shape
    channels = int(g.tensors[first.outputs[0]].shape[1])
    if int(out_shape[1]) != channels:
        raise CodegenError(f"{where}: its output '{last}' has {out_shape[1]} channels, its split layer {channels}")
    per_channel = int(np.prod(out_shape[2:], dtype=np.int64)) if len(out_shape) > 2 else 1
    per_beat = max(1, STREAM_WIDTH // int(formats[last].width))
    bounds = slice_bounds(channels, ways, per_channel, per_beat)
    specs = []
    for k, (device, (lo, hi)) in enumerate(zip(devices, bounds)):
        weights = dict(g.weights)
        for node, slots in [(first, params)] + [(n, [(s, 0) for s in _CHANNEL_PARAMS.get(n.op_type, ())])
                                                 for n in g.nodes[1:]]:
            for slot, axis in slots:
                t = node.inputs[slot] if slot < len(node.inputs) else ""
                if t and t in weights:
                    weights[t] = _cut(g.weights[t], axis, lo, hi, channels)
        try:
            sub = Graph.build(f"{g.name}[slice {k}]", g.nodes, g.inputs, g.output_names, weights)
        except Exception as e:   # a channel-wise layer whose attributes fix the channel count
            raise CodegenError(f"{where}: the slice [{lo}, {hi}) of '{first.name}' does not build: {e}") from None
        items = (hi - lo) * per_channel
        entry = {"stage": index, "ways": ways, "index": k, "layer": first.name, "tensor": last, "axis": 1,
                 "channels": [lo, hi], "of": channels, "items": items,
                 "offset": lo * per_channel,   # where the slice starts in the tensor's link (channels-first) order
                 "gather": {"by": "the next board's link_in (an AXI4-Stream combiner) or the host",
                            "order": list(devices),
                            "beat_aligned": all((h - l) * per_channel % per_beat == 0 for l, h in bounds[:-1]),
                            "how": "the slices' values one after another in device order (channels-first, so a "
                                   "channel slice is one contiguous block); TLAST of the last slice ends the item"},
                 "fan_out": "every device of the stage reads the whole input (an AXI4-Stream broadcaster or the host)"}
        specs.append((replace(spec, graph=sub, device=device, replicas=()), entry))
    return specs
