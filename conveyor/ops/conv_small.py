"""Convolutions with few output positions: one pass over the weights (numba).

At batch 1 a Conv whose output has few positions (resnet's layer3/layer4 at 64 px: 4x4 and 2x2
outputs of 256-512 channels; resnet50's 1x1 convs there) is a GEMV-like product: each weight is
used for a handful of multiply-adds, so the time is the time to read the weights. OpenBLAS
packs its weight operand on every call (about three times the weight bytes moved per call);
this kernel reads every weight once, in a layout fixed at plan time:

- weights `w` (G, T, Cg, Mg): per group, per kernel tap, per input channel one row over the
  output channels, contiguous, so the innermost loop runs over output channels at unit stride
  (LLVM vectorises it without fastmath: the loop carries no reduction);
- per tap a table of the (output position, input offset) pairs whose window reads that tap
  inside the input (`SmallPlan.pairs`): taps that read padding are never formed (the products
  with the zero padding are skipped, as `ConvPlan`'s 'taps' path skips them);
- the sums `y` (N, P, M) of every output position of the call stay in cache while a block of
  eight weight rows (eight products added per load and store of a sum) is applied to all of them.

Arithmetic (the order is fixed by the layout, the same on every call): each output is the sum,
in order of tap then input channel, of x * w, every product and partial sum rounded to the work
dtype, starting from zero; the bias is added after (by `ConvPlan`).

- float32 work dtype (the float reference): float32 weights and sums, so the result differs from
  onnxruntime's and OpenBLAS's orders by a float32 accumulation error (docs/numerics.md "Conv,
  the float reference", `tests/helpers.float32_tolerance`).
- float64 work dtype (a double model; the emulator's exact sums on grid values,
  `conveyor.ops.fixed._exact_sum`, which proves every partial sum an integer multiple of a grid
  step below 2^53 of them): the products and sums are float64. The weights are stored as float32
  when every weight equals its float32 cast (checked once at plan time: ap_fixed weights of up to
  24 significant bits), halving the bytes read; each is widened exactly before its product. On
  grid values every product and partial sum is then exact, so the result is the exact sum, the
  same bits as any other order (BLAS's included).

Without numba `make_plan` returns None and `ConvPlan` keeps its numpy/BLAS methods.
"""

from __future__ import annotations

import numpy as np

from conveyor.ops.intdot import njit


