"""LayerNormalization (opset 17): normalise over the axes from `axis` on, then scale and shift.

Float reference kernel only (float64 inside): there is no fixed-point kernel yet, so a graph
with one is refused under a precision with a PrecisionError naming the op.
"""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops.registry import OpDef, no_fixed_kernel, register


def _axis(node, rank):
    axis = node.attr("axis", -1)
    if not -rank <= axis < rank:
        raise ModelError(f"{node}: axis={axis} out of range for rank {rank}")
    return axis % rank


def _infer(node, ins):
    rank = len(ins[0].shape)
    norm = ins[0].shape[_axis(node, rank):]
    stat = tuple(ins[0].shape[:_axis(node, rank)]) + (1,) * (rank - _axis(node, rank))
    for slot, what in ((1, "scale"), (2, "bias")):
        if slot < len(ins) and ins[slot] is not None:
            try:
                np.broadcast_shapes(ins[slot].shape, norm)
            except ValueError:
                raise ModelError(f"{node}: {what} shape {ins[slot].shape} does not broadcast to {norm}") from None
    return [(ins[0].shape, ins[0].dtype), (stat, np.dtype(np.float32)), (stat, np.dtype(np.float32))]


def _run(node, x):
    data = np.asarray(x[0], dtype=np.float64)
    axes = tuple(range(_axis(node, data.ndim), data.ndim))
    mean = data.mean(axis=axes, keepdims=True)
    var = ((data - mean) ** 2).mean(axis=axes, keepdims=True)
    inv = 1.0 / np.sqrt(var + node.attr("epsilon", 1e-5))
    y = (data - mean) * inv
    if len(x) > 1 and x[1] is not None:
        y = y * x[1]
    if len(x) > 2 and x[2] is not None:
        y = y + x[2]
    return y.astype(x[0].dtype), mean.astype(np.float32), inv.astype(np.float32)


def _macs(node, ins, outs):
    return 2 * int(np.prod(ins[0].shape, dtype=np.int64))  # a scale and a normalising multiply


register(OpDef("LayerNormalization", infer=_infer, run=_run, macs=_macs, param_slots=(1, 2), bias_slots=(2,),
               run_fixed=no_fixed_kernel("float reference only")))
