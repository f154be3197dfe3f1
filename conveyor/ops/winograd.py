"""Winograd F(2x2, 3x3) convolution (Lavin and Gray, "Fast Algorithms for Convolutional Neural
Networks", CVPR 2016, section 4.1): unit-stride, undilated, one-group 3x3 Convs.

Every 2x2 block of outputs (a tile) of output channel m is

    Y = A^T [ sum_c (G g_mc G^T) . (B^T d_c B) ] A

with d_c the 4x4 input patch (stride 2) of channel c, g_mc the 3x3 filter, `.` the elementwise
product and (the paper's matrices)

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]].

The sum over c is, per position (i, j) of the 4x4 transformed tile, one GEMM of the transformed
weights U_ij (M, C) by the transformed inputs V_ij (C, tiles): 16 GEMMs (one batched
`np.matmul`) with 16 products per 4 outputs instead of 36 (2.25x fewer multiplications).
The transforms are additions only (numba kernels `_transform_in`/`_transform_out`; a numpy path
without numba does the same operations).

Two uses (`conveyor.ops.conv_float.ConvPlan` picks them):

- the float reference, float32 throughout (as the direct methods): V and the GEMMs in float32,
  U = G g G^T computed in float64 and rounded once to float32. Its error stays within the float32
  accumulation bound of the direct sum (docs/numerics.md "Conv, the float reference").
- the emulator's exact sums (float64 on grid values): exact when the caller has proved
  `EXACT_BITS` bits of headroom below 2^53 for the direct sum (derivation in docs/numerics.md,
  "the exact path"; summary: with |x| <= X on a 2^-fx grid and |w| <= W on 2^-fw, the direct sum
  of K = 9 C products is bounded by K X W on the 2^-(fx+fw) grid. U is on 2^-(fw+2) (G's halves)
  with |U_ij| <= a_i a_j W, a = (1, 3/2, 3/2, 1); V on 2^-fx with |V_ij| <= 4 X; every partial
  sum of the GEMM is a multiple of 2^-(fx+fw+2) below C max_ij a_i a_j 4 X W = 9 C X W, and every
  partial sum of the output transform (at most 9 of the 16 M_ij, rows/columns {0,1,2} or
  {1,2,3}, each a sum a_i = 4) below 16 * 4 C X W = (64/9) K X W. In units of 2^-(fx+fw+2) that
  is (256/9) K X W 2^(fx+fw), i.e. log2(256/9) = 4.83 bits more than the direct sum needs).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from conveyor.ops.intdot import njit

#: G of F(2x2, 3x3) (Lavin and Gray 2016, section 4.1)
G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])

#: Growth of Winograd's intermediates over the direct sum's bound, in units of the direct sum's
#: grid: x4 for the two extra fractional bits of U (G's halves) times 64/9 for the magnitudes
#: (module docstring). The exact float64 path needs bound * 2^units * EXACT_GROWTH < 2^53.
EXACT_GROWTH = 256.0 / 9.0

#: Bits of headroom below 2^53 (for the direct sum's bound) that the exact path needs: the next
#: integer above log2(EXACT_GROWTH) = 4.83, so that a rounded log2 cannot tip the decision.
EXACT_BITS = math.ceil(math.log2(EXACT_GROWTH))


def applies(geo, group: int) -> bool:
    """Whether the Conv of windows `geo` (conv.Windows) and `group` is one Winograd computes:
    2-D, 3x3, unit stride, no dilation, one group."""
    return (group == 1 and tuple(geo.kernel) == (3, 3) and tuple(geo.strides) == (1, 1)
            and tuple(geo.dilations) == (1, 1))


def tiles(geo) -> tuple[int, int]:
    """2x2 output tiles along each axis (an odd output size: the last tile cut)."""
    return -(-geo.out[0] // 2), -(-geo.out[1] // 2)


def transform_weights(w: np.ndarray, dtype) -> np.ndarray:
    """U = G g G^T for every (output, input) channel pair, as (16, M, C) in `dtype`: computed in
    float64 (exact for weights on a grid: G's entries are 0, +-1/2, +-1) and rounded once."""
    u = np.einsum("ik,mckl,jl->ijmc", G, np.asarray(w, dtype=np.float64), G)
    return np.ascontiguousarray(u.reshape(16, w.shape[0], w.shape[1]), dtype=dtype)


if njit is not None:
    @njit(cache=True, nogil=True)
    def _transform_in(xp, v, th, tw):
        """V = B^T d B of every 4x4 tile (stride 2) of the padded input xp (N, C, 2 TH + 2,
        2 TW + 2) into v (16, C, N * TH * TW), in xp's dtype. Per row of tiles, B^T's row
        combinations of the 4 input rows first (whole rows, contiguous), then B's column
        combinations per tile (strided views and per-row slices measured 1.4-4x slower)."""
        nb, c_in, _, wp = xp.shape
        r = np.empty((4, wp), dtype=xp.dtype)
        for n in range(nb):
            for c in range(c_in):
                for ty in range(th):
                    d0 = xp[n, c, 2 * ty]
                    d1 = xp[n, c, 2 * ty + 1]
                    d2 = xp[n, c, 2 * ty + 2]
                    d3 = xp[n, c, 2 * ty + 3]
                    for j in range(wp):
                        r[0, j] = d0[j] - d2[j]
                        r[1, j] = d1[j] + d2[j]
                        r[2, j] = d2[j] - d1[j]
                        r[3, j] = d1[j] - d3[j]
                    t0 = (n * th + ty) * tw
                    for i in range(4):
                        ri = r[i]
                        v0 = v[4 * i, c]
                        v1 = v[4 * i + 1, c]
                        v2 = v[4 * i + 2, c]
                        v3 = v[4 * i + 3, c]
                        for tx in range(tw):
                            a = ri[2 * tx]
                            b = ri[2 * tx + 1]
                            e = ri[2 * tx + 2]
                            f = ri[2 * tx + 3]
                            v0[t0 + tx] = a - e
                            v1[t0 + tx] = b + e
                            v2[t0 + tx] = e - b
                            v3[t0 + tx] = b - f

    @njit(cache=True, nogil=True)
    def _transform_out(p, y, th, tw):
        """Y = A^T m A of every tile's sums p (16, M, N * TH * TW) into y (N, M, OH, OW) (tiles
        cut at its edges): rows of A^T (1, 1, 1, 0) and (0, 1, -1, -1), then the same on the
        columns, in p's dtype."""
        nb, m_out, oh, ow = y.shape
        for n in range(nb):
            for m in range(m_out):
                for ty in range(th):
                    t0 = (n * th + ty) * tw
                    for tx in range(tw):
                        t = t0 + tx
                        s00 = p[0, m, t] + p[4, m, t] + p[8, m, t]
                        s01 = p[1, m, t] + p[5, m, t] + p[9, m, t]
                        s02 = p[2, m, t] + p[6, m, t] + p[10, m, t]
                        s03 = p[3, m, t] + p[7, m, t] + p[11, m, t]
                        s10 = p[4, m, t] - p[8, m, t] - p[12, m, t]
                        s11 = p[5, m, t] - p[9, m, t] - p[13, m, t]
                        s12 = p[6, m, t] - p[10, m, t] - p[14, m, t]
                        s13 = p[7, m, t] - p[11, m, t] - p[15, m, t]
                        y0, x0 = 2 * ty, 2 * tx
                        y[n, m, y0, x0] = s00 + s01 + s02
                        if x0 + 1 < ow:
                            y[n, m, y0, x0 + 1] = s01 - s02 - s03
                        if y0 + 1 < oh:
                            y[n, m, y0 + 1, x0] = s10 + s11 + s12
                            if x0 + 1 < ow:
                                y[n, m, y0 + 1, x0 + 1] = s11 - s12 - s13
else:  # pragma: no cover - depends on the install
    _transform_in = _transform_out = None


def _transform_in_numpy(xp, th, tw):
    """`_transform_in` without numba: the same operations on whole arrays."""
    n, c = xp.shape[:2]
    rows = np.empty((4, n, c, th, 2 * tw + 2), dtype=xp.dtype)  # B^T d, rows of tiles stride 2
    d = [xp[:, :, i:i + 2 * th:2] for i in range(4)]
    np.subtract(d[0], d[2], out=rows[0])
    np.add(d[1], d[2], out=rows[1])
    np.subtract(d[2], d[1], out=rows[2])
    np.subtract(d[1], d[3], out=rows[3])
    v = np.empty((4, 4, c, n, th, tw), dtype=xp.dtype)
    col = [rows[..., j:j + 2 * tw:2].transpose(0, 2, 1, 3, 4) for j in range(4)]  # (4, C, N, TH, TW)
    np.subtract(col[0], col[2], out=v[:, 0])
    np.add(col[1], col[2], out=v[:, 1])
    np.subtract(col[2], col[1], out=v[:, 2])
    np.subtract(col[1], col[3], out=v[:, 3])
    return v.reshape(16, c, n * th * tw)


def _transform_out_numpy(p, y, th, tw):
    """`_transform_out` without numba: the same operations on whole arrays."""
    n, m, oh, ow = y.shape
    p = p.reshape(4, 4, m, n, th, tw)
    s0 = p[0] + p[1] + p[2]  # rows of A^T: (1, 1, 1, 0), (0, 1, -1, -1); (4, M, N, TH, TW)
    s1 = p[1] - p[2] - p[3]
    out = np.empty((2, 2, m, n, th, tw), dtype=p.dtype)
    for i, s in enumerate((s0, s1)):
        out[i, 0] = s[0] + s[1] + s[2]
        out[i, 1] = s[1] - s[2] - s[3]
    full = out.transpose(3, 2, 4, 0, 5, 1).reshape(n, m, 2 * th, 2 * tw)
    y[...] = full[:, :, :oh, :ow]


class Winograd:
    """F(2x2, 3x3) of inputs (N, C, H, W) of one shape by fixed weights w (M, C, 3, 3) over the
    windows `geo` (padding any; see `applies`), in `dtype` (float32: the float reference;
    float64: exact on grid values within `EXACT_BITS` of headroom). No bias."""

    def __init__(self, x_shape, w: np.ndarray, geo, dtype):
        self.dtype = np.dtype(dtype)
        self.n, self.c = int(x_shape[0]), int(x_shape[1])
        self.m = int(w.shape[0])
        self.geo = geo
        self.th, self.tw = tiles(geo)
        self.u = transform_weights(w, self.dtype)
        self.out_shape = (self.n, self.m) + tuple(geo.out)
        # scratch for V and the GEMMs' sums, kept between calls: a fresh megabyte-sized array
        # per call costs its page faults (measured: 64 channels at 32x32, float32, 0.5 ms a call
        # with the arrays held against up to 1.7 ms allocated anew while other arrays were alive);
        # a call that finds them in use (another thread) allocates its own
        self._lock = threading.Lock()
        self._v = self._p = None

    def _padded(self, x):
        """x zero-padded to the tiles' extent (N, C, 2 TH + 2, 2 TW + 2)."""
        geo = self.geo
        hp, wp = 2 * self.th + 2, 2 * self.tw + 2
        xp = np.zeros((self.n, self.c, hp, wp), dtype=self.dtype)
        into, src = [], []
        for b, e, sp in zip(geo.begin, (hp, wp), x.shape[2:]):
            k = max(0, min(sp, e - b))
            into.append(slice(b, b + k))
            src.append(slice(0, k))
        xp[(Ellipsis,) + tuple(into)] = x[(Ellipsis,) + tuple(src)]
        return xp

    def __call__(self, x: np.ndarray, numba: bool = True) -> np.ndarray:
        own = self._lock.acquire(blocking=False)
        try:
            return self._run(x, numba, own)
        finally:
            if own:
                self._lock.release()

    def _run(self, x, numba: bool, own: bool) -> np.ndarray:
        th, tw = self.th, self.tw
        cols = self.n * th * tw
        if own and self._v is None:
            self._v = np.empty((16, self.c, cols), dtype=self.dtype)
            self._p = np.empty((16, self.m, cols), dtype=self.dtype)
        xp = self._padded(x)
        use = numba and _transform_in is not None
        if use:
            v = self._v if own else np.empty((16, self.c, cols), dtype=self.dtype)
            _transform_in(xp, v, th, tw)
        else:
            v = _transform_in_numpy(xp, th, tw)
        # the 16 GEMMs (M, C) x (C, tiles): (16, M, N * TH * TW)
        p = np.matmul(self.u, v, out=self._p) if own else np.matmul(self.u, v)
        y = np.empty(self.out_shape, dtype=self.dtype)
        if use:
            _transform_out(p, y, th, tw)
        else:
            _transform_out_numpy(p, y, th, tw)
        return y