if njit is not None:
    @njit(cache=True, nogil=True)
    def _small_dot(x, w, y, tap_start, pair_pos, pair_off, plane, group):
        """y (N * P, M) += the convolution of x (N, C * plane), the flat unpadded input planes,
        by w (G * T * Cg, Mg) (rows (g, t, c)); tap t's pairs are pair_pos/pair_off[tap_start[t]:
        tap_start[t + 1]] (output position, offset in the input plane). y starts at zero."""
        n_items = x.shape[0]
        mg = w.shape[1]
        taps = tap_start.shape[0] - 1
        cg = w.shape[0] // (group * taps)
        n_pos = y.shape[0] // n_items
        for g in range(group):
            m0 = g * mg
            for t in range(taps):
                q0, q1 = tap_start[t], tap_start[t + 1]
                r0 = (g * taps + t) * cg
                c = 0
                while c < cg:
                    # eight weight rows (fewer at the end) per pass over the sums, in row order,
                    # applied to two output positions at a time: each weight load serves two
                    # products, each load and store of a sum eight
                    nr = min(8, cg - c)
                    r = r0 + c
                    base = (g * cg + c) * plane
                    for i in range(n_items):
                        q = q0
                        while q < q1:
                            two = q + 1 < q1
                            pa = i * n_pos + pair_pos[q]
                            oa = base + pair_off[q]
                            pb = i * n_pos + pair_pos[q + 1] if two else pa
                            ob = base + pair_off[q + 1] if two else oa
                            if nr == 8:
                                a0, a1, a2, a3 = x[i, oa], x[i, oa + plane], x[i, oa + 2 * plane], x[i, oa + 3 * plane]
                                a4, a5, a6, a7 = x[i, oa + 4 * plane], x[i, oa + 5 * plane], x[i, oa + 6 * plane], x[i, oa + 7 * plane]
                                if two:
                                    b0, b1, b2, b3 = x[i, ob], x[i, ob + plane], x[i, ob + 2 * plane], x[i, ob + 3 * plane]
                                    b4, b5, b6, b7 = x[i, ob + 4 * plane], x[i, ob + 5 * plane], x[i, ob + 6 * plane], x[i, ob + 7 * plane]
                                    for j in range(mg):
                                        v0, v1, v2, v3 = w[r, j], w[r + 1, j], w[r + 2, j], w[r + 3, j]
                                        v4, v5, v6, v7 = w[r + 4, j], w[r + 5, j], w[r + 6, j], w[r + 7, j]
                                        acc = y[pa, m0 + j]
                                        acc += a0 * v0
                                        acc += a1 * v1
                                        acc += a2 * v2
                                        acc += a3 * v3
                                        acc += a4 * v4
                                        acc += a5 * v5
                                        acc += a6 * v6
                                        acc += a7 * v7
                                        y[pa, m0 + j] = acc
                                        acc = y[pb, m0 + j]
                                        acc += b0 * v0
                                        acc += b1 * v1
                                        acc += b2 * v2
                                        acc += b3 * v3
                                        acc += b4 * v4
                                        acc += b5 * v5
                                        acc += b6 * v6
                                        acc += b7 * v7
                                        y[pb, m0 + j] = acc
                                else:
                                    for j in range(mg):
                                        acc = y[pa, m0 + j]
                                        acc += a0 * w[r, j]
                                        acc += a1 * w[r + 1, j]
                                        acc += a2 * w[r + 2, j]
                                        acc += a3 * w[r + 3, j]
                                        acc += a4 * w[r + 4, j]
                                        acc += a5 * w[r + 5, j]
                                        acc += a6 * w[r + 6, j]
                                        acc += a7 * w[r + 7, j]
                                        y[pa, m0 + j] = acc
                            else:
                                for k in range(nr):
                                    a0 = x[i, oa + k * plane]
                                    b0 = x[i, ob + k * plane]
                                    for j in range(mg):
                                        y[pa, m0 + j] += a0 * w[r + k, j]
                                    if two:
                                        for j in range(mg):
                                            y[pb, m0 + j] += b0 * w[r + k, j]
                            q += 2
                    c += nr

    @njit(cache=True, nogil=True)
    def _depthwise_cl(xp, w, y, pos_base, tap_off):
        """Depthwise convolution, channels last: y (N, P, C) at output position p is the sum over
        taps t in order of xp[:, pos_base[p] + tap_off[t], :] times w[t] (xp (N, F, C) the padded
        input flattened over space, w (T, C)). The first product is assigned and the others
        added, each product and sum rounded to y's dtype: `conv_float._depthwise_flat`'s
        operations in its order (the same bits), with the channels innermost (unit stride)."""
        n_items, _, c = xp.shape
        taps = w.shape[0]
        for i in range(n_items):
            for p in range(pos_base.shape[0]):
                b = pos_base[p]
                r0 = b + tap_off[0]
                for j in range(c):
                    y[i, p, j] = xp[i, r0, j] * w[0, j]
                t = 1
                while t + 4 <= taps:  # four taps per pass over the channels
                    r0, r1, r2, r3 = b + tap_off[t], b + tap_off[t + 1], b + tap_off[t + 2], b + tap_off[t + 3]
                    for j in range(c):
                        acc = y[i, p, j]
                        acc += xp[i, r0, j] * w[t, j]
                        acc += xp[i, r1, j] * w[t + 1, j]
                        acc += xp[i, r2, j] * w[t + 2, j]
                        acc += xp[i, r3, j] * w[t + 3, j]
                        y[i, p, j] = acc
                    t += 4
                while t < taps:
                    r0 = b + tap_off[t]
                    for j in range(c):
                        y[i, p, j] += xp[i, r0, j] * w[t, j]
                    t += 1

    @njit(cache=True, nogil=True)
    def _to_channels_last(x, xcl, dst, mg):
        """xcl (N, F, C * mg) (zeros) gets x (N, C, S) (flat planes): input position s at dst[s]
        (-1: outside the windows' extent), each channel repeated mg times. Copies only."""
        n_items, c, size = x.shape
        for i in range(n_items):
            for s in range(size):
                d = dst[s]
                if d < 0:
                    continue
                if mg == 1:
                    for j in range(c):
                        xcl[i, d, j] = x[i, j, s]
                else:
                    for j in range(c):
                        for r in range(mg):
                            xcl[i, d, j * mg + r] = x[i, j, s]
else:  # pragma: no cover - depends on the install
    _small_dot = _depthwise_cl = _to_channels_last = None


def available() -> bool:
    return _small_dot is not None


