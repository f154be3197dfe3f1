"""The float kernel of Conv (and of ConvTranspose, a Conv of its stretched input), planned once.

`ConvPlan` is built from the input's static shape and dtype and the (constant) weights: it
picks a method and lays the weights out for it once, so that a `Graph.run` pays only the
arithmetic (`conveyor.ops.conv.conv_nd` builds one per call; `Graph.run` keeps one per node).

Methods and arithmetic: every method computes in the work dtype (`work_dtype`: float32 for
float16/float32 inputs, as onnxruntime computes a float32 Conv; float64 inputs, e.g.
`Graph.run(x, dtype=np.float64)`, in float64 throughout):

- pointwise (1x1 kernel, any stride, no padding): per group one GEMM of the weights (Mg, Cg) by
  the input (Cg, positions) as it lies (strided positions gathered first): a 1x1 Conv is a
  MatMul, computed as conveyor's MatMul and Gemm are (and as onnxruntime does);
- depthwise (one input channel per group, any channel multiplier): per kernel tap one
  multiply-add of a shifted window by a weight per channel, taps in row-major order (numba:
  `_depthwise_2d`, the same operations in the same order as the numpy loop, so the same bits);
- everything else (k x k, strided, dilated, grouped, N-d): im2col + one GEMM per group (one
  batched `np.matmul`), rows (Cg, *kernel) as W flattens, in chunks of output rows that stay
  below `_COLS_BYTES`. 1-D and 2-D columns are copied by numba (`_im2col_2d`, padding read as
  zeros, no padded copy); otherwise the padded input is viewed as sliding windows
  (`numpy.lib.stride_tricks.sliding_window_view`), strided and dilated by slicing the view.
  Both fill the same matrix, so the GEMM and its bits are the same.

The bias is added after the sums, in the work dtype. float32 sums over up to 4,608 taps (vgg's
3x3x512) differ from onnxruntime's (MLAS sums in another order, with FMAs) by a float32
accumulation error, not by a rounding of the result: tests that compare the two use the bound
of docs/numerics.md ("Conv, the float reference"), not a float64-tight tolerance.

(docs/numerics.md "Convolution, float" gives the measured distance from onnxruntime.)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from conveyor.ops.intdot import njit


def strided_windows(xp: np.ndarray, geo, n: int, group: int, cg: int) -> np.ndarray:
    """The padded input's windows as (N, G, Cg, *out, *kernel): positions strided, taps
    dilated, by slicing a sliding-window view (nothing is copied before the reshape)."""
    nd = len(geo.out)
    eff = tuple((k - 1) * d + 1 for k, d in zip(geo.kernel, geo.dilations))
    win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + nd)))
    win = win[(slice(None), slice(None))
              + tuple(slice(None, None, s) for s in geo.strides)
              + tuple(slice(None, None, d) for d in geo.dilations)]
    return win.reshape((n, group, cg) + geo.out + geo.kernel)

#: im2col chunks are cut so that one column block stays below this many bytes.
_COLS_BYTES = 64 << 20

if njit is not None:
    @njit(cache=True, nogil=True)
    def _depthwise_2d(x, w, out, kh, kw, sh, sw, dh, dw, ph, pw, mg):
        """Depthwise 2-D convolution of x (N, C, H, W) by w (M, KH * KW) into out (N, M, OH, OW),
        output channel m reading input channel m // mg, padding read as zeros. Each output is
        0 plus, tap by tap in row-major order, window value times weight, each product and sum
        rounded to out's dtype: the numpy path's operations (it adds the padding's zero
        products too, which changes no value), so the same bits."""
        nb, m_out, oh, ow = out.shape
        h, wd = x.shape[2], x.shape[3]
        for n in range(nb):
            for m in range(m_out):
                xc = x[n, m // mg]
                o = out[n, m]
                for oy in range(oh):
                    row = o[oy]
                    for ox in range(ow):
                        row[ox] = 0
                    for i in range(kh):
                        iy = oy * sh + i * dh - ph
                        if iy < 0 or iy >= h:
                            continue
                        xr = xc[iy]
                        for j in range(kw):
                            wk = w[m, i * kw + j]
                            off = j * dw - pw
                            lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                            hi = 0 if off >= wd else min(ow, (wd - 1 - off) // sw + 1)
                            for ox in range(lo, hi):
                                row[ox] += xr[ox * sw + off] * wk

    @njit(cache=True, nogil=True)
    def _im2col_2d(x, cols, kh, kw, sh, sw, dh, dw, ph, pw, r0, r1, ow):
        """The column matrix of output rows r0..r1 of a 2-D convolution of x (C, H, W), padding
        read as zeros: cols[(c * kh + i) * kw + j, (oy - r0) * ow + ox] = x[c, oy * sh + i * dh - ph,
        ox * sw + j * dw - pw]. Rows follow W's (C, KH, KW) flattening. Copies only: the values
        are those of the numpy path."""
        c_in, h, w = x.shape
        for c in range(c_in):
            for i in range(kh):
                for j in range(kw):
                    row = cols[(c * kh + i) * kw + j]
                    off = j * dw - pw
                    # ox with 0 <= ox * sw + off < w
                    lo = 0 if off >= 0 else min(ow, (-off + sw - 1) // sw)
                    hi = 0 if off >= w else min(ow, (w - 1 - off) // sw + 1)
                    hi = max(hi, lo)
                    for oy in range(r0, r1):
                        y = oy * sh + i * dh - ph
                        base = (oy - r0) * ow
                        if y < 0 or y >= h:
                            for ox in range(ow):
                                row[base + ox] = 0
                            continue
                        xr = x[c, y]
                        for ox in range(lo):
                            row[base + ox] = 0
                        for ox in range(lo, hi):
                            row[base + ox] = xr[ox * sw + off]
                        for ox in range(hi, ow):
                            row[base + ox] = 0
else:  # pragma: no cover - depends on the install
    _depthwise_2d = _im2col_2d = None


def work_dtype(dtype) -> np.dtype:
    """The dtype a float kernel computes in for inputs of `dtype`: float32 for float16/float32."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in (np.float16, np.float32) else dtype


