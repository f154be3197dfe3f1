"""The float kernel of Conv (and of ConvTranspose, a Conv of its stretched input), planned once.

`ConvPlan` is built from the input's static shape and dtype and the (constant) weights: it
picks a method and lays the weights out for it once, so that a `Graph.run` pays only the
arithmetic (`conveyor.ops.conv.conv_nd` builds one per call; `Graph.run` keeps one per node).

Methods and arithmetic (float16/float32 inputs; float64 inputs compute in float64 throughout):

- pointwise (1x1 kernel, any stride, no padding): per group one float32 GEMM of the weights
  (Mg, Cg) by the input (Cg, positions) as it lies (strided positions gathered first): a 1x1
  Conv is a MatMul, computed as conveyor's MatMul and Gemm are (and as onnxruntime does);
- depthwise (one input channel per group, any channel multiplier): per kernel tap one float32
  multiply-add of a shifted window by a weight per channel, taps in row-major order (numba:
  `_depthwise_flat`, the same operations in the same order as the numpy loop, so the same bits);
- unit-stride 3x3 with one group (and at least `_WINOGRAD_TILES` 2x2 output tiles): Winograd
  F(2x2, 3x3) in float64, rounded once to float32;
- everything else: im2col + one float64 GEMM, rounded once. The padded input is viewed as
  sliding windows (`numpy.lib.stride_tricks.sliding_window_view`), strided and dilated by
  slicing the view, copied into a column matrix (rows (Cg, *kernel) as W flattens, in chunks of
  output rows that stay below `_COLS_BYTES`) and multiplied by the weights with one batched
  `np.matmul` over groups.

The bias is added in the method's dtype before the final rounding. float64 sums for the k x k
kernels keep conveyor's float reference within onnxruntime's own float32 error on deep conv
stacks: one float32 sgemm over up to 4,608 taps moved vgg16-conv's outputs from onnxruntime's by
0.62-1.09x the zoo test's tolerance (1e-5 + 1e-4 |ref|; 2 of 6 random inputs fail), float32
sgemms of 128-product partials summed in float64 0.54-1.07x (with OpenBLAS on 2 threads), float64
GEMMs (and the Winograd path, whose outputs equal theirs bit for bit on the layers measured)
0.43-0.68x.

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

#: Winograd needs this many output tiles; with fewer (a 7x7 image: 16) its 16 (M, C) float64
#: weight planes, 1.8x the bytes of W, outweigh the products saved (measured: 512 channels at
#: 7x7 8 ms against 6.6 ms for im2col, 256 at 14x14 4.2 against 5.6).
_WINOGRAD_TILES = 32


if njit is not None:
    @njit(cache=True, nogil=True)
    def _depthwise_flat(xp, w, out, offs, phase, phases, mg):
        """Depthwise convolution on flattened planes. xp (N*C*S, F): per input channel its S
        stride phases of the padded input (conv.Windows strides; S = 1 at unit stride), each
        flattened with a zero tail; w (M, T) the weights by tap; out (N*M, L) the outputs on the
        phase grid (row n * M + m reads channel n * C + m // mg). Tap t reads phase phase[t]
        shifted by offs[t]. Each output is the sum over taps in order of window value times
        weight, each product and sum rounded to out's dtype, as the numpy path computes it."""
        rows, size = out.shape
        m_out, taps = w.shape
        c_in = m_out // mg
        for r in range(rows):
            n = r // m_out
            m = r - n * m_out
            base = (n * c_in + m // mg) * phases
            dst = out[r]
            seg = xp[base + phase[0], offs[0]:offs[0] + size]
            wk = w[m, 0]
            for j in range(size):  # bare loop indices: numba drops the wraparound and vectorises
                dst[j] = seg[j] * wk
            for t in range(1, taps):
                seg = xp[base + phase[t], offs[t]:offs[t] + size]
                wk = w[m, t]
                for j in range(size):
                    dst[j] += seg[j] * wk

    @njit(cache=True, nogil=True)
    def _winograd_in(xp, v, th, tw):
        """V = B^T d B of every 4x4 tile (stride 2) of xp (C, N, Hp, Wp) into v (4, 4, C, N * TH * TW),
        in float64, with the operations of `ConvPlan._winograd`'s numpy path."""
        c_in, nb = xp.shape[0], xp.shape[1]
        d = np.empty((4, 4))
        r = np.empty((4, 4))
        for c in range(c_in):
            for n in range(nb):
                for ty in range(th):
                    for tx in range(tw):
                        for i in range(4):
                            for j in range(4):
                                d[i, j] = xp[c, n, 2 * ty + i, 2 * tx + j]
                        for j in range(4):
                            r[0, j] = d[0, j] - d[2, j]
                            r[1, j] = d[1, j] + d[2, j]
                            r[2, j] = d[2, j] - d[1, j]
                            r[3, j] = d[1, j] - d[3, j]
                        t = (n * th + ty) * tw + tx
                        for i in range(4):
                            v[i, 0, c, t] = r[i, 0] - r[i, 2]
                            v[i, 1, c, t] = r[i, 1] + r[i, 2]
                            v[i, 2, c, t] = r[i, 2] - r[i, 1]
                            v[i, 3, c, t] = r[i, 1] - r[i, 3]

    @njit(cache=True, nogil=True)
    def _winograd_out(p, bias, y, th, tw):
        """Y = A^T m A of every tile's products p (4, 4, M, N * TH * TW) plus bias (M,), rounded
        once into y (N, M, OH, OW) (the tiles cut at its edges), as the numpy path computes it."""
        nb, m_out, oh, ow = y.shape
        for m in range(m_out):
            for n in range(nb):
                for ty in range(th):
                    for tx in range(tw):
                        t = (n * th + ty) * tw + tx
                        for i in range(2):
                            y0 = 2 * ty + i
                            if y0 >= oh:
                                break
                            # s = row i of A^T m: (1, 1, 1, 0) or (0, 1, -1, -1)
                            if i == 0:
                                s0 = p[0, 0, m, t] + p[1, 0, m, t] + p[2, 0, m, t]
                                s1 = p[0, 1, m, t] + p[1, 1, m, t] + p[2, 1, m, t]
                                s2 = p[0, 2, m, t] + p[1, 2, m, t] + p[2, 2, m, t]
                                s3 = p[0, 3, m, t] + p[1, 3, m, t] + p[2, 3, m, t]
                            else:
                                s0 = p[1, 0, m, t] - p[2, 0, m, t] - p[3, 0, m, t]
                                s1 = p[1, 1, m, t] - p[2, 1, m, t] - p[3, 1, m, t]
                                s2 = p[1, 2, m, t] - p[2, 2, m, t] - p[3, 2, m, t]
                                s3 = p[1, 3, m, t] - p[2, 3, m, t] - p[3, 3, m, t]
                            y[n, m, y0, 2 * tx] = (s0 + s1 + s2) + bias[m]
                            if 2 * tx + 1 < ow:
                                y[n, m, y0, 2 * tx + 1] = (s1 - s2 - s3) + bias[m]
else:  # pragma: no cover - depends on the install
    _depthwise_flat = _winograd_in = _winograd_out = None


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
            # numba path: the padded input split into its stride phases (phase p along axis i
            # holds coordinates p, p + s_i, ...; Q_i of them); tap k reads phase (k d) % s at
            # offset (k d) // s, so every tap is one shifted contiguous run of a phase plane and
            # the outputs lie on the phase grid (out_0, Q_1, ...), its extra columns cut off.
            ext, st = geo.extent, geo.strides
            self.phase_q = tuple(-(-e // s_) for e, s_ in zip(ext, st))
            self.phase_starts = list(np.ndindex(*st))
            qstr = np.cumprod((1,) + self.phase_q[:0:-1])[::-1]
            pstr = np.cumprod((1,) + tuple(st[:0:-1]))[::-1]
            taps = [np.multiply(p, geo.dilations) for p in self.taps]
            self.flat_offs = np.array([int(np.dot(t // np.array(st), qstr)) for t in taps], dtype=np.int64)
            self.flat_phase = np.array([int(np.dot(t % np.array(st), pstr)) for t in taps], dtype=np.int64)
            self.flat_grid = (geo.out[0],) + self.phase_q[1:]
            self.flat_size = int(self.flat_offs.max()) + int(np.prod(self.flat_grid))
        elif (group == 1 and geo.kernel == (3, 3) and geo.strides == (1, 1) and geo.dilations == (1, 1)
              and work == np.float32 and n * -(-geo.out[0] // 2) * -(-geo.out[1] // 2) >= _WINOGRAD_TILES):
            self.kind = "winograd"
            # U = G g G^T per (output, input) channel pair, as (16, M, C) in float64
            g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
            u = np.einsum("ik,mckl,jl->ijmc", g, w.astype(np.float64), g)
            self.wino_u = np.ascontiguousarray(u.reshape(16, m, c))
            self.tiles = tuple(-(-o // 2) for o in geo.out)
            self.wino_bias = np.zeros(m) if b is None else np.asarray(b, dtype=work).astype(np.float64)
        else:
            self.kind = "im2col"
            # float64 sums, one rounding (see the module docstring)
            self.gemm_dtype = np.dtype(np.float64) if work == np.float32 else work
            self.wmat = np.ascontiguousarray(w.reshape(group, mg, cg * k_size), dtype=self.gemm_dtype)
            self.k_size = k_size

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.work)
        y = getattr(self, "_" + self.kind)(x)
        if self.bias is not None and self.kind != "winograd":  # Winograd adds it before its rounding
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
        if _depthwise_flat is not None:
            nc, q, size = self.n * self.c, self.phase_q, int(np.prod(self.phase_q))
            flat = np.zeros((nc, len(self.phase_starts), self.flat_size), dtype=self.work)
            if len(self.phase_starts) == 1:  # unit stride: pad straight into the flat planes
                dst = flat[:, 0, :size].reshape((self.n, self.c) + q)
                into, src = [], []
                for b, e, sp in zip(geo.begin, q, x.shape[2:]):
                    k = max(0, min(sp, e - b))
                    into.append(slice(b, b + k))
                    src.append(slice(0, k))
                dst[(Ellipsis,) + tuple(into)] = x[(Ellipsis,) + tuple(src)]
            else:
                xp = self._pad(x, geo, 0)
                for i, start in enumerate(self.phase_starts):
                    ph = xp[(Ellipsis,) + tuple(slice(p, None, s_) for p, s_ in zip(start, geo.strides))]
                    dst = flat[:, i, :size].reshape((self.n, self.c) + q)
                    dst[(Ellipsis,) + tuple(slice(0, d) for d in ph.shape[2:])] = ph
            y = np.empty((self.n * self.m, int(np.prod(self.flat_grid))), dtype=self.work)
            _depthwise_flat(flat.reshape(nc * len(self.phase_starts), -1), self.wflat, y, self.flat_offs,
                            self.flat_phase, len(self.phase_starts), self.mg)
            y = y.reshape((self.n, self.m) + self.flat_grid)
            return np.ascontiguousarray(y[(Ellipsis,) + tuple(slice(0, o) for o in geo.out)])
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

    def _winograd(self, x):
        """Winograd F(2x2, 3x3) in float64 (Lavin and Gray, "Fast Algorithms for Convolutional
        Neural Networks", CVPR 2016): per 4x4 input tile d (stride 2) V = B^T d B, per output
        tile Y = A^T [sum_c U V] A, 16 products per 2x2 outputs instead of 36. B's and A's
        entries are 0 and +-1, G's 0, +-1/2: V is exact in float64 for float32 inputs, U nearly."""
        geo, n, m, c = self.geo, self.n, self.m, self.c
        th, tw = self.tiles
        xp = self._pad(x, geo, 0)
        hp, wp = 2 * th + 2, 2 * tw + 2
        if xp.shape[2:] != (hp, wp):  # an odd output size: a zero row/column for the last tile
            full = np.zeros((n, c, hp, wp), dtype=xp.dtype)
            full[:, :, :xp.shape[2], :xp.shape[3]] = xp
            xp = full
        if _winograd_in is not None:  # numba: the same operations, one pass over the tiles each way
            v = np.empty((4, 4, c, n * th * tw))
            _winograd_in(xp.transpose(1, 0, 2, 3), v, th, tw)
            p = np.matmul(self.wino_u, v.reshape(16, c, -1)).reshape(4, 4, m, -1)
            y = np.empty(self.out_shape, dtype=self.work)
            _winograd_out(p, self.wino_bias, y, th, tw)
            return y
        xp = xp.astype(np.float64)
        # every 4x4 tile (stride 2) gathered once, as (4, 4, C, N * TH * TW): contiguous planes
        d = sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]
        d = np.ascontiguousarray(d.transpose(4, 5, 1, 0, 2, 3)).reshape(4, 4, c, -1)
        rows = np.empty_like(d)  # B^T d: rows (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)
        np.subtract(d[0], d[2], out=rows[0])
        np.add(d[1], d[2], out=rows[1])
        np.subtract(d[2], d[1], out=rows[2])
        np.subtract(d[1], d[3], out=rows[3])
        v = d.reshape(4, 4, c, -1)  # (B^T d) B, the same combinations of columns, into d's memory
        np.subtract(rows[:, 0], rows[:, 2], out=v[:, 0])
        np.add(rows[:, 1], rows[:, 2], out=v[:, 1])
        np.subtract(rows[:, 2], rows[:, 1], out=v[:, 2])
        np.subtract(rows[:, 1], rows[:, 3], out=v[:, 3])
        p = np.matmul(self.wino_u, v.reshape(16, c, -1)).reshape(4, 4, m, -1)  # (4, 4, M, N * T)
        s0 = p[0] + p[1] + p[2]  # A^T m: rows (1, 1, 1, 0) and (0, 1, -1, -1)
        s1 = p[1] - p[2] - p[3]
        out = np.empty((2, 2, m, n, th, tw))
        for i, sr in enumerate((s0, s1)):  # (A^T m) A
            o = out[i].reshape(2, m, -1)
            np.add(sr[0], sr[1], out=o[0])
            o[0] += sr[2]
            np.subtract(sr[1], sr[2], out=o[1])
            o[1] -= sr[3]
        y = out.transpose(3, 2, 4, 0, 5, 1).reshape(n, m, 2 * th, 2 * tw)
        oh, ow = geo.out
        y = y[:, :, :oh, :ow] + self.wino_bias.reshape(m, 1, 1)
        return y.astype(self.work)

    def _im2col(self, x):
        geo, n, nd, group, cg = self.geo, self.n, self.nd, self.group, self.cg
        xp = self._pad(x.astype(self.gemm_dtype, copy=False), geo, 0)
        # Windows of the padded input: (N, C, *positions, *kernel extent), then stride the
        # positions and dilate the taps by slicing; no data is copied yet.
        win = strided_windows(xp, geo, n, group, cg)
        # Column layout (N, G, Cg, *kernel, *out): rows match W's (Cg, *kernel) flattening.
        perm = (0, 1, 2) + tuple(range(3 + nd, 3 + 2 * nd)) + tuple(range(3, 3 + nd))
        win = win.transpose(perm)
        y = np.empty(self.out_shape, dtype=self.gemm_dtype)
        rest = int(np.prod(geo.out[1:], dtype=np.int64))
        row_bytes = max(1, self.c * self.k_size * rest * self.gemm_dtype.itemsize)
        rows = max(1, min(geo.out[0], _COLS_BYTES // row_bytes))
        for i in range(n):
            for r0 in range(0, geo.out[0], rows):
                r1 = min(geo.out[0], r0 + rows)
                cols = np.ascontiguousarray(win[(i,) + (slice(None),) * (2 + nd) + (slice(r0, r1),)])
                cols = cols.reshape(group, cg * self.k_size, -1)
                part = np.matmul(self.wmat, cols)  # (G, Mg, rows * rest)
                y[i, :, r0:r1] = part.reshape((self.m, r1 - r0) + geo.out[1:])
        return y
