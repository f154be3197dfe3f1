"""Pooling: ONNX MaxPool (opsets 1, 8, 10, 11, 12, 22, with the optional Indices
output), AveragePool (1, 7, 10, 11, 19, 22) and GlobalAveragePool. N-d.

Kernels loop over the kernel taps (prod(kernel_shape) iterations), each one a strided
slice of the padded input, so the work is vectorised over all output pixels.

Semantics (ONNX spec and onnx's reference implementation):
- padding never wins a max (padded with -inf, or the dtype's minimum for ints);
- ceil_mode rounds the output size up, but a window that would start in the end
  padding is dropped; the extra (implicit) padding of the last window is never
  counted in an average, even with count_include_pad=1;
- count_include_pad=1 divides by the taps that fall inside input + declared pads
  (explicit or auto_pad); 0 divides by the taps inside the input;
- Indices are flat indices into X as a whole, (n * C + c) * prod(spatial) + the
  spatial position, the spatial part row-major (storage_order=0) or column-major (1);
  ties go to the first tap in row-major window order.
"""

from __future__ import annotations

import itertools

import numpy as np

from conveyor.errors import ModelError
from conveyor.ops.conv import (
    Windows,
    check_window_attrs,
    int_list,
    pad_for_windows,
    window_geometry,
)
from conveyor.ops import fixed
from conveyor.ops.reduce import trailing_mean
from conveyor.ops.registry import OpDef, attr_error, register


def _flag(node, key: str, default: int = 0) -> int:
    v = node.attr(key, default)
    if v not in (0, 1):
        raise attr_error(node, key, v, "0 or 1")
    return int(v)


def _nontrivial(values) -> bool:
    return values is not None and any(v != 1 for v in values)


def _pool_check(node) -> None:
    check_window_attrs(node, pools=True)
    _flag(node, "ceil_mode")
    if node.opset < 10 and node.attr("ceil_mode", 0):
        raise ModelError(f"{node}: attribute ceil_mode exists only from opset 10 (node opset {node.opset}); "
                         "accepted: ceil_mode absent or 0, or opset >= 10")
    if node.op_type == "MaxPool":
        _flag(node, "storage_order")
        if node.opset < 10 and _nontrivial(int_list(node, "dilations")):
            raise ModelError(f"{node}: attribute dilations exists for MaxPool only from opset 10 "
                             f"(node opset {node.opset}); accepted: dilations absent or all 1, or opset >= 10")
        named = [o for o in node.outputs[1:] if o]
        if node.opset < 8 and named:
            raise ModelError(f"{node}: the Indices output exists only from opset 8 (node opset {node.opset}); "
                             "accepted: a single output Y")
        if len(node.outputs) > 2:
            raise ModelError(f"{node} names {len(node.outputs)} outputs; accepted: Y and optionally Indices")
    else:
        _flag(node, "count_include_pad")
        if node.opset < 7 and node.attr("count_include_pad", 0):
            raise ModelError(f"{node}: attribute count_include_pad exists only from opset 7 "
                             f"(node opset {node.opset}); accepted: count_include_pad absent or 0")
        if node.opset < 19 and _nontrivial(int_list(node, "dilations")):
            raise ModelError(f"{node}: attribute dilations exists for AveragePool only from opset 19 "
                             f"(node opset {node.opset}); accepted: dilations absent or all 1, or opset >= 19")
        if len([o for o in node.outputs if o]) > 1:
            raise ModelError(f"{node} names {len(node.outputs)} outputs; AveragePool has one")


def _geometry(node, x_shape) -> Windows:
    if len(x_shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x_shape)}")
    kernel = int_list(node, "kernel_shape")
    if kernel is None:
        raise ModelError(f"{node}: attribute kernel_shape is required")
    dilations = None
    if node.op_type == "AveragePool" and node.opset < 19:
        dilations = [1] * len(kernel)
    return window_geometry(node, tuple(x_shape[2:]), kernel,
                           ceil_mode=bool(node.attr("ceil_mode", 0)), dilations=dilations)


def _pool_infer(node, ins):
    x = ins[0]
    geo = _geometry(node, x.shape)
    shape = tuple(int(d) for d in x.shape[:2]) + geo.out
    if node.op_type == "MaxPool":
        return [(shape, x.dtype), (shape, np.dtype(np.int64))]
    return [(shape, x.dtype)]


def _taps(geo: Windows):
    """(tap multi-index, slices of the padded input that the tap reads for every window)."""
    for t in itertools.product(*(range(k) for k in geo.kernel)):
        sl = tuple(
            slice(ti * d, ti * d + (o - 1) * s + 1, s)
            for ti, d, o, s in zip(t, geo.dilations, geo.out, geo.strides)
        )
        yield t, (Ellipsis,) + sl


