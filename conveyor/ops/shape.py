"""Data-movement ops: Flatten, Reshape, Transpose, Concat, Pad, Identity, Dropout.

None of them computes; on an FPGA they are wiring or stream reordering, so their
MAC count is zero. Shape-determining inputs (Reshape's shape, Pad's pads) must be
constants so that every tensor's shape is static.
"""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, attr_error, register, require_const


def _norm_axis(node, axis, rank, what="axis"):
    if not -rank <= axis < rank:
        raise ModelError(f"{node}: {what}={axis} out of range for rank {rank}; accepted: [{-rank}, {rank - 1}]")
    return axis % rank


# ---- Flatten -----------------------------------------------------------------------

def _flatten_shape(node, shape):
    rank = len(shape)
    axis = node.attr("axis", 1)
    if not -rank <= axis <= rank:
        raise ModelError(f"{node}: axis={axis} out of range for rank {rank}; accepted: [{-rank}, {rank}]")
    axis = axis + rank if axis < 0 else axis
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    return (outer, int(np.prod(shape[axis:], dtype=np.int64)))


def _flatten_run(node, x):
    return (x[0].reshape(_flatten_shape(node, x[0].shape)),)


register(OpDef(
    "Flatten",
    infer=lambda node, ins: [(_flatten_shape(node, ins[0].shape), ins[0].dtype)],
    run=_flatten_run,
    run_fixed=fixed.movement(_flatten_run),
))


# ---- Reshape -----------------------------------------------------------------------

def _reshape_target(node, in_shape, spec):
    spec = [int(s) for s in np.asarray(spec).reshape(-1)]
    allowzero = node.attr("allowzero", 0)
    out = []
    for i, s in enumerate(spec):
        if s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ModelError(f"{node}: shape[{i}]=0 copies a dimension the input {in_shape} does not have")
            out.append(in_shape[i])
        else:
            out.append(s)
    total = int(np.prod(in_shape, dtype=np.int64))
    if out.count(-1) > 1:
        raise ModelError(f"{node}: shape {spec} has more than one -1")
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or total % known:
            raise ModelError(f"{node}: cannot reshape {in_shape} to {spec}")
        out[out.index(-1)] = total // known
    if any(d < 0 for d in out) or int(np.prod(out, dtype=np.int64)) != total:
        raise ModelError(f"{node}: cannot reshape {in_shape} ({total} elements) to {spec}")
    return tuple(out)


def _reshape_spec(node, shape_value):
    return node.attr("shape") if node.opset < 5 else shape_value


def _reshape_infer(node, ins):
    spec = node.attr("shape") if node.opset < 5 else require_const(node, ins, 1, "shape")
    if spec is None:
        raise ModelError(f"{node}: Reshape needs a shape")
    return [(_reshape_target(node, ins[0].shape, spec), ins[0].dtype)]


def _reshape_run(node, x):
    return (x[0].reshape(_reshape_target(node, x[0].shape, _reshape_spec(node, x[1] if len(x) > 1 else None))),)


def _reshape_prepare(node, ins):
    """`OpDef.prepare`: the target shape, worked out once, when the shape input is a constant."""
    if node.opset >= 5 and (len(ins) < 2 or ins[1] is None or ins[1].value is None):
        return None  # computed at run time (by shape arithmetic that Graph.build evaluated)
    shape = _reshape_infer(node, ins)[0][0]
    return lambda x: (x[0].reshape(shape),)


register(OpDef("Reshape", infer=_reshape_infer, run=_reshape_run, run_fixed=fixed.movement(_reshape_run),
               prepare=_reshape_prepare))


# ---- Transpose ---------------------------------------------------------------------

def _perm(node, rank):
    perm = node.attr("perm")
    if perm is None:
        return tuple(range(rank))[::-1]
    if sorted(perm) != list(range(rank)):
        raise ModelError(f"{node}: perm={list(perm)} is not a permutation of 0..{rank - 1}")
    return tuple(perm)


def _transpose_run(node, x):
    return (np.transpose(x[0], _perm(node, x[0].ndim)),)


def _transpose_prepare(node, ins):
    perm = _perm(node, len(ins[0].shape))
    return lambda x: (x[0].transpose(perm),)


register(OpDef(
    "Transpose",
    infer=lambda node, ins: [(tuple(ins[0].shape[p] for p in _perm(node, len(ins[0].shape))), ins[0].dtype)],
    run=_transpose_run,
    prepare=_transpose_prepare,
    run_fixed=fixed.movement(_transpose_run),
))


# ---- Concat ------------------------------------------------------------------------

def _concat_axis(node, rank):
    axis = node.attr("axis", 1 if node.opset < 4 else None)
    if axis is None:
        raise ModelError(f"{node}: Concat requires the 'axis' attribute")
    return _norm_axis(node, axis, rank)


