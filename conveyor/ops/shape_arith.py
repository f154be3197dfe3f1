"""Shape arithmetic and index movement: Shape, Size, Gather, Slice, Split, Squeeze, Unsqueeze,
Expand, Cast, ConstantOfShape, Equal, Where, Mod, Range.

Exporters write these around reshapes and recurrent states (`x.view(x.size(0), -1)`,
an LSTM's zero initial state, channel shuffles). Shapes are static in conveyor, so on
values known at load time they fold into constants (`Graph.build` propagates their
values, `passes.fold_constants` replaces them; Shape and Size fold from the input's
static shape alone, see `OpDef.from_shapes`). What remains at run time is data movement
(Gather with constant indices, Slice, Split, Squeeze, Unsqueeze, Expand: the values keep their
format, as wires do in HLS) or a selection (Where: cast to the result format).
Integer-valued arithmetic (Equal, Mod, Range, ConstantOfShape; Cast but float to float) has no
fixed-point kernel: left at run time in a graph run under a precision it is refused with
a PrecisionError naming the op.
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from conveyor.errors import ModelError, PrecisionError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, attr_error, no_fixed_kernel, register, require_const


def _axis(node, axis, rank, what="axis"):
    if not -rank <= axis < rank:
        raise ModelError(f"{node}: {what}={axis} out of range for rank {rank}; accepted: [{-rank}, {rank - 1}]")
    return axis % rank


def _ints(v):
    return [int(a) for a in np.asarray(v).reshape(-1)]


# ---- Shape, Size: known from the static shape -----------------------------------------

def _shape_value(node, shape):
    rank = len(shape)
    start, end = node.attr("start", 0), node.attr("end", rank)
    start, end = (min(max(v + rank if v < 0 else v, 0), rank) for v in (start, end))
    return np.asarray(shape[start:end], dtype=np.int64)


register(OpDef(
    "Shape",
    infer=lambda node, ins: [(_shape_value(node, ins[0].shape).shape, np.dtype(np.int64))],
    run=lambda node, x: (_shape_value(node, x[0].shape),),
    from_shapes=lambda node, ins: (_shape_value(node, ins[0].shape),),
    run_fixed=lambda node, args, fmts, prec, ctx: ((_shape_value(node, args[0].shape),), (None,)),
))

register(OpDef(
    "Size",
    infer=lambda node, ins: [((), np.dtype(np.int64))],
    run=lambda node, x: (np.asarray(x[0].size, dtype=np.int64),),
    from_shapes=lambda node, ins: (np.asarray(int(np.prod(ins[0].shape, dtype=np.int64)), dtype=np.int64),),
    run_fixed=lambda node, args, fmts, prec, ctx: ((np.asarray(args[0].size, dtype=np.int64),), (None,)),
))


# ---- Gather --------------------------------------------------------------------------

def _gather_infer(node, ins):
    data, idx = ins[0], ins[1]
    axis = _axis(node, node.attr("axis", 0), len(data.shape))
    if idx.value is not None:
        bad = [int(i) for i in np.asarray(idx.value).reshape(-1) if not -data.shape[axis] <= i < data.shape[axis]]
        if bad:
            raise ModelError(f"{node}: indices {bad[:5]} out of range for axis {axis} of size {data.shape[axis]}")
    return [(tuple(data.shape[:axis]) + tuple(idx.shape) + tuple(data.shape[axis + 1:]), data.dtype)]


def _gather_run(node, x):
    axis = _axis(node, node.attr("axis", 0), x[0].ndim)
    idx = np.asarray(x[1]).astype(np.int64)
    idx = np.where(idx < 0, idx + x[0].shape[axis], idx)
    return (np.take(x[0], idx, axis=axis),)


def _gather_prepare(node, ins):
    """`OpDef.prepare`: constant indices normalised once; one scalar index is a basic index
    (a view: the same values, no copy)."""
    if ins[1].value is None:
        return None
    axis = _axis(node, node.attr("axis", 0), len(ins[0].shape))
    idx = np.asarray(ins[1].value).astype(np.int64)
    idx = np.where(idx < 0, idx + ins[0].shape[axis], idx)
    if idx.ndim == 0:
        key = (slice(None),) * axis + (int(idx),)
        return lambda x: (x[0][key],)
    return lambda x: (np.take(x[0], idx, axis=axis),)


register(OpDef("Gather", infer=_gather_infer, run=_gather_run, run_fixed=fixed.movement(_gather_run),
               prepare=_gather_prepare))


# ---- Slice ---------------------------------------------------------------------------

def _slice_params(node, rank, starts, ends, axes, steps):
    if node.opset < 10:
        starts, ends, axes, steps = node.attr("starts"), node.attr("ends"), node.attr("axes"), None
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else [_axis(node, a, rank, "axes") for a in _ints(axes)]
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ModelError(f"{node}: starts, ends, axes, steps differ in length")
    if 0 in steps:
        raise ModelError(f"{node}: a step of 0; accepted: non-zero steps")
    index = [slice(None)] * rank
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = slice(s, e, st)  # Python's slice clamps exactly as ONNX specifies
    return tuple(index)


def _slice_slots(node, values):
    return [values[i] if i < len(values) else None for i in (1, 2, 3, 4)]


def _slice_infer(node, ins):
    data = ins[0]
    if node.opset >= 10:
        vals = [require_const(node, ins, i, w) for i, w in ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
    else:
        vals = [None] * 4
    index = _slice_params(node, len(data.shape), *vals)
    shape = tuple(len(range(*sl.indices(d))) for sl, d in zip(index, data.shape))
    return [(shape, data.dtype)]


def _slice_run(node, x):
    return (x[0][_slice_params(node, x[0].ndim, *_slice_slots(node, x))],)


register(OpDef("Slice", infer=_slice_infer, run=_slice_run, run_fixed=fixed.movement(_slice_run)))


# ---- Squeeze, Unsqueeze --------------------------------------------------------------

def _axes_of(node, ins_or_values, as_info):
    if node.opset < 13:
        return node.attr("axes")
    if len(ins_or_values) < 2 or ins_or_values[1] is None:
        return None
    if as_info:
        return require_const(node, ins_or_values, 1, "axes")
    return ins_or_values[1]


def _squeeze_shape(node, shape, axes):
    rank = len(shape)
    if axes is None:
        return tuple(d for d in shape if d != 1)
    axes = {_axis(node, a, rank, "axes") for a in _ints(axes)}
    if any(shape[a] != 1 for a in axes):
        raise ModelError(f"{node}: cannot squeeze axes {sorted(axes)} of shape {shape}; squeezed axes must have size 1")
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def _unsqueeze_shape(node, shape, axes):
    if axes is None:
        raise ModelError(f"{node}: Unsqueeze needs axes")
    rank = len(shape) + len(_ints(axes))
    axes = sorted({_axis(node, a, rank, "axes") for a in _ints(axes)})
    out, it = [], iter(shape)
    for i in range(rank):
        out.append(1 if i in axes else next(it))
    return tuple(out)


def _reshaper(shape_fn):
    def infer(node, ins):
        return [(shape_fn(node, ins[0].shape, _axes_of(node, ins, True)), ins[0].dtype)]

    def run(node, x):
        return (x[0].reshape(shape_fn(node, x[0].shape, _axes_of(node, x, False))),)

    return infer, run


for _op, _fn in (("Squeeze", _squeeze_shape), ("Unsqueeze", _unsqueeze_shape)):
    _infer, _run = _reshaper(_fn)
    register(OpDef(_op, infer=_infer, run=_run, run_fixed=fixed.movement(_run)))


# ---- Expand --------------------------------------------------------------------------

def _expand_shape(node, shape, target):
    try:
        return tuple(int(d) for d in np.broadcast_shapes(tuple(shape), tuple(_ints(target))))
    except ValueError:
        raise ModelError(f"{node}: shape {shape} does not broadcast to {_ints(target)}") from None


def _expand_run(node, x):
    return (np.array(np.broadcast_to(x[0], _expand_shape(node, x[0].shape, x[1]))),)


register(OpDef(
    "Expand",
    infer=lambda node, ins: [(_expand_shape(node, ins[0].shape, require_const(node, ins, 1, "shape")), ins[0].dtype)],
    run=_expand_run,
    run_fixed=fixed.movement(_expand_run),
))


# ---- Cast, ConstantOfShape -----------------------------------------------------------

def _cast_dtype(node):
    to = node.attr("to")
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(int(to)))
    except Exception:
        raise attr_error(node, "to", to, "a numeric ONNX TensorProto data type") from None


#: ONNX TensorProto types numpy holds natively (bool, [u]int8..64, float16/32/64); the
#: narrow ones (bfloat16, float8, int4) have their own saturation rules, not implemented.
_CAST_TYPES = {1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13}


def _cast_check(node):
    if node.attr("to") not in _CAST_TYPES:
        raise attr_error(node, "to", node.attr("to"), "bool, [u]int8..64, float16/32/64 (ONNX TensorProto 1-7, 9-13)")


def _cast_run(node, x):
    return (np.asarray(x[0]).astype(_cast_dtype(node)),)


def _cast_fixed(node, args, fmts, prec, ctx):
    # float32/float64 -> float32/float64 (Keras' exports are full of them) changes nothing on
    # an ap_fixed grid: a wire. Any other cast at run time has no fixed-point meaning yet.
    if fmts[0] is not None and _cast_dtype(node) in (np.float32, np.float64):
        return (np.asarray(args[0], dtype=np.float64),), (fmts[0],)
    raise PrecisionError(f"{node}: a run-time cast of a fixed-point value to {_cast_dtype(node)} has no "
                         "fixed-point kernel; accepted at run time: casts to float32/float64")


register(OpDef(
    "Cast",
    infer=lambda node, ins: [(ins[0].shape, _cast_dtype(node))],
    run=_cast_run,
    check=_cast_check,
    run_fixed=_cast_fixed,
))


def _fill_value(node):
    v = node.attr("value")
    return np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)


def _cos_run(node, x):
    return (np.full(tuple(_ints(x[0])), _fill_value(node)[0], dtype=_fill_value(node).dtype),)


register(OpDef(
    "ConstantOfShape",
    infer=lambda node, ins: [(tuple(_ints(require_const(node, ins, 0, "shape"))), _fill_value(node).dtype)],
    run=_cos_run,
    run_fixed=no_fixed_kernel("integer shape arithmetic: it folds at load when its input is known"),
))


# ---- Equal, Where, Mod, Range --------------------------------------------------------

def _broadcast(node, *shapes):
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError:
        raise ModelError(f"{node}: input shapes {list(shapes)} do not broadcast") from None


register(OpDef(
    "Equal",
    infer=lambda node, ins: [(_broadcast(node, ins[0].shape, ins[1].shape), np.dtype(bool))],
    run=lambda node, x: (np.equal(x[0], x[1]),),
    run_fixed=no_fixed_kernel("a comparison; it folds at load when its inputs are known"),
))


def _where_run(node, x):
    return (np.where(x[0], x[1], x[2]),)


# A selection of grid values is exact; the result is cast to the result format, since the
# two branches may be in different formats.
register(OpDef(
    "Where",
    infer=lambda node, ins: [(_broadcast(node, ins[0].shape, ins[1].shape, ins[2].shape), ins[1].dtype)],
    run=_where_run,
    run_fixed=fixed.exact_then_cast(_where_run),
))


def _mod_run(node, x):
    a, b = x
    if node.attr("fmod", 0):
        return (np.fmod(a, b).astype(a.dtype),)
    if a.dtype.kind == "f":
        raise ModelError(f"{node}: fmod=0 on floats; accepted: fmod=1 for floats (ONNX)")
    return (np.mod(a, b),)


register(OpDef(
    "Mod",
    infer=lambda node, ins: [(_broadcast(node, ins[0].shape, ins[1].shape), ins[0].dtype)],
    run=_mod_run,
    run_fixed=no_fixed_kernel("integer arithmetic; it folds at load when its inputs are known"),
))


def _range_run(node, x):
    start, limit, delta = (np.asarray(v).reshape(()) for v in x)
    n = max(int(np.ceil((limit - start) / delta)), 0)
    return ((start + np.arange(n) * delta).astype(start.dtype),)


def _range_infer(node, ins):
    vals = [require_const(node, ins, i, w) for i, w in ((0, "start"), (1, "limit"), (2, "delta"))]
    return [(_range_run(node, vals)[0].shape, ins[0].dtype)]


register(OpDef("Range", infer=_range_infer, run=_range_run,
               run_fixed=no_fixed_kernel("it folds at load when its inputs are known")))


# ---- Split ---------------------------------------------------------------------------

def _split_sizes(node, dim, split, n_out):
    if node.opset < 13:
        split = node.attr("split")
    if split is not None and np.size(split):
        sizes = _ints(split)
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            raise ModelError(f"{node}: split sizes {sizes} do not add up to the axis size {dim}")
        return sizes
    n = node.attr("num_outputs", n_out)
    chunk = -(-dim // n)  # ONNX: equal chunks, the last one smaller
    return [min(chunk, dim - i * chunk) for i in range(n)]


def _split_infer(node, ins):
    shape = ins[0].shape
    axis = _axis(node, node.attr("axis", 0), len(shape))
    split = require_const(node, ins, 1, "split") if node.opset >= 13 else None
    sizes = _split_sizes(node, shape[axis], split, len(node.outputs))
    return [(tuple(s if i == axis else d for i, d in enumerate(shape)), ins[0].dtype) for s in sizes]


def _split_run(node, x):
    axis = _axis(node, node.attr("axis", 0), x[0].ndim)
    sizes = _split_sizes(node, x[0].shape[axis], x[1] if len(x) > 1 else None, len(node.outputs))
    return tuple(np.split(x[0], np.cumsum(sizes)[:-1], axis=axis))


def _split_prepare(node, ins):
    """`OpDef.prepare`: the pieces' slices computed once from the static shape (np.split with
    its cumsum costs shufflenet_v2 about 10 us per call); each run is the same views."""
    shape = ins[0].shape
    axis = _axis(node, node.attr("axis", 0), len(shape))
    split = ins[1].value if len(ins) > 1 and ins[1] is not None else None
    if node.opset >= 13 and len(ins) > 1 and ins[1] is not None and split is None:
        return None
    sizes = _split_sizes(node, shape[axis], split, len(node.outputs))
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    pieces = tuple((slice(None),) * axis + (slice(int(a), int(b)),) for a, b in zip(starts[:-1], starts[1:]))
    return lambda x: tuple(x[0][p] for p in pieces)


def _split_fixed(node, args, fmts, prec, ctx):
    outs = _split_run(node, args)
    return outs, (fmts[0],) * len(outs)  # pieces of the input keep its format


register(OpDef("Split", infer=_split_infer, run=_split_run, run_fixed=_split_fixed, prepare=_split_prepare))