def _separable(xp, geo: Windows, op):
    """op (np.maximum, np.add) over every window of the padded xp, one axis at a time (first
    first: the strided passes over rows keep the inner axis contiguous and shrink the array
    before the strided passes along it, 1.3-1.9x faster than last first on 3x3/2 and 2x2/2
    pools at 64 px): a window is the product of its per-axis taps, so this reduces the same
    values as the tap-by-tap loop (the max exactly; a sum in another order, exact on the
    emulator's grid values), with sum(k_i) passes instead of prod(k_i), each over a smaller array."""
    nd = len(geo.out)
    acc = xp
    for ax in range(nd):
        k, d, o, st = geo.kernel[ax], geo.dilations[ax], geo.out[ax], geo.strides[ax]
        pick = [slice(None)] * acc.ndim
        taps = []
        for t in range(k):
            pick[acc.ndim - nd + ax] = slice(t * d, t * d + (o - 1) * st + 1, st)
            taps.append(acc[tuple(pick)])
        out = taps[0].copy()
        for v in taps[1:]:
            op(out, v, out=out)
        acc = out
    return acc


def _lowest(dtype):
    if np.issubdtype(dtype, np.floating):
        return -np.inf
    return np.iinfo(dtype).min


def _maxpool_run(node, arrays):
    x = arrays[0]
    geo = _geometry(node, x.shape)
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    xp = pad_for_windows(x, geo, _lowest(x.dtype))
    nd = len(geo.out)
    if not want_indices:
        return (_separable(xp, geo, np.maximum),)
    best = None
    arg = None
    for tap_id, (_, sl) in enumerate(_taps(geo)):
        v = xp[sl]
        if best is None:
            best = v.copy()
            if want_indices:
                arg = np.zeros(best.shape, dtype=np.int32)
            continue
        if want_indices:
            better = v > best
            arg[better] = tap_id
            np.copyto(best, v, where=better)
        else:
            np.maximum(best, v, out=best)
    if not want_indices:
        return (best,)

    # Tap id -> input coordinates -> flat index into X.
    spatial = x.shape[2:]
    taps = np.unravel_index(arg, geo.kernel)
    if node.attr("storage_order", 0):
        steps = np.cumprod((1,) + tuple(spatial[:-1]), dtype=np.int64)
    else:
        steps = np.cumprod((1,) + tuple(spatial[::-1][:-1]), dtype=np.int64)[::-1]
    flat = np.zeros(arg.shape, dtype=np.int64)
    for i in range(nd):
        o = np.arange(geo.out[i], dtype=np.int64).reshape((-1,) + (1,) * (nd - 1 - i))
        coord = o * geo.strides[i] - geo.begin[i] + taps[i].astype(np.int64) * geo.dilations[i]
        flat += coord * steps[i]
    n, c = x.shape[:2]
    plane = int(np.prod(spatial, dtype=np.int64))
    flat += (np.arange(n * c, dtype=np.int64) * plane).reshape((n, c) + (1,) * nd)
    return (best, flat)


def _counts_1d(geo: Windows, axis: int, size: int, include_pad: bool) -> np.ndarray:
    """How many taps of each window along `axis` are counted in the average."""
    lo, hi = (-geo.begin[axis], size + geo.end[axis]) if include_pad else (0, size)
    o = np.arange(geo.out[axis])[:, None]
    t = np.arange(geo.kernel[axis])[None, :]
    coord = o * geo.strides[axis] - geo.begin[axis] + t * geo.dilations[axis]
    return ((coord >= lo) & (coord < hi)).sum(axis=1)


def _avgpool_run(node, arrays):
    x = arrays[0]
    geo = _geometry(node, x.shape)
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    xp = pad_for_windows(np.asarray(x, dtype=work), geo, 0)
    total = _separable(xp, geo, np.add)
    nd = len(geo.out)
    include = bool(node.attr("count_include_pad", 0))
    count = np.ones((), dtype=np.int64)
    for i in range(nd):
        c1 = _counts_1d(geo, i, x.shape[2 + i], include)
        count = count[..., None] * c1 if i else c1
    count = count.astype(work)
    if count.size and count.min() == count.max() and count.flat[0] > 0:  # every window counts alike
        total /= count.flat[0]  # in place: the same quotients
        return (total.astype(x.dtype, copy=False),)
    # A window with nothing to count (only possible when pads >= kernel) averages to 0.
    y = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    return (y.astype(x.dtype, copy=False),)


def _avgpool_macs(node, ins, outs):
    # Counted as one accumulate per window tap (the adds; the final divide is free
    # on an FPGA as a constant multiply folded into the accumulator scale).
    return int(np.prod(outs[0][0], dtype=np.int64)) * int(np.prod(int_list(node, "kernel_shape")))