def _concat_infer(node, ins):
    shapes = [i.shape for i in ins if i is not None]
    rank = len(shapes[0])
    axis = _concat_axis(node, rank)
    for s in shapes[1:]:
        if len(s) != rank or any(a != b for d, (a, b) in enumerate(zip(s, shapes[0])) if d != axis):
            raise ModelError(f"{node}: inputs {shapes} differ outside axis {axis}")
    out = list(shapes[0])
    out[axis] = sum(s[axis] for s in shapes)
    return [(tuple(out), ins[0].dtype)]


def _concat_run(node, x):
    arrays = [a for a in x if a is not None]
    return (np.concatenate(arrays, axis=_concat_axis(node, arrays[0].ndim)),)


# Inputs may come in different formats: the concatenation is cast to the result format (the
# identity, skipped, when every input's format lies inside it).
register(OpDef("Concat", infer=_concat_infer, run=_concat_run, run_fixed=fixed.exact_then_cast(_concat_run, selects_all=True)))


# ---- Pad ---------------------------------------------------------------------------

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


def _pad_check(node):
    mode = node.attr("mode", "constant")
    if mode not in _PAD_MODES or (mode == "wrap" and node.opset < 19):
        raise attr_error(node, "mode", mode, "constant, reflect, edge (wrap from opset 19)")


def _pad_params(node, rank, pads, axes):
    """Full per-axis (before, after) pads from the ONNX layout [b0, b1, ..., e0, e1, ...]."""
    if node.opset < 11:
        pads = node.attr("pads") if node.opset >= 2 else node.attr("paddings")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if axes is None:
        axes = list(range(rank))
    else:
        axes = [_norm_axis(node, int(a), rank, "axes") for a in np.asarray(axes).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise ModelError(f"{node}: pads has {len(pads)} values; expected {2 * len(axes)} (begin and end per axis)")
    full = [(0, 0)] * rank
    for i, a in enumerate(axes):
        full[a] = (pads[i], pads[i + len(axes)])
    return full


def _pad_infer(node, ins):
    rank = len(ins[0].shape)
    pads = require_const(node, ins, 1, "pads") if node.opset >= 11 else None
    axes = require_const(node, ins, 3, "axes") if node.opset >= 18 else None
    full = _pad_params(node, rank, pads, axes)
    out = tuple(d + b + e for d, (b, e) in zip(ins[0].shape, full))
    if any(d < 0 for d in out):
        raise ModelError(f"{node}: pads {full} crop more than the input shape {ins[0].shape}")
    return [(out, ins[0].dtype)]


def _pad_run(node, x):
    data = x[0]
    pads = x[1] if node.opset >= 11 else None
    axes = x[3] if node.opset >= 18 and len(x) > 3 else None
    full = _pad_params(node, data.ndim, pads, axes)
    mode = _PAD_MODES[node.attr("mode", "constant")]
    if node.opset >= 11:
        value = x[2] if len(x) > 2 and x[2] is not None and x[2].size else 0
    else:
        value = node.attr("value", 0.0)
    grow = [(max(b, 0), max(e, 0)) for b, e in full]
    kwargs = {"constant_values": np.asarray(value).reshape(()).astype(data.dtype)} if mode == "constant" else {}
    out = np.pad(data, grow, mode=mode, **kwargs)
    # Negative pads crop.
    crop = tuple(slice(-min(b, 0), out.shape[i] + min(e, 0)) for i, (b, e) in enumerate(full))
    return (out[crop],)


# The pad value need not lie on the input's grid: cast the padded tensor to the result format.
register(OpDef("Pad", infer=_pad_infer, run=_pad_run, check=_pad_check, run_fixed=fixed.exact_then_cast(_pad_run)))


# ---- Identity, Dropout (inference: both pass data through) ---------------------------

def _identity_run(node, x):
    return (x[0],)


register(OpDef(
    "Identity",
    infer=lambda node, ins: [(ins[0].shape, ins[0].dtype)],
    run=_identity_run,
    run_fixed=fixed.movement(_identity_run),
))


def _dropout_check(node):
    if node.opset < 7 and node.attr("is_test", 0) == 0:
        raise attr_error(node, "is_test", 0, "is_test=1 (conveyor runs inference only)")


def _training(node, values):
    return node.opset >= 12 and len(values) > 2 and values[2] is not None and bool(np.asarray(values[2]).reshape(-1)[0])


def _dropout_infer(node, ins):
    if _training(node, [None if i is None else i.value for i in ins]):
        raise ModelError(f"{node}: training_mode=True; conveyor runs inference only (training_mode=False)")
    return [(ins[0].shape, ins[0].dtype), (ins[0].shape, np.dtype(bool))]


def _dropout_run(node, x):
    if _training(node, x):
        raise ModelError(f"{node}: training_mode=True; conveyor runs inference only (training_mode=False)")
    return (x[0], np.ones(x[0].shape, dtype=bool))


register(OpDef("Dropout", infer=_dropout_infer, run=_dropout_run, check=_dropout_check,
               run_fixed=fixed.movement(_dropout_run)))