class SmallPlan:
    """The one-pass kernel for a Conv of inputs (N, C, *spatial) by w (M, C/group, *kernel)
    (already in the work dtype) over the windows `geo` (conv.Windows): weights laid out and the
    tap tables built once."""

    def __init__(self, in_spatial, n: int, w: np.ndarray, geo, group: int, work: np.dtype):
        m, cg = int(w.shape[0]), int(w.shape[1])
        mg, nd = m // group, len(geo.out)
        k_size = int(np.prod(geo.kernel, dtype=np.int64))
        self.n, self.m, self.work, self.group = n, m, np.dtype(work), group
        self.c = cg * group
        self.out = tuple(int(o) for o in geo.out)
        self.positions = int(np.prod(self.out, dtype=np.int64))
        self.plane = int(np.prod(in_spatial, dtype=np.int64))
        # (M, Cg, T) -> (G, T, Cg, Mg): per tap and input channel a row over output channels
        wl = np.ascontiguousarray(w.reshape(group, mg, cg, k_size).transpose(0, 3, 2, 1)).reshape(-1, mg)
        if self.work == np.float64:
            w32 = wl.astype(np.float32)
            # exact as float32 (finite values of <= 24 significant bits in float32's range):
            # half the bytes to read, widened exactly in the kernel
            with np.errstate(over="ignore", invalid="ignore"):
                if np.array_equal(w32.astype(np.float64), wl):
                    wl = w32
        self.wl = wl
        self.weights_dtype = wl.dtype
        self.tap_start, self.pair_pos, self.pair_off = self._pairs(in_spatial, geo)
        #: (output, tap) pairs formed: those whose window reads inside the input
        self.pairs = int(self.pair_pos.size)
        self.valid_share = self.pairs / max(1, self.positions * k_size)

    @staticmethod
    def _pairs(in_spatial, geo):
        """Per tap (row-major over the kernel), the output positions whose window reads that
        tap inside the input and the flat offset it reads there."""
        outs = np.indices(geo.out).reshape(len(geo.out), -1)  # (nd, P) output coordinates
        pstr = np.cumprod((1,) + tuple(int(s) for s in in_spatial[:0:-1]))[::-1]
        starts, pos, offs = [0], [], []
        for tap in np.ndindex(*geo.kernel):
            coords = [outs[ax] * geo.strides[ax] + tap[ax] * geo.dilations[ax] - geo.begin[ax]
                      for ax in range(len(tap))]
            ok = np.ones(outs.shape[1], dtype=bool)
            for ax, ci in enumerate(coords):
                ok &= (ci >= 0) & (ci < in_spatial[ax])
            idx = np.nonzero(ok)[0]
            pos.append(idx)
            offs.append(sum(coords[ax][idx] * int(pstr[ax]) for ax in range(len(tap))))
            starts.append(starts[-1] + idx.size)
        cat = lambda a: np.ascontiguousarray(np.concatenate(a).astype(np.int64))  # noqa: E731
        return np.array(starts, dtype=np.int64), cat(pos), cat(offs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The sums (N, M, *out) in the work dtype, no bias."""
        xf = np.ascontiguousarray(x, dtype=self.work).reshape(self.n, self.c * self.plane)
        y = np.zeros((self.n * self.positions, self.m), dtype=self.work)
        _small_dot(xf, self.wl, y, self.tap_start, self.pair_pos, self.pair_off, self.plane, self.group)
        return np.ascontiguousarray(y.reshape(self.n, self.positions, self.m).transpose(0, 2, 1)).reshape((self.n, self.m) + self.out)


class DepthwisePlan:
    """Depthwise convolution (one input channel per group, channel multiplier `mg`) of inputs
    (N, C, *spatial) by w (M, 1, *kernel) (in the work dtype) with the channels innermost: for
    small planes, where `conv_float._depthwise_flat`'s rows (one plane per channel and tap) are
    too short to vectorise. Every tap is read, padding included, in the same order."""

    def __init__(self, in_spatial, n: int, w: np.ndarray, geo, mg: int, work: np.dtype):
        m, nd = int(w.shape[0]), len(geo.out)
        self.n, self.m, self.mg, self.work = n, m, mg, np.dtype(work)
        self.out = tuple(int(o) for o in geo.out)
        self.geo = geo
        self.w = np.ascontiguousarray(w.reshape(m, -1).T)  # (T, M): per tap a row over channels
        est = np.cumprod((1,) + tuple(int(e) for e in geo.extent[:0:-1]))[::-1]
        outs = np.indices(self.out).reshape(nd, -1)
        self.pos_base = np.ascontiguousarray(
            sum(outs[ax] * geo.strides[ax] * int(est[ax]) for ax in range(nd)).astype(np.int64))
        self.tap_off = np.array([sum(k * d * int(e) for k, d, e in zip(t, geo.dilations, est))
                                 for t in np.ndindex(*geo.kernel)], dtype=np.int64)
        # where each input position lands in the padded extent (-1: cropped, never read)
        ins = np.indices(tuple(int(d) for d in in_spatial)).reshape(nd, -1)
        inside = np.ones(ins.shape[1], dtype=bool)
        dst = np.zeros(ins.shape[1], dtype=np.int64)
        for ax in range(nd):
            e = ins[ax] + geo.begin[ax]
            inside &= (e >= 0) & (e < geo.extent[ax])
            dst += e * int(est[ax])
        self.dst = np.where(inside, dst, -1).astype(np.int64)
        self.extent_size = int(np.prod(geo.extent, dtype=np.int64))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (N, C, *spatial) in the work dtype: the outputs (N, M, *out), no bias."""
        n, c = x.shape[:2]
        # the zero-padded input, channels last (N, extent, M): output channel g * mg + j reads
        # input channel g
        xcl = np.zeros((n, self.extent_size, self.m), dtype=self.work)
        _to_channels_last(np.ascontiguousarray(x).reshape(n, c, -1), xcl, self.dst, self.mg)
        y = np.empty((n, self.pos_base.size, self.m), dtype=self.work)
        _depthwise_cl(xcl, self.w, y, self.pos_base, self.tap_off)
        return np.ascontiguousarray(y.transpose(0, 2, 1)).reshape((n, self.m) + self.out)