def _pool_prepare(node, ins):
    """`OpDef.prepare` (the float reference only): a 2-D float32/float64 MaxPool without the
    Indices output, or AveragePool, as one compiled pass (`conveyor.ops.pool_float`: the same
    values as `_maxpool_run`/`_avgpool_run`); None (their numpy kernels) otherwise."""
    from conveyor.ops import pool_float

    x = ins[0]
    if (not pool_float.available() or x.dtype not in (np.float32, np.float64) or len(x.shape) != 4
            or 0 in x.shape):
        return None
    if node.op_type == "MaxPool" and len(node.outputs) > 1 and node.outputs[1]:
        return None
    geo = _geometry(node, x.shape)
    if 0 in geo.out:
        return None
    count = None
    if node.op_type == "AveragePool":
        include = bool(node.attr("count_include_pad", 0))
        count = (_counts_1d(geo, 0, x.shape[2], include)[:, None]
                 * _counts_1d(geo, 1, x.shape[3], include)[None, :]).astype(x.dtype)
    plan = pool_float.Pool2d(x.shape, x.dtype, geo, node.op_type == "MaxPool", count)
    return lambda arrays: (plan(arrays[0]),)


#: the bit-accurate kernels' prepared pools: (id(node), shape, dtype) -> (node, plan or None);
#: the node is held so that its id stays its own; oldest first out past _FIXED_POOLS_MAX
_FIXED_POOLS: dict[tuple, tuple] = {}
_FIXED_POOLS_MAX = 1024


def _prepared_run(numpy_run):
    """`numpy_run` through the 2-D compiled pool (`_pool_prepare`) made once per node and
    input shape: the emulator's float64 grid values, the same values as `numpy_run` (a max
    selects; an average's sum is exact, then one division)."""
    from conveyor.ops.registry import ValueInfo

    def run(node, arrays):
        x = arrays[0]
        key = (id(node), x.shape, x.dtype.str)
        hit = _FIXED_POOLS.get(key)
        if hit is None or hit[0] is not node:
            hit = (node, _pool_prepare(node, [ValueInfo(x.shape, x.dtype, None)]))
            if len(_FIXED_POOLS) >= _FIXED_POOLS_MAX:
                _FIXED_POOLS.pop(next(iter(_FIXED_POOLS)))
            _FIXED_POOLS[key] = hit
        return numpy_run(node, arrays) if hit[1] is None else hit[1](arrays)
    return run


register(OpDef("MaxPool", infer=_pool_infer, run=_maxpool_run, check=_pool_check,  # max: 0 MACs
               run_fixed=fixed.exact_then_cast(_prepared_run(_maxpool_run), selects=True), prepare=_pool_prepare))
# Average: the float64 sum of grid values is exact and the division by the count is
# correctly rounded, so the cast sees the exact quotient (docs/numerics.md).
register(OpDef("AveragePool", infer=_pool_infer, run=_avgpool_run, macs=_avgpool_macs, check=_pool_check,
               run_fixed=fixed.exact_then_cast(_prepared_run(_avgpool_run)), prepare=_pool_prepare))


# ---- GlobalAveragePool ---------------------------------------------------------------


def _gap_infer(node, ins):
    x = ins[0]
    if len(x.shape) < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {tuple(x.shape)}")
    return [(tuple(int(d) for d in x.shape[:2]) + (1,) * (len(x.shape) - 2), x.dtype)]


def _gap_run(node, arrays):
    x = arrays[0]
    if x.ndim < 3:
        raise ModelError(f"{node}: input X must be (N, C, D1, ...), got shape {x.shape}")
    work = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    axes = tuple(range(2, x.ndim))
    return (np.mean(x, axis=axes, dtype=work, keepdims=True).astype(x.dtype, copy=False),)


def _gap_prepare(node, ins):
    """`OpDef.prepare`: a float32/float64 input's mean as one matrix-vector product
    (reduce.trailing_mean)."""
    x = ins[0]
    if x.dtype not in (np.float32, np.float64) or len(x.shape) < 3 or 0 in x.shape:
        return None
    return trailing_mean(x.shape, x.dtype, 2, _gap_infer(node, ins)[0][0])


def _gap_macs(node, ins, outs):
    # One accumulate per input element (see AveragePool).
    return int(np.prod(ins[0].shape, dtype=np.int64))


register(OpDef("GlobalAveragePool", infer=_gap_infer, run=_gap_run, macs=_gap_macs,
               run_fixed=fixed.exact_then_cast(_gap_run), prepare=_gap_prepare))
