"""Compiled float kernels over the rows of a tensor: Softmax and LayerNormalization on the last
axis, the float reference's (`Graph.run` without a precision) small-tensor case.

A transformer's Softmax and LayerNorm see short rows (32 attention scores, 64 features): numpy's
reductions along a short last axis cost more than the arithmetic (Softmax over 4 x 32 x 32
float32: max, subtract, exp, sum, divide, 22 us; LayerNorm over 32 x 64: 18 us). These kernels
(numba, the `fast` extra) make one pass per row for each of the same operations, in the same
dtype (float32 for float32 inputs, float64 for float64 ones), in the same order within a value:

- Softmax: m = max(row); e_j = exp(x_j - m) (numpy's exp, on the whole array); s = sum of
  e_j (left to right); y_j = e_j / s.
- LayerNorm: mean = sum(x) / n; d_j = x_j - mean; var = sum(d_j^2) / n;
  inv = 1 / sqrt(var + epsilon); y_j = d_j * inv * scale_j + bias_j. The two sums run in
  float64 (compensated, Kahan, for float64 data), the mean and the variance are then rounded to
  the dtype; every other step is in the dtype.

numpy sums pairwise in the dtype where these sum left to right (Softmax) or in float64
(LayerNorm): tests/test_ops_rows_float.py holds each kernel's error against a long-double
evaluation to numpy's own plus a few ulps (docs/numerics.md, "The float plan").
NaN and infinities propagate as in numpy: a row holding one is NaN throughout (Softmax) or
where numpy's is.
"""

from __future__ import annotations

import numpy as np

from conveyor.ops.intdot import njit

if njit is not None:
    # error_model="numpy": a division by zero gives inf or NaN, as numpy's (not an exception);
    # every scalar comes in typed (zero, one, nan, n as the dtype): a Python int or float literal
    # would promote float32 arithmetic to float64
    @njit(cache=True, nogil=True, error_model="numpy")
    def _sub_row_max(x, out, nanv):
        """out = x - max(row of x), a NaN row where the row holds a NaN (numpy's max propagates it)."""
        m, n = x.shape
        for i in range(m):
            mx = x[i, 0]
            nan = mx != mx
            for j in range(1, n):
                v = x[i, j]
                if v != v:
                    nan = True
                if v > mx:
                    mx = v
            if nan:
                mx = nanv
            for j in range(n):
                out[i, j] = x[i, j] - mx

    @njit(cache=True, nogil=True, error_model="numpy")
    def _div_row_sum(e, zero):
        """e /= sum(row of e), the sum left to right in the dtype."""
        m, n = e.shape
        for i in range(m):
            s = zero
            for j in range(n):
                s += e[i, j]
            for j in range(n):
                e[i, j] = e[i, j] / s

    @njit(cache=True, nogil=True, error_model="numpy")
    def _layernorm_rows(x, scale, bias, has_scale, has_bias, eps, out, mean, inv, one, kahan):
        m, n = x.shape
        for i in range(m):
            # float64 sums, compensated (Kahan) for float64 data: at least as accurate as
            # numpy's pairwise sums in the dtype (float32 data: 29 more bits each step)
            s = 0.0
            c = 0.0
            for j in range(n):
                t = x[i, j] - c
                u = s + t
                if kahan:
                    c = (u - s) - t
                s = u
            mean[i] = s / n  # stored in the dtype: the mean numpy subtracts, rounded once
            mu = mean[i]
            q = 0.0
            c = 0.0
            for j in range(n):
                d = x[i, j] - mu
                out[i, j] = d
                t = d * d - c
                u = q + t
                if kahan:
                    c = (u - q) - t
                q = u
            inv[i] = q / n   # the variance in the dtype
            r = np.sqrt(inv[i] + eps)
            r = one / r
            for j in range(n):
                v = out[i, j] * r
                if has_scale:
                    v = v * scale[j]
                if has_bias:
                    v = v + bias[j]
                out[i, j] = v
            inv[i] = r


def available() -> bool:
    return njit is not None


def softmax_prepare(shape, dtype, axis: int, coerce_2d: bool):
    """fn(arrays) -> (y,), or None for an input of another dtype, for Softmax over `axis` of a tensor of static `shape` (`coerce_2d`:
    opset < 13, rows of prod(shape[axis:]) values), or None (no numba, not a float dtype, or the
    axis is not the last one of opset 13)."""
    if njit is None or np.dtype(dtype) not in (np.float32, np.float64) or not shape or 0 in shape:
        return None
    if not coerce_2d and axis != len(shape) - 1:
        return None
    n = int(np.prod(shape[axis:], dtype=np.int64))
    zero = np.dtype(dtype).type(0)

    def run(args):
        x = args[0]
        if x.dtype != zero.dtype:
            return None
        rows = np.ascontiguousarray(x).reshape(-1, n)
        out = np.empty(rows.shape, rows.dtype)
        _sub_row_max(rows, out, zero.dtype.type(np.nan))
        np.exp(out, out=out)  # numpy's own (SIMD) exp, as its kernel: the same e values
        _div_row_sum(out, zero)
        return (out.reshape(x.shape),)

    return run


def layernorm_prepare(shape, dtype, axis: int, scale, bias, epsilon: float):
    """fn(arrays) -> (y, mean, inv_std), or None for an input of another dtype, for LayerNormalization over axes axis.. of a tensor of
    static `shape`, constant `scale` / `bias` (None: absent), or None where the numpy kernel
    should run (no numba, not float32/float64)."""
    dtype = np.dtype(dtype)
    if njit is None or dtype not in (np.float32, np.float64) or not shape or 0 in shape:
        return None
    norm = tuple(shape[axis:])
    n = int(np.prod(norm, dtype=np.int64))
    stat = tuple(shape[:axis]) + (1,) * (len(shape) - axis)
    sc = np.ascontiguousarray(np.broadcast_to(np.asarray(scale, dtype), norm).reshape(-1)) if scale is not None \
        else np.zeros(1, dtype)
    bs = np.ascontiguousarray(np.broadcast_to(np.asarray(bias, dtype), norm).reshape(-1)) if bias is not None \
        else np.zeros(1, dtype)
    eps = dtype.type(epsilon)

    def run(args):
        x = args[0]
        if x.dtype != dtype:
            return None
        rows = np.ascontiguousarray(x).reshape(-1, n)
        out = np.empty(rows.shape, dtype)
        mean, inv = np.empty(rows.shape[0], dtype), np.empty(rows.shape[0], dtype)
        _layernorm_rows(rows, sc, bs, scale is not None, bias is not None, eps, out, mean, inv, dtype.type(1),
                        dtype == np.float64)
        return (out.reshape(x.shape), mean.reshape(stat).astype(np.float32, copy=False),
                inv.reshape(stat).astype(np.float32, copy=False))

    return run
