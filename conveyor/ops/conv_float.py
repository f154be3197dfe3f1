"""The float kernel of Conv (and of ConvTranspose, a Conv of its stretched input), planned once.

`ConvPlan` is built from the input's static shape and dtype and the (constant) weights: it
picks a method and lays the weights out for it once, so that a `Graph.run` pays only the
arithmetic (`conveyor.ops.conv.conv_nd` builds one per call; `Graph.run` keeps one per node).

Methods and arithmetic: every method computes in the work dtype (`work_dtype`: float32 for
float16/float32 inputs, as onnxruntime computes a float32 Conv; float64 inputs (a double model; the
emulator's grid values) in float64 throughout):

- pointwise (1x1 kernel, any stride, no padding): per group one GEMM of the weights (Mg, Cg) by
  the input (Cg, positions) as it lies (strided positions gathered first): a 1x1 Conv is a
  MatMul, computed as conveyor's MatMul and Gemm are (and as onnxruntime does);
- depthwise (one input channel per group, any channel multiplier): per kernel tap one
  multiply-add of a shifted window by a weight per channel, taps in row-major order (numba:
  `_depthwise_flat`, the same operations in the same order as the numpy loop, so the same bits);
- winograd (2-D 3x3, unit stride, no dilation, one group, enough channels and output tiles:
  `_winograd_fits`): Winograd F(2x2, 3x3), `conveyor.ops.winograd`; in float64 (the emulator's
  grid values) only where the caller proved it exact (`exact_bits`);
- everything else (k x k, strided, dilated, grouped, N-d): im2col + one GEMM per group (one
  batched `np.matmul`), rows (Cg, *kernel) as W flattens, in chunks of output rows that stay
  below `_COLS_BYTES`. With numba the input is laid out as flat stride-phase planes
  (`_flat_layout`, as the depthwise kernel reads it) and every row of the column matrix is one
  contiguous run of a plane (`_im2col_flat`); the GEMM then runs over the phase grid, a few
  columns wider than the output (cut off after). Without numba the padded input is viewed as
  sliding windows (`numpy.lib.stride_tricks.sliding_window_view`), strided and dilated by
  slicing the view. Each output's dot product has the same terms either way (BLAS may block a
  wider GEMM differently: the sums agree to float32 accumulation error, not always bit for bit).

The bias is added after the sums, in the work dtype. float32 sums over up to 4,608 taps (vgg's
3x3x512) differ from onnxruntime's (MLAS sums in another order, with FMAs) by a float32
accumulation error, not by a rounding of the result: tests that compare the two use the bound
of docs/numerics.md ("Conv, the float reference"), not a float64-tight tolerance.

(docs/numerics.md "Convolution, float" gives the measured distance from onnxruntime.)
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from conveyor.ops import conv_small, winograd
from conveyor.ops.intdot import njit

if njit is not None:
    from numba import uint64


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

#: The flat-plane im2col (numba) when its phase grid has at most this many columns per output:
#: on small images the padded width wastes GEMM columns (a 4x4 output on a 4x6 grid: 1.5x) and
#: the sliding-window copy is as fast (measured with OpenBLAS on one core: 64 channels at 16x16
#: 0.146 ms against 0.182, 256 at 4x4 0.239 against 0.192).
_GRID_WASTE = 1.3

#: The per-tap GEMMs when fewer than this share of (output, tap) pairs read inside the image:
#: a 3x3 kernel with padding 1 on a 2x2 image reads 16 of 36 (measured, 512 channels, OpenBLAS
#: on one core: 0.19 ms against 0.40 for im2col); at 4x4 (100 of 144) both cost the same.
_TAPS_VALID = 0.6

#: The one-pass kernel (`conveyor.ops.conv_small`) when each weight multiplies at most this many
#: inputs on average ((output, tap) pairs read inside the input, times the batch, per tap; a
#: GEMV-like call, bound by reading the weights) for the work dtype. Measured per Conv of
#: resnet18/resnet50/mobilenet_v2/efficientnet_b0 at 64 px (OpenBLAS Haswell kernels, one core,
#: weights not in cache as in a model run): float32 wins 1.3-3.5x up to 4 uses (2x2 outputs,
#: 1x1 SE convs), 1.2-1.7x at 11-13 (3x3 at 4x4), even at 16 (1x1 at 4x4), loses from 64 (8x8);
#: float64 (float32-stored weights against dgemm) wins 1.5-4x up to 16 uses, 1.0-1.6x at 54-64.
_SMALL_USES = {np.dtype(np.float32): 16.0, np.dtype(np.float64): 64.0}

#: Depthwise convs with at most this many output positions run channels-last
#: (`conv_small.DepthwisePlan`: the same products and sums in the same order, so the same bits):
#: on small planes `_depthwise_flat`'s per-channel rows are too short to vectorise. Measured on
#: mobilenet_v2/efficientnet_b0's depthwise convs (one core, float32/float64): 1152 channels at
#: 2x2 (5x5) 12/25 us against 142/125, 240 at 4x4 13/21 against 59/98, 144 at 8x8 (5x5, stride
#: 2) 56/99 against 91/113; at 16x16 outputs even (81/122 against 77/95), at 32x32 2x slower.
_DW_CHANNELS_LAST = 64

#: Winograd F(2x2, 3x3) (`conveyor.ops.winograd`) where it is faster than im2col/taps: at least
#: `_WINOGRAD_MIN_C` input channels (its transforms cost per input and per output value, its
#: GEMMs save 20 of 36 products per C: measured, float32, one core, 8 channels at 64x64 0.57 ms
#: against 0.30 for im2col, 3 at 32x32 0.15 against 0.074; 16 at 32x32 0.080 against 0.098) and
#: enough 2x2 output tiles (N * TH * TW) to keep its GEMMs compute bound, as its transformed
#: weights (16, M, C) are 16/9 the bytes of W: `_WINOGRAD_TILES`, or `_WINOGRAD_TILES_CACHED`
#: when those weights fit in `_WINOGRAD_CACHED_BYTES`. Measured (OpenBLAS Haswell kernels, one
#: core, shared machine: ms Winograd against the method it replaces), float32 / float64:
#: 64 ch 16x16 0.23/0.29 vs 0.31/0.54; 128 ch 8x8 0.22/0.33 vs 0.35/0.55; 512 ch 7x7 3.6/4.9 vs
#: 4.3/7.5; 128 ch 4x4 (U 1/2 MiB) 0.09/0.19 vs 0.12/0.25; 256 ch 4x4 (U 4/8 MiB) 0.39/0.77
#: vs 0.34/0.72 (im2col); 512 ch 4x4 2.4/4.1 vs 1.6/3.5; 512 ch 2x2 0.70/1.6 vs 0.47/1.6 (taps).
#: The same rule for both work dtypes.
_WINOGRAD_MIN_C = 16
_WINOGRAD_TILES = 16
_WINOGRAD_TILES_CACHED = 4
_WINOGRAD_CACHED_BYTES = 2 << 20

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
    def _im2col_flat(xp, cols, offs, phase, phases):
        """The column matrix from flattened planes (as `_depthwise_flat` reads them): row
        c * T + t of cols (C * T, L) is input channel c's phase phase[t] shifted by offs[t], the
        run tap t reads for every output on the phase grid. Copies only."""
        taps = offs.shape[0]
        size = cols.shape[1]
        for r in range(cols.shape[0]):
            c = r // taps
            t = r - c * taps
            seg = xp[c * phases + phase[t], offs[t]:offs[t] + size]
            dst = cols[r]
            for j in range(size):
                dst[j] = seg[j]

    @njit(cache=True, nogil=True)
    def _phase_planes_2d(x, flat, sy, sx, by, bx, ey, ex, qy, qx):
        """`ConvPlan._flat_planes` for 2-D inputs: flat (N * C, S, F), zeros, gets x (N * C, H,
        W): stride phase (py, px) (index py * sx + px) holds at i * qx + j the padded input at
        (i * sy + py, j * sx + px) when that lies in the windows' extent (ey, ex) and inside
        the input (shifted by the begin pads by, bx). Copies only, one pass: the numpy path's
        per-phase strided slicing costs 84 us at mobilenet_v2's 96 x 32 x 32 stride-2 input.
        Flat unsigned indices: numba then drops its negative-index wraparound (which stops
        vectorisation)."""
        nc, h, w = x.shape
        phases, size = flat.shape[1], flat.shape[2]
        src = x.reshape(nc * h * w)
        dst = flat.reshape(nc * phases * size)
        for c in range(nc):
            for py in range(sy):
                for px in range(sx):
                    off = px - bx
                    # columns j with 0 <= j * sx + off < w and j * sx + px < ex
                    lo = 0 if off >= 0 else (-off + sx - 1) // sx
                    hi = min(qx, (w - 1 - off) // sx + 1, (ex - 1 - px) // sx + 1) if off < w and px < ex else 0
                    for i in range(qy):
                        e = i * sy + py
                        iy = e - by
                        if e >= ey or iy < 0 or iy >= h:
                            continue
                        d = uint64(((c * phases + py * sx + px) * size) + i * qx)
                        r = uint64((c * h + iy) * w + off)
                        if sx == 1:
                            for j in range(lo, hi):
                                dst[d + uint64(j)] = src[r + uint64(j)]
                        elif sx == 2:  # a constant stride: the compiler deinterleaves
                            for j in range(lo, hi):
                                dst[d + uint64(j)] = src[r + uint64(2 * j)]
                        else:
                            for j in range(lo, hi):
                                dst[d + uint64(j)] = src[r + uint64(j * sx)]

else:  # pragma: no cover - depends on the install
    _depthwise_flat = _im2col_flat = _phase_planes_2d = None


#: the bias is added by the compiled pass (`act_float.bias_act`) from this many outputs per channel
_BIAS_COMPILED = 256


def _bias_act(y, bias, act):
    from conveyor.ops import act_float

    return act_float.bias_act(y, bias, act)


def work_dtype(dtype) -> np.dtype:
    """The dtype a float kernel computes in for inputs of `dtype`: float32 for float16/float32."""
    dtype = np.dtype(dtype)
    return np.dtype(np.float32) if dtype in (np.float16, np.float32) else dtype


class ConvPlan:
    """Grouped N-d convolution of inputs (N, C, *spatial) of one shape and dtype by fixed
    weights w (M, C/group, *kernel) and bias b (M,) over the windows `geo` (conv.Windows)."""

    def __init__(self, x_shape, x_dtype, w: np.ndarray, b: np.ndarray | None, geo, group: int,
                 exact_bits: float | None = None):
        from conveyor.ops.conv import pad_for_windows

        self._pad = pad_for_windows
        self.out_dtype = np.dtype(x_dtype)
        work = self.work = work_dtype(x_dtype)
        n, c = int(x_shape[0]), int(x_shape[1])
        m, nd = int(w.shape[0]), len(geo.out)
        self.n, self.c, self.m, self.nd, self.geo, self.group = n, c, m, nd, geo, group
        self._in_spatial = tuple(int(d) for d in x_shape[2:])
        cg, mg = c // group, m // group
        self.cg, self.mg = cg, mg
        k_size = int(np.prod(geo.kernel, dtype=np.int64))
        w = np.asarray(w, dtype=work)
        self.bias = None if b is None else np.ascontiguousarray(np.asarray(b, dtype=work).reshape((m,) + (1,) * nd))
        self.out_shape = (n, m) + tuple(geo.out)
        small = self._small_plan(w, geo, group, k_size) if not (cg == 1 and group > 1) else None
        if small is not None:
            self.kind = "small"
            self.small = small
        elif k_size == 1:
            self.kind = "pointwise"
            self.wmat = np.ascontiguousarray(w.reshape(group, mg, cg)[0 if group == 1 else slice(None)])
        elif cg == 1 and group > 1:
            self.kind = "depthwise"
            # one (M, 1, ..., 1) weight column per tap, taps row-major over the kernel
            self.wtaps = np.ascontiguousarray(
                w.reshape(m, k_size).T.reshape((k_size, m) + (1,) * nd))
            self.taps = list(np.ndindex(*geo.kernel))
            self.wflat = np.ascontiguousarray(w.reshape(m, k_size))
            self._flat_layout()
            self.dw_cl = None
            if conv_small.available() and n * int(np.prod(geo.out, dtype=np.int64)) <= _DW_CHANNELS_LAST:
                self.dw_cl = conv_small.DepthwisePlan(self._in_spatial, n, w, geo, mg, work)
        elif self._winograd_fits(x_shape, exact_bits):
            self.kind = "winograd"
            self.wino = winograd.Winograd(x_shape, w, geo, work)
        elif group == 1 and nd == 2 and self._tap_ranges() is not None:
            self.kind = "taps"
            self.wtap_mats = [np.ascontiguousarray(w[(slice(None), slice(None)) + t]) for t in np.ndindex(*geo.kernel)]
        else:
            self.kind = "im2col"
            # one GEMM in the work dtype (float32 for float32 inputs, as onnxruntime's MLAS sums;
            # see the module docstring)
            self.wmat = np.ascontiguousarray(w.reshape(group, mg, cg * k_size))
            self.k_size = k_size
            self._flat_layout()

    def _small_plan(self, w, geo, group, k_size):
        """The one-pass kernel's plan when the call is GEMV-like (`_SMALL_USES`), else None."""
        limit = _SMALL_USES.get(self.work)
        if limit is None or not conv_small.available():
            return None
        # the pairs are at most N * positions * taps: no tap table is built for a big output
        if self.n * int(np.prod(geo.out, dtype=np.int64)) > limit * k_size:
            return None
        small = conv_small.SmallPlan(self._in_spatial, self.n, w, geo, group, self.work)
        return small if small.pairs * self.n <= limit * k_size else None

    def _winograd_fits(self, x_shape, exact_bits) -> bool:
        """Winograd F(2x2, 3x3) (`conveyor.ops.winograd`) for a unit-stride 3x3 Conv with one
        group when it is faster (`_WINOGRAD_TILES` and the rest) and, in float64 (the
        emulator's grid values), only when the caller has proved it exact: `exact_bits` bits of
        headroom below 2^53 for the direct sum, at least `winograd.EXACT_BITS`."""
        if self.nd != 2 or not winograd.applies(self.geo, self.group):
            return False
        if self.work != np.float32 and (exact_bits is None or exact_bits < winograd.EXACT_BITS):
            return False
        if self.c < _WINOGRAD_MIN_C:
            return False
        th, tw = winograd.tiles(self.geo)
        n_tiles = self.n * th * tw
        u_bytes = 16 * self.m * self.c * self.work.itemsize
        return n_tiles >= _WINOGRAD_TILES or (n_tiles >= _WINOGRAD_TILES_CACHED and u_bytes <= _WINOGRAD_CACHED_BYTES)

    def _tap_ranges(self):
        """Per tap of a 2-D kernel, the rectangle of outputs whose window reads that tap inside
        the input ((oy0, oy1), (ox0, ox1)) and where it starts in the input; None unless those
        (output, tap) pairs are fewer than `_TAPS_VALID` of all (a small image, mostly padding)."""
        geo = self.geo
        if hasattr(self, "_taps_cache"):
            return self._taps_cache
        ranges, valid = [], 0
        for t in np.ndindex(*geo.kernel):
            rect = []
            for ax, k in enumerate(t):
                off = k * geo.dilations[ax] - geo.begin[ax]
                size = self._in_spatial[ax]
                st = geo.strides[ax]
                lo = 0 if off >= 0 else (-off + st - 1) // st  # first o with o * st + off >= 0
                hi = 0 if off >= size else min(geo.out[ax], (size - 1 - off) // st + 1)
                rect.append((lo, max(lo, hi), lo * st + off))
            valid += int(np.prod([r[1] - r[0] for r in rect]))
            ranges.append(rect)
        total = len(ranges) * int(np.prod(geo.out))
        self._taps_cache = ranges if valid < _TAPS_VALID * total else None
        return self._taps_cache

    def _flat_layout(self):
        """The numba paths' layout: the padded input split into its stride phases (phase p
        along axis i holds coordinates p, p + s_i, ...; Q_i of them), each flattened with a zero
        tail. Tap k reads phase (k d) % s at offset (k d) // s, so every tap is one shifted
        contiguous run of a phase plane and the outputs lie on the phase grid (out_0, Q_1, ...),
        whose extra columns are cut off at the end."""
        geo = self.geo
        ext, st = geo.extent, geo.strides
        self.phase_q = tuple(-(-e // s_) for e, s_ in zip(ext, st))
        self.phase_starts = list(np.ndindex(*st))
        qstr = np.cumprod((1,) + self.phase_q[:0:-1])[::-1]
        pstr = np.cumprod((1,) + tuple(st[:0:-1]))[::-1]
        taps = [np.multiply(p, geo.dilations) for p in np.ndindex(*geo.kernel)]
        self.flat_offs = np.array([int(np.dot(t // np.array(st), qstr)) for t in taps], dtype=np.int64)
        self.flat_phase = np.array([int(np.dot(t % np.array(st), pstr)) for t in taps], dtype=np.int64)
        self.flat_grid = (geo.out[0],) + self.phase_q[1:]
        self.flat_size = int(self.flat_offs.max()) + int(np.prod(self.flat_grid))

    def _flat_planes(self, x):
        """x (N, C, *spatial) as the flat phase planes (N * C * S, F) of `_flat_layout`."""
        geo = self.geo
        nc, q, size = self.n * self.c, self.phase_q, int(np.prod(self.phase_q))
        flat = np.zeros((nc, len(self.phase_starts), self.flat_size), dtype=self.work)
        if _phase_planes_2d is not None and self.nd == 2 and len(self.phase_starts) > 1:
            # strided: the same copies in one compiled pass (at unit stride one numpy slice
            # assignment is as fast)
            (sy, sx), (by, bx), (ey, ex) = geo.strides, geo.begin, geo.extent
            _phase_planes_2d(np.ascontiguousarray(x).reshape((nc,) + x.shape[2:]), flat, sy, sx, by, bx,
                             ey, ex, q[0], q[1])
        elif len(self.phase_starts) == 1:  # unit stride: pad straight into the flat planes
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
        return flat.reshape(nc * len(self.phase_starts), -1)

    def _off_grid(self, y):
        """Outputs on the phase grid (N, M, *flat_grid) cut to the output's shape, contiguous."""
        y = y.reshape((self.n, self.m) + self.flat_grid)
        if self.flat_grid[1:] == tuple(self.geo.out[1:]):
            return y
        return np.ascontiguousarray(y[(Ellipsis,) + tuple(slice(0, o) for o in self.geo.out)])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.work)
        y = getattr(self, "_" + self.kind)(x)
        if self.bias is not None:
            # on planes of >= 256 positions the compiled add is 1.7-2.6x numpy's broadcast one
            # (96 x 32 x 32: 15.6 -> 6.1 us); the same sums
            if not (y.size >= _BIAS_COMPILED * self.m and self.out_dtype == self.work
                    and _bias_act(y, self.bias, 0)):
                y += self.bias
        return y.astype(self.out_dtype, copy=False)

    def call_act(self, x: np.ndarray, act: int, lo: float = 0.0, hi: float = 0.0) -> np.ndarray:
        """`self(x)` followed by a Relu (act 1) or Clip(lo, hi) (act 2) in place, the values of
        `act_float.relu_into`/`clip_into` on it: with the bias in one compiled pass
        (`act_float.bias_act`: the sum rounded, then the activation) where the output is
        the work dtype and contiguous."""
        from conveyor.ops import act_float

        x = np.asarray(x, dtype=self.work)
        y = getattr(self, "_" + self.kind)(x)
        if self.out_dtype == self.work and act_float.bias_act(y, self.bias, act, lo, hi):
            return y
        if self.bias is not None:
            y += self.bias
        y = y.astype(self.out_dtype, copy=False)
        return act_float.relu_into(y) if act == 1 else act_float.clip_into(lo, hi)(y)

    def _small(self, x):
        return self.small(x)

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
        if self.dw_cl is not None:
            return self.dw_cl(x)
        if _depthwise_flat is not None:
            y = np.empty((self.n * self.m, int(np.prod(self.flat_grid))), dtype=self.work)
            _depthwise_flat(self._flat_planes(x), self.wflat, y, self.flat_offs, self.flat_phase,
                            len(self.phase_starts), self.mg)
            return self._off_grid(y)
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

    def _taps(self, x):
        """Per kernel tap one GEMM of its (M, C) weights by the input positions it reads inside
        the image, added into those outputs (taps in row-major order): the products with the
        zero padding, most of a small image's, are never formed."""
        geo, n = self.geo, self.n
        y = np.zeros(self.out_shape, dtype=self.work)
        for wt, rect in zip(self.wtap_mats, self._taps_cache):
            (oy0, oy1, iy0), (ox0, ox1, ix0) = rect
            if oy1 <= oy0 or ox1 <= ox0:
                continue
            sy, sx = geo.strides
            xs = x[:, :, iy0:iy0 + (oy1 - oy0 - 1) * sy + 1:sy, ix0:ix0 + (ox1 - ox0 - 1) * sx + 1:sx]
            part = np.matmul(wt, xs.reshape(n, self.c, -1))
            y[:, :, oy0:oy1, ox0:ox1] += part.reshape(n, self.m, oy1 - oy0, ox1 - ox0)
        return y

    def _winograd(self, x):
        return self.wino(x)

    def _im2col(self, x):
        geo, n, nd, group, cg = self.geo, self.n, self.nd, self.group, self.cg
        rest = int(np.prod(geo.out[1:], dtype=np.int64))
        row_bytes = max(1, self.c * self.k_size * rest * self.work.itemsize)
        rows = max(1, min(geo.out[0], _COLS_BYTES // row_bytes))
        k_rows = cg * self.k_size
        grid = int(np.prod(self.flat_grid))
        if (_im2col_flat is not None and grid <= _GRID_WASTE * int(np.prod(geo.out))
                and self.c * self.k_size * grid * self.work.itemsize <= _COLS_BYTES):
            # numba: every column row is one contiguous run of a flat phase plane; the GEMM runs
            # over the phase grid (a few columns more than the outputs), then they are cut off
            flat = self._flat_planes(x).reshape(n, -1, self.flat_size)
            y = np.empty((n, group, self.mg, grid), dtype=self.work)
            cols = np.empty((self.c * self.k_size, grid), dtype=self.work)
            for i in range(n):
                _im2col_flat(flat[i], cols, self.flat_offs, self.flat_phase, len(self.phase_starts))
                np.matmul(self.wmat, cols.reshape(group, k_rows, grid), out=y[i])
            return self._off_grid(y)
        y = np.empty(self.out_shape, dtype=self.work)
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
