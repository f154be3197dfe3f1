"""Compiled float kernels of 2-D MaxPool and AveragePool (the float reference's `prepare`d
kernels; `conveyor.ops.pool` keeps the numpy ones for everything else, the emulator included).

The numpy kernels (`pool._separable`) pad the input to the windows' extent and then make one
strided pass per kernel tap along each axis: on the small planes of a 64 px model that is ~10
numpy calls of a few microseconds each plus a padded copy, 100-160 us per pool (squeezenet's
three 3x3/2 MaxPools 0.37 ms, onnxruntime's 0.02; densenet's 2x2/2 AveragePools 0.2 ms each).
These do the same reduction in one compiled pass per plane, row by row:

- per output row, the rows of its window that lie inside the input are reduced into a row
  buffer (unit stride: vectorises), then per kernel column the buffer's strided values are
  reduced into the outputs whose window reads that column inside the input;
- MaxPool: the maximum of the window's values inside the input (the padding's -inf never
  wins; a window with no value inside the input is -inf, as the padded numpy path gives), a
  NaN propagating as np.maximum propagates it: the same values as `pool._maxpool_run`;
- AveragePool: the sum of the window's values inside the input, rows in tap order, then columns
  in tap order (`pool._separable`'s order; the padding's zeros that path adds change no sum but
  the sign of a zero), in the input's float dtype, divided by the window's count (as
  `pool._avgpool_run` counts it; a window with nothing to count is 0): the same values.

Without numba `available()` is False and the pools keep their numpy kernels.
"""

from __future__ import annotations

import numpy as np

from conveyor.ops.intdot import njit

if njit is not None:
    from numba import uint64


if njit is not None:
    @njit(inline="always")
    def _max(v, r):
        """np.maximum of two floats: the larger, a NaN in either wins (no branch: vectorises)."""
        return v if (v > r) | (v != v) else r

    @njit(cache=True, nogil=True)
    def _pad_planes(x, xp, ph, pw, fill):
        """xp (P, Hp, Wp) gets x (P, H, W) at (ph, pw), `fill` elsewhere (cropped past Hp, Wp)."""
        planes, h, w = x.shape
        _, hp, wp = xp.shape
        for p in range(planes):
            for r in range(hp):
                iy = r - ph
                dst = xp[p, r]
                if iy < 0 or iy >= h:
                    for j in range(wp):
                        dst[j] = fill
                    continue
                src = x[p, iy]
                k = min(w, wp - pw)
                for j in range(pw):
                    dst[j] = fill
                mid = dst[pw:pw + k]
                for j in range(k):
                    mid[j] = src[j]
                for j in range(pw + k, wp):
                    dst[j] = fill

    def _make_pool2d(is_max):
        @njit(cache=True, nogil=True)
        def pool2d(xp, y, count, kh, kw, sh, sw, dh, dw, v, corner):
            """xp (P, Hp, Wp) the padded input planes (padding -inf for max, 0 for the sums; the
            input itself when nothing is padded), y (P, OH, OW) outputs, count (OH * OW) the
            divisors of an average (unused by max); v flat scratch, corner (OH * OW) each
            window's top-left offset in a padded plane.

            Over the padded planes flattened end to end (long unit-stride loops: a 64 px
            model's rows, 4-32 values, are too short to vectorise): v[i] = op over row taps of
            xp[i + t * dh * Wp] (rows in tap order), then y at a window = op over column taps
            of v[corner + t * dw] (columns in tap order), divided by the count. Values of v
            past a plane's end mix planes but are read by no window. Indices are loop counters
            or unsigned: numba then drops the negative-index wraparound that stops
            vectorisation."""
            planes, hp, wp = xp.shape
            oh, ow = y.shape[1], y.shape[2]
            flat = xp.reshape(planes * hp * wp)
            lv = v.shape[0]
            rs = dh * wp
            s0 = flat[:lv]
            if kh == 1:
                for i in range(lv):
                    v[i] = s0[i]
            else:
                s1 = flat[rs:rs + lv]
                if kh == 2 or kh == 3:
                    s2 = flat[2 * rs:2 * rs + lv] if kh == 3 else s1
                    if is_max:
                        for i in range(lv):
                            v[i] = _max(s2[i], _max(s1[i], s0[i]))
                    elif kh == 3:
                        for i in range(lv):
                            v[i] = s0[i] + s1[i] + s2[i]
                    else:
                        for i in range(lv):
                            v[i] = s0[i] + s1[i]
                else:
                    for i in range(lv):
                        v[i] = s0[i]
                    for t in range(1, kh):
                        seg = flat[t * rs:t * rs + lv]
                        if is_max:
                            for i in range(lv):
                                v[i] = _max(seg[i], v[i])
                        else:
                            for i in range(lv):
                                v[i] += seg[i]
            n_out = oh * ow
            out = y.reshape(planes * n_out)
            for p in range(planes):
                o = out[p * n_out:(p + 1) * n_out]
                vp = v[p * hp * wp:]
                for k in range(n_out):
                    o[k] = vp[uint64(corner[k])]
                for t in range(1, kw):
                    vt = vp[t * dw:]
                    if is_max:
                        for k in range(n_out):
                            o[k] = _max(vt[uint64(corner[k])], o[k])
                    else:
                        for k in range(n_out):
                            o[k] += vt[uint64(corner[k])]
                if not is_max:
                    for k in range(n_out):
                        c = count[k]
                        o[k] = o[k] / c if c > 0 else 0.0
        return pool2d

    _max2d = _make_pool2d(True)
    _avg2d = _make_pool2d(False)
