"""The compiled float row kernels (conveyor/ops/rows_float.py: Softmax and LayerNormalization
over the last axis) against the numpy kernels they replace in `Graph.run`'s plan: float32 and
float64, odd sizes, scale/bias present or not, no farther from a float64 evaluation than numpy's
kernels are (plus a few ulps); NaN and infinities where numpy has them."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import ops
from conveyor.graph.tensor import Node
from conveyor.ops import rows_float
from conveyor.ops.registry import ValueInfo

pytestmark = pytest.mark.skipif(not rows_float.available(), reason="numba (the `fast` extra) is not installed")


L = np.longdouble  # the references' precision (x86: 64-bit significands, 11 bits more than float64)


def _softmax_ref(x, axis, opset):
    a = x.astype(L)
    if opset < 13:
        a = a.reshape(int(np.prod(x.shape[:axis % x.ndim])), -1)
        axis = 1
    with np.errstate(invalid="ignore"):
        e = np.exp(a - np.max(a, axis=axis, keepdims=True))
        return (e / np.sum(e, axis=axis, keepdims=True)).reshape(x.shape)


def _layernorm_ref(x, axis, params):
    a = x.astype(L)
    axes = tuple(range(axis % x.ndim, x.ndim))
    mean = a.mean(axis=axes, keepdims=True)
    d = a - mean
    inv = 1 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + L(x.dtype.type(1e-5)))
    y = d * inv
    for p, op in zip(params, (np.multiply, np.add)):
        y = op(y, p.astype(L))
    return y, mean, inv


def _close(got, want, ref, what):
    """`got` (the kernel) errs from `ref` (the op in long double on the same inputs) by at most what
    `want` (numpy's kernel) errs plus 4 ulps of |ref| + rms(ref) (numpy sums pairwise, the
    kernels left to right or in float64; one exp ulp): no less accurate than numpy's."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what)
    assert got.dtype == want.dtype and got.shape == want.shape, what
    ok = ~np.isnan(want)
    eps = np.finfo(want.dtype).eps
    r = ref[ok]
    scale = np.abs(r) + (np.sqrt(np.mean(r * r)) if r.size else 0.0)
    numpy_err = np.max(np.abs(want[ok] - r) / scale, initial=0.0)
    err = np.abs(got[ok] - r) / scale
    assert np.all(err <= numpy_err + 4 * eps), (what, float(np.max(err, initial=0.0)), float(numpy_err))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_equal_numpy(dtype):
    rng = np.random.default_rng(1)
    opdef = ops.get("Softmax")
    for shape, opset, axis in (((4, 32, 32), 13, -1), ((3, 7), 13, 1), ((2, 5, 3, 9), 11, 2), ((1, 97), 13, -1),
                               ((6, 1), 13, -1)):
        node = Node("s", "Softmax", ("x",), ("y",), {"axis": axis}, opset)
        fn = opdef.prepare(node, [ValueInfo(shape, np.dtype(dtype))])
        assert fn is not None
        for scale in (1.0, 30.0):
            x = (rng.standard_normal(shape) * scale).astype(dtype)
            ref = _softmax_ref(x, axis, opset)
            _close(fn([x])[0], opdef.run(node, [x])[0], ref, f"{shape} {scale}")
            xt = np.ascontiguousarray(np.swapaxes(x, 0, -1)).swapaxes(0, -1)  # a strided view
            _close(fn([xt])[0], opdef.run(node, [xt])[0], ref, f"{shape} strided")
        x = rng.standard_normal(shape).astype(dtype)
        x.reshape(-1)[0], x.reshape(-1)[-1] = np.nan, np.inf  # a NaN row, an inf row
        _close(fn([x])[0], opdef.run(node, [x])[0], _softmax_ref(x, axis, opset), f"{shape} nan/inf")
    node = Node("s", "Softmax", ("x",), ("y",), {"axis": 0}, 13)
    assert opdef.prepare(node, [ValueInfo((4, 3), np.dtype(np.float32))]) is None  # not the last axis: numpy


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layernorm_rows_equal_numpy(dtype):
    rng = np.random.default_rng(2)
    opdef = ops.get("LayerNormalization")
    for shape, axis, parts in (((1, 32, 64), -1, 3), ((5, 7), 1, 1), ((2, 3, 4, 5), 2, 2), ((3, 33), -1, 3)):
        norm = shape[axis % len(shape):]
        scale = rng.standard_normal(norm).astype(dtype)
        bias = rng.standard_normal(norm[-1:]).astype(dtype)  # broadcasts over the normalised axes
        arrays = [None, scale, bias][:parts]
        node = Node("n", "LayerNormalization", ("x", "s", "b")[:parts], ("y", "m", "i"),
                    {"axis": axis, "epsilon": 1e-5}, 17)
        ins = [ValueInfo(shape, np.dtype(dtype))] + [ValueInfo(a.shape, a.dtype, a) for a in arrays[1:]]
        fn = opdef.prepare(node, ins)
        assert fn is not None
        for loc in (0.0, 100.0):
            x = (rng.standard_normal(shape) * 3 + loc).astype(dtype)
            got, want = fn([x] + arrays[1:]), opdef.run(node, [x] + arrays[1:])
            ref = _layernorm_ref(x, axis, arrays[1:])
            for g, w, r, what in zip(got, want, ref, ("y", "mean", "inv_std")):
                _close(g, w, r, f"{shape} {loc} {what}")
        x = rng.standard_normal(shape).astype(dtype)
        x.reshape(-1)[0] = np.nan
        ref = _layernorm_ref(x, axis, arrays[1:])[0]
        _close(fn([x] + arrays[1:])[0], opdef.run(node, [x] + arrays[1:])[0], ref, "nan")
    node = Node("n", "LayerNormalization", ("x", "s"), ("y",), {"axis": -1}, 17)
    assert opdef.prepare(node, [ValueInfo((2, 4), np.dtype(np.float32)), ValueInfo((4,), np.dtype(np.float32))]) \
        is None  # a run-time scale: numpy