class ConvPlan:
    """Grouped N-d convolution of inputs (N, C, *spatial) of one shape and dtype by fixed
    weights w (M, C/group, *kernel) and bias b (M,) over the windows `geo` (conv.Windows)."""

    def __init__(self, x_shape, x_dtype, w: np.ndarray, b: np.ndarray | None, geo, group: int):
        from conveyor.ops.conv import pad_for_windows

        self._pad = pad_for_windows
        self.out_dtype = np.dtype(x_dtype)
        work = self.work = work_dtype(x_dtype)
        n, c = int(x_shape[0]), int(x_shape[1])
        m, nd = int(w.shape[0]), len(geo.out)
        self.n, self.c, self.m, self.nd, self.geo, self.group = n, c, m, nd, geo, group
        cg, mg = c // group, m // group
        self.cg, self.mg = cg, mg
        k_size = int(np.prod(geo.kernel, dtype=np.int64))
        w = np.asarray(w, dtype=work)
        self.bias = None if b is None else np.ascontiguousarray(np.asarray(b, dtype=work).reshape((m,) + (1,) * nd))
        self.out_shape = (n, m) + tuple(geo.out)
        if k_size == 1:
            self.kind = "pointwise"
            self.wmat = np.ascontiguousarray(w.reshape(group, mg, cg)[0 if group == 1 else slice(None)])
        elif cg == 1 and group > 1:
            self.kind = "depthwise"
            # one (M, 1, ..., 1) weight column per tap, taps row-major over the kernel
            self.wtaps = np.ascontiguousarray(
                w.reshape(m, k_size).T.reshape((k_size, m) + (1,) * nd))
            self.taps = list(np.ndindex(*geo.kernel))
            self.wflat = np.ascontiguousarray(w.reshape(m, k_size))
        else:
            self.kind = "im2col"
            # one GEMM in the work dtype (float32 for float32 inputs, as onnxruntime's MLAS sums;
            # see the module docstring)
            self.wmat = np.ascontiguousarray(w.reshape(group, mg, cg * k_size))
            self.k_size = k_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.work)
        y = getattr(self, "_" + self.kind)(x)
        if self.bias is not None:
            y += self.bias
        return y.astype(self.out_dtype, copy=False)

    def _pointwise(self, x):
        geo, n, nd = self.geo, self.n, self.nd
        xp = self._pad(x, geo, 0)
        if any(s != 1 for s in geo.strides):
            xp = xp[(Ellipsis,) + tuple(slice(None, None, s) for s in geo.strides)]
        if self.group == 1:
            y = np.matmul(self.wmat, xp.reshape(n, self.c, -1))
        else:
            y = np.matmul(self.wmat, xp.reshape(n, self.group, self.cg, -1))
        return y.reshape(self.out_shape)

    def _depthwise(self, x):
        geo, nd = self.geo, self.nd
        if _depthwise_2d is not None and nd in (1, 2):
            # numba: straight from the unpadded input into the output (a 1-D one as height 1)
            if nd == 1:
                x2 = x.reshape(self.n, self.c, 1, -1)
                geo2 = ((1,) + geo.kernel, (1,) + geo.strides, (1,) + geo.dilations, (0,) + geo.begin)
            else:
                x2, geo2 = x, (geo.kernel, geo.strides, geo.dilations, geo.begin)
            y = np.empty(self.out_shape, dtype=self.work)
            (kh, kw), (sh, sw), (dh, dw), (ph, pw) = geo2
            _depthwise_2d(np.ascontiguousarray(x2), self.wflat, y.reshape((self.n, self.m, -1, geo.out[-1])),
                          kh, kw, sh, sw, dh, dw, ph, pw, self.mg)
            return y
        xp = self._pad(x, geo, 0)
        if self.mg > 1:  # output channel g * mg + j reads input channel g
            xp = np.repeat(xp, self.mg, axis=1)
        y = np.empty(self.out_shape, dtype=self.work)
        tmp = np.empty_like(y)
        for i, pos in enumerate(self.taps):
            win = (Ellipsis,) + tuple(slice(p * d, p * d + (o - 1) * s + 1, s)
                                      for p, d, o, s in zip(pos, geo.dilations, geo.out, geo.strides))
            if i == 0:
                np.multiply(xp[win], self.wtaps[i], out=y)
            else:
                np.multiply(xp[win], self.wtaps[i], out=tmp)
                y += tmp
        return y

    def _im2col(self, x):
        geo, n, nd, group, cg = self.geo, self.n, self.nd, self.group, self.cg
        y = np.empty(self.out_shape, dtype=self.work)
        rest = int(np.prod(geo.out[1:], dtype=np.int64))
        row_bytes = max(1, self.c * self.k_size * rest * self.work.itemsize)
        rows = max(1, min(geo.out[0], _COLS_BYTES // row_bytes))
        k_rows = cg * self.k_size
        if _im2col_2d is not None and nd in (1, 2):
            # numba: the columns straight from the unpadded input (padding read as zeros)
            if nd == 1:  # a 1-D convolution is a 2-D one of height 1
                x2 = x.reshape(n, self.c, 1, -1)
                kh, kw, sh, sw, dh, dw, ph, pw = 1, geo.kernel[0], 1, geo.strides[0], 1, geo.dilations[0], 0, geo.begin[0]
                oh, ow = 1, geo.out[0]
                rows = 1
            else:
                x2 = x
                (kh, kw), (sh, sw), (dh, dw), (ph, pw) = geo.kernel, geo.strides, geo.dilations, geo.begin
                oh, ow = geo.out
            x2 = np.ascontiguousarray(x2)
            for i in range(n):
                yi = y[i].reshape(group, self.mg, -1)
                for r0 in range(0, oh, rows):
                    r1 = min(oh, r0 + rows)
                    cols = np.empty((self.c * self.k_size, (r1 - r0) * ow), dtype=self.work)
                    _im2col_2d(x2[i], cols, kh, kw, sh, sw, dh, dw, ph, pw, r0, r1, ow)
                    cols = cols.reshape(group, k_rows, -1)
                    if r1 - r0 == oh:  # the whole image: the GEMM writes the output in place
                        np.matmul(self.wmat, cols, out=yi)
                    else:
                        yi.reshape(group, self.mg, oh, ow)[:, :, r0:r1] = np.matmul(self.wmat, cols).reshape(
                            group, self.mg, r1 - r0, ow)
            return y
        xp = self._pad(x, geo, 0)
        # Windows of the padded input: (N, C, *positions, *kernel extent), then stride the
        # positions and dilate the taps by slicing; no data is copied yet.
        win = strided_windows(xp, geo, n, group, cg)
        # Column layout (N, G, Cg, *kernel, *out): rows match W's (Cg, *kernel) flattening.
        perm = (0, 1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(3, 3 + nd))
        win = win.transpose(perm)
        for i in range(n):
            for r0 in range(0, geo.out[0], rows):
                r1 = min(geo.out[0], r0 + rows)
                cols = np.ascontiguousarray(win[(i,) + (slice(None),) * (2 + nd) + (slice(r0, r1),)])
                cols = cols.reshape(group, k_rows, -1)
                part = np.matmul(self.wmat, cols)  # (G, Mg, rows * rest)
                y[i, :, r0:r1] = part.reshape((self.m, r1 - r0) + geo.out[1:])
        return y
