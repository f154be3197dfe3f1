"""Compiled elementwise float kernels: the in-place Relu and Clip of the fused float plan
(conveyor.graph.float_plan) and BatchNormalization's per-channel a * x + b (its prepared
kernel, conveyor.ops.norm), the values of the numpy calls they replace, bit for bit:

- Relu: np.maximum(v, 0) is v where v > 0 or v is NaN, else +0.0 (so -0.0 becomes +0.0);
- Clip: np.clip(v, lo, hi) is lo where v < lo, hi where v > hi, else v (NaN and -0.0 stay);
- BatchNormalization: x * a[c], rounded, plus b[c], rounded (two roundings, no fused
  multiply-add: numba contracts nothing without fastmath), as np.multiply then +=; one pass
  instead of two and an array (DenseNet's 58 BatchNormalizations ahead of its convs).

np.maximum of an array and a scalar does not vectorise in this numpy (measured, numpy 2.4, one
core: 34 us for 96 x 32 x 32 float32 values, against 7 us for two arrays and 5 us for np.add
with a scalar; np.clip 15 us); a Relu after a Conv runs in place on every ResNet/DenseNet/
SqueezeNet Conv output, a Clip (ReLU6) on MobileNetV2's. The compiled loops take 2-4 us there.
Arrays that are not C-contiguous float32/float64, and installs without numba, keep numpy.
"""

from __future__ import annotations

import numpy as np

from conveyor.ops.intdot import njit

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

if njit is not None:
    @njit(cache=True, nogil=True)
    def _relu_flat(v):
        zero = 0.0
        for i in range(v.shape[0]):
            a = v[i]
            v[i] = a if (a > 0) | (a != a) else zero

    @njit(cache=True, nogil=True)
    def _clip_flat(v, lo, hi):
        for i in range(v.shape[0]):
            a = v[i]
            v[i] = lo if a < lo else (hi if a > hi else a)
    @njit(cache=True, nogil=True)
    def _affine(x, a, b, y):
        """y[n, c, s] = x[n, c, s] * a[c] + b[c] (y may be x)."""
        n_items, c, size = x.shape
        for i in range(n_items):
            for j in range(c):
                aj = a[j]
                bj = b[j]
                for k in range(size):
                    y[i, j, k] = x[i, j, k] * aj + bj
    @njit(cache=True, nogil=True)
    def _bias_act(y, b, act, lo, hi):
        """y[n, m, s] = act(y[n, m, s] + b[m]) in place (b empty: no bias); act 0: none, 1:
        Relu, 2: Clip(lo, hi). The sum rounded, then the activation: `ConvPlan`'s += bias
        then `relu_into`/`clip_into`, one pass instead of two."""
        n_items, m, size = y.shape
        has_b = b.shape[0] > 0
        for i in range(n_items):
            for j in range(m):
                bj = b[j] if has_b else y.dtype.type(0)
                for k in range(size):
                    v = y[i, j, k] + bj if has_b else y[i, j, k]
                    if act == 1:
                        v = v if (v > 0) | (v != v) else 0.0
                    elif act == 2:
                        v = lo if v < lo else (hi if v > hi else v)
                    y[i, j, k] = v
else:  # pragma: no cover - depends on the install
    _relu_flat = _clip_flat = _affine = _bias_act = None


def _compiled(v) -> bool:
    return _relu_flat is not None and v.dtype in _FLOATS and v.flags.c_contiguous and v.flags.writeable


def relu_into(v: np.ndarray) -> np.ndarray:
    """np.maximum(v, 0, out=v)."""
    if _compiled(v):
        _relu_flat(v.reshape(-1))
        return v
    return np.maximum(v, np.zeros((), v.dtype), out=v)


def clip_into(lo, hi):
    """v -> np.clip(v, lo, hi, out=v) for constant bounds lo <= hi."""
    lo_a, hi_a = np.asarray(lo), np.asarray(hi)
    scalar = lo_a.size == 1 and hi_a.size == 1

    def run(v):
        if scalar and _compiled(v):
            _clip_flat(v.reshape(-1), v.dtype.type(lo_a.reshape(())), v.dtype.type(hi_a.reshape(())))
            return v
        return np.clip(v, np.asarray(lo, v.dtype), np.asarray(hi, v.dtype), out=v)
    return run


def channel_affine(a: np.ndarray, b: np.ndarray):
    """(run, into) for y = x * a + b with a, b (C,) over axis 1 of an (N, C, ...) array of a's
    float dtype: `run(x)` makes y, `into(v)` writes it into v; numpy (np.multiply, then +=) for
    what the compiled loop does not take."""
    a = np.ascontiguousarray(a)
    b = np.ascontiguousarray(b)
    c = a.size
    shape = (1, c)

    def fits(x):
        return (_affine is not None and x.dtype == a.dtype and x.dtype in _FLOATS and x.ndim >= 2
                and x.shape[1] == c and x.flags.c_contiguous)

    def numpy_run(x, out=None):
        sh = shape + (1,) * (x.ndim - 2)
        y = np.multiply(x, a.reshape(sh), dtype=a.dtype, out=out)
        y += b.reshape(sh)
        return y

    def run(x):
        if not fits(x):
            return numpy_run(x)
        y = np.empty_like(x)
        _affine(x.reshape(x.shape[0], c, -1), a, b, y.reshape(x.shape[0], c, -1))
        return y

    def into(v):
        if not (fits(v) and v.flags.writeable):
            return numpy_run(v, out=v)
        flat = v.reshape(v.shape[0], c, -1)
        _affine(flat, a, b, flat)
        return v
    return run, into


def bias_act(y: np.ndarray, bias: np.ndarray | None, act: int, lo: float = 0.0, hi: float = 0.0) -> bool:
    """y += bias (per axis-1 channel), then act (1: Relu, 2: Clip(lo, hi)) in place, in one
    compiled pass; False (nothing done) when y is not a C-contiguous float32/float64 array."""
    if not _compiled(y) or y.ndim < 2:
        return False
    b = np.zeros(0, y.dtype) if bias is None else np.ascontiguousarray(bias, y.dtype).reshape(-1)
    if b.size not in (0, y.shape[1]):
        return False
    _bias_act(y.reshape(y.shape[0], y.shape[1], -1), b, act, y.dtype.type(lo), y.dtype.type(hi))
    return True
