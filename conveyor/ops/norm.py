"""Normalisation: ONNX BatchNormalization (inference only; opsets 1, 6, 7, 9, 14, 15)
and LRN (opsets 1, 13)."""

from __future__ import annotations

import math

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops.registry import OpDef, attr_error, register

# ---- BatchNormalization --------------------------------------------------------------


def _bn_check(node) -> None:
    extra = [o for o in node.outputs[1:] if o]
    if extra:
        raise ModelError(
            f"{node}: outputs {extra} are training-mode statistics; conveyor implements "
            "inference only; accepted: the single output Y"
        )
    if node.opset >= 14 and node.attr("training_mode", 0) != 0:
        raise attr_error(node, "training_mode", node.attr("training_mode"), "0 (inference only)")
    if node.opset < 7 and node.attr("is_test", 0) != 1:
        # Before opset 7, is_test=0 (the default) means normalising with batch statistics.
        raise attr_error(node, "is_test", node.attr("is_test", 0), "1 (inference only)")
    if node.opset < 9 and node.attr("spatial", 1) != 1:
        raise attr_error(node, "spatial", node.attr("spatial"), "1 (per-channel statistics)")


def _bn_infer(node, ins):
    x = ins[0]
    if len(x.shape) < 2:
        raise ModelError(f"{node}: input X must be (N, C, ...), got shape {tuple(x.shape)}")
    c = x.shape[1]
    names = ("scale", "B", "mean", "var")
    for slot, name in enumerate(names, start=1):
        if slot >= len(ins) or ins[slot] is None:
            raise ModelError(f"{node}: input {slot} ({name}) is required")
        if tuple(ins[slot].shape) != (c,):
            raise ModelError(f"{node}: input {slot} ({name}) must have shape ({c},) for X {tuple(x.shape)}, "
                             f"got {tuple(ins[slot].shape)}")
    return [(tuple(x.shape), x.dtype)]


def bn_coefficients(node, scale, bias, mean, var):
    """(a, b) per channel such that Y = a * X + b (computed in float64)."""
    eps = float(node.attr("epsilon", 1e-5))
    a = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    b = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * a
    return a, b


def _bn_run(node, arrays):
    x = arrays[0]
    a, b = bn_coefficients(node, *arrays[1:5])
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    y = np.asarray(x, work) * a.astype(work).reshape(shape) + b.astype(work).reshape(shape)
    return (y.astype(x.dtype, copy=False),)


def _bn_macs(node, ins, outs):
    # One multiply-add per element (Y = a * X + b); usually folded into the previous conv.
    return int(np.prod(ins[0].shape, dtype=np.int64))


register(OpDef("BatchNormalization", infer=_bn_infer, run=_bn_run, macs=_bn_macs, check=_bn_check,
               param_slots=(1, 2, 3, 4)))


# ---- LRN -----------------------------------------------------------------------------


def _lrn_check(node) -> None:
    size = node.attr("size")
    if size is None:
        raise ModelError(f"{node}: attribute size is required; accepted: a positive int")
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise attr_error(node, "size", size, "a positive int")


def _lrn_infer(node, ins):
    x = ins[0]
    if len(x.shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x.shape)}")
    return [(tuple(x.shape), x.dtype)]


def _lrn_run(node, arrays):
    x = arrays[0]
    size = int(node.attr("size"))
    alpha = float(node.attr("alpha", 1e-4))
    beta = float(node.attr("beta", 0.75))
    bias = float(node.attr("bias", 1.0))
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    xw = np.asarray(x, work)
    sq = xw * xw
    # Channel window [c - floor((size-1)/2), c + ceil((size-1)/2)], clipped to [0, C).
    before, after = (size - 1) // 2, math.ceil((size - 1) / 2)
    c = x.shape[1]
    padded = np.zeros((x.shape[0], c + before + after) + x.shape[2:], dtype=work)
    padded[:, before:before + c] = sq
    square_sum = padded[:, 0:c].copy()
    for j in range(1, size):
        square_sum += padded[:, j:j + c]
    scale = np.asarray(bias, work) + np.asarray(alpha / size, work) * square_sum
    y = xw / np.power(scale, np.asarray(beta, work))
    return (y.astype(x.dtype, copy=False),)


def _lrn_macs(node, ins, outs):
    # `size` multiply-adds per element for the windowed sum of squares; the power and
    # the divide are not counted.
    return int(np.prod(ins[0].shape, dtype=np.int64)) * int(node.attr("size"))


register(OpDef("LRN", infer=_lrn_infer, run=_lrn_run, macs=_lrn_macs, check=_lrn_check))