else:  # pragma: no cover - depends on the install
    _max2d = _avg2d = _pad_planes = None


def available() -> bool:
    return _max2d is not None


class Pool2d:
    """A 2-D MaxPool or AveragePool of inputs (N, C, H, W) of one shape and float dtype over the
    windows `geo` (conv.Windows); `count` (OH, OW) the average's divisors in that dtype."""

    def __init__(self, x_shape, dtype, geo, is_max: bool, count: np.ndarray | None = None):
        self.dtype = np.dtype(dtype)
        n, c, h, w = (int(d) for d in x_shape)
        self.planes, self.h, self.w = n * c, h, w
        self.out_shape = (n, c) + tuple(int(o) for o in geo.out)
        self.geo, self.is_max = geo, bool(is_max)
        if count is None:
            count = np.ones(geo.out, self.dtype)
        self.count = np.ascontiguousarray(np.broadcast_to(np.asarray(count, self.dtype), tuple(geo.out))).reshape(-1)
        # the padded planes: the windows' extent, and at least the input where they stop short
        # (rows and columns past the extent are then read by no window)
        self.padded = geo.begin[0] or geo.begin[1] or geo.extent[0] > h or geo.extent[1] > w
        hp, wp = (geo.extent[0], geo.extent[1]) if self.padded else (h, w)
        self.hp, self.wp = hp, wp
        self.lv = self.planes * hp * wp - (geo.kernel[0] - 1) * geo.dilations[0] * wp
        oy, ox = np.indices(tuple(geo.out)).reshape(2, -1)
        self.corner = np.ascontiguousarray((oy * geo.strides[0] * wp + ox * geo.strides[1]).astype(np.int64))
        self.kernel = (_max2d if self.is_max else _avg2d) if available() else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        g = self.geo
        x = np.ascontiguousarray(x, dtype=self.dtype).reshape(self.planes, self.h, self.w)
        xp = np.empty((self.planes, self.hp, self.wp), self.dtype) if self.padded else x
        y = np.empty((self.planes,) + self.out_shape[2:], dtype=self.dtype)
        if self.padded:
            _pad_planes(x, xp, g.begin[0], g.begin[1], -np.inf if self.is_max else 0.0)
        self.kernel(xp, y, self.count, g.kernel[0], g.kernel[1], g.strides[0], g.strides[1],
                    g.dilations[0], g.dilations[1], np.empty(self.lv, self.dtype), self.corner)
        return y.reshape(self.out_shape)
