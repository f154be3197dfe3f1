"""hls4ml's lossy-accumulator dot product on integers, compiled by numba (the `fast` extra).

`conveyor.ops.fixed.accumulate` hands a dot product here when its accumulator rounds or
overflows and the op can lay its products out as rows times a matrix (`DotSpec.matrix`):
X [M, K] and W [K, N] hold the raw integers of x and w (value * 2^frac), K in hls4ml's tap
order, B [N] the raw bias already cast to accum_t. Per output, hls4ml's loop is

    acc = B[j];  for k: acc = (accum_t)(acc + (accum_t)(X[m, k] * W[k, j]))

with the product's rounding a right shift by `s` (= the fractional bits it drops) and the
casts' overflow a wrap (mod 2^W, read back signed or unsigned) or a clip. Two kernels:

- `sum_rounded`: AP_WRAP with N = 0 and nothing counted. Every cast is a reduction mod
  2^W of an exact integer, so the rounded products are summed in machine integers (which
  wrap mod 2^32 or 2^64, multiples of 2^W) and wrapped once at the end: any order gives
  the same bits. int32 when every product fits, else int64.
- `literal`: the loop itself, tap by tap in order (saturation makes the order matter),
  counting the product and running-sum casts that overflow (the observing runs).

Without numba the callers keep their numpy paths (same bits, slower).
"""

from __future__ import annotations

import os

import numpy as np

try:  # the `fast` extra; CONVEYOR_NO_NUMBA=1 turns it off (to test the numpy paths)
    if os.environ.get("CONVEYOR_NO_NUMBA"):
        raise ImportError("CONVEYOR_NO_NUMBA is set")
    from numba import njit
except ImportError:  # pragma: no cover - depends on the install
    njit = None

#: rounding mode -> code of `_round_shift` (0..2: one add and an arithmetic shift)
ROUNDING = {"TRN": 0, "RND": 1, "RND_MIN_INF": 2, "TRN_ZERO": 3, "RND_ZERO": 4, "RND_INF": 5, "RND_CONV": 6}
WRAP, CLIP = 0, 1


def available() -> bool:
    return njit is not None


if njit is not None:
    @njit(cache=True, nogil=True)
    def _round_shift(p, s, mode):
        """p / 2^s (s > 0) rounded by `mode` (ROUNDING), p an integer."""
        if mode == 0:
            return p >> s
        half = np.int64(1) << (s - 1)
        if mode == 1:
            return (p + half) >> s
        if mode == 2:
            return (p + half - 1) >> s
        q = p >> s
        r = p - (q << s)  # 0 <= r < 2^s
        if mode == 3:  # towards zero
            return q + 1 if (p < 0 and r != 0) else q
        if r > half:
            return q + 1
        if r < half:
            return q
        if mode == 4:  # tie: towards zero
            return q + 1 if p < 0 else q
        if mode == 5:  # tie: away from zero
            return q + 1 if p > 0 else q
        return q + (q & 1)  # tie: to even

    @njit(cache=True, nogil=True)
    def _sum_rounded32(X, W, B, s, mode, out):
        M, K = X.shape
        N = W.shape[1]
        acc = np.empty(N, np.int32)
        c = np.int32(0) if mode == 0 or s <= 0 else np.int32(1 << (s - 1)) - np.int32(mode == 2)
        sh = np.int32(max(s, 0))
        generic = mode > 2 and s > 0
        for m in range(M):
            for j in range(N):
                acc[j] = B[j]
            for k in range(K):
                xk = np.int32(X[m, k])
                if xk == 0:
                    continue
                if generic:
                    for j in range(N):
                        acc[j] += np.int32(_round_shift(np.int64(xk) * W[k, j], s, mode))
                else:
                    for j in range(N):
                        acc[j] += np.int32((np.int32(xk * W[k, j]) + c) >> sh)
            for j in range(N):
                out[m, j] = acc[j]

    @njit(cache=True, nogil=True)
    def _sum_rounded64(X, W, B, s, mode, out):
        M, K = X.shape
        N = W.shape[1]
        acc = np.empty(N, np.int64)
        c = np.int64(0) if mode == 0 or s <= 0 else (np.int64(1) << (s - 1)) - np.int64(mode == 2)
        sh = max(s, 0)
        generic = mode > 2 and s > 0
        for m in range(M):
            for j in range(N):
                acc[j] = B[j]
            for k in range(K):
                xk = X[m, k]
                if xk == 0:
                    continue
                if generic:
                    for j in range(N):
                        acc[j] += _round_shift(xk * W[k, j], s, mode)
                else:
                    for j in range(N):
                        acc[j] += (xk * W[k, j] + c) >> sh
            for j in range(N):
                out[m, j] = acc[j]

    @njit(cache=True, nogil=True)
    def _cast(v, how, width, signed, clo, chi):
        if how == WRAP:
            free = 64 - width
            if signed:
                return (v << free) >> free
            return v & ((np.int64(1) << width) - 1)
        return min(max(v, clo), chi)

    @njit(cache=True, nogil=True)
    def _literal(X, W, B, s, mode, how, width, signed, lo, hi, clo, chi, out, counts):
        M, K = X.shape
        N = W.shape[1]
        acc = np.empty(N, np.int64)
        n_prod = 0
        n_sum = 0
        for m in range(M):
            for j in range(N):
                acc[j] = B[j]
            for k in range(K):
                xk = X[m, k]
                for j in range(N):
                    p = xk * W[k, j]
                    if s > 0:
                        p = _round_shift(p, s, mode)
                    if p < lo or p > hi:
                        n_prod += 1
                        p = _cast(p, how, width, signed, clo, chi)
                    v = acc[j] + p
                    if v < lo or v > hi:
                        n_sum += 1
                        v = _cast(v, how, width, signed, clo, chi)
                    acc[j] = v
            for j in range(N):
                out[m, j] = acc[j]
        counts[0] += n_prod
        counts[1] += n_sum


    @njit(cache=True, nogil=True)
    def _to_result(v, d, rmode, how, width, signed, clo, chi):
        """An accumulator raw `v` (F_a fractional bits) as the raw of the result type
        (F_r = F_a - d): rounded by `rmode` (d > 0) or shifted (d < 0), then wrapped to
        `width` bits or clipped to [clo, chi]."""
        if d > 0:
            v = _round_shift(v, d, rmode)
        elif d < 0:
            v = v << (-d)
        return _cast(v, how, width, signed, clo, chi)

    @njit(cache=True, nogil=True)
    def _conv_fused(x, xscale, Wk, B, sh, sw, dh, dw, s, mode, awidth, asigned, d, rmode, rhow, rwidth,
                    rsigned, rclo, rchi, rback, out, xi, acc, relu, rows, pool, OH, OW):
        """Blocks of `nb` samples, the sample innermost (a long, unit-stride loop that the
        compiler vectorises): xi [H, W, C, nb] the block's raw inputs, acc [M, nb] one output
        pixel's accumulators, finished (wrapped, cast, scaled) as soon as its taps are in.
        xi, acc and Wk are int64, or int32 where every product and the wrap fit (the sums
        then wrap mod 2^32, a multiple of 2^awidth)."""
        N, C, H, Wd = x.shape
        KH, KW, _, M = Wk.shape
        nb = acc.shape[1]
        if pool:  # a 2x2 max pool (stride 2) follows: the rows and columns it reads
            OH, OW = 2 * (OH // 2), 2 * (OW // 2)
        c0 = np.int64(0) if mode == 0 or s <= 0 else (np.int64(1) << (s - 1)) - np.int64(mode == 2)
        sh_p = max(s, 0)
        generic = mode > 2 and s > 0
        afree = 64 - awidth
        amask = (np.int64(1) << awidth) - 1 if 0 < awidth < 63 else np.int64(-1)
        simple = (asigned or awidth == 0) and d >= 0 and rmode == 0 and rhow == 0 and rsigned
        rfree = 64 - rwidth
        narrow = xi.itemsize == 4
        s32 = np.int32(sh_p & 31)  # (< 31 whenever the kernel runs narrow)
        c32 = np.int32(c0) if narrow else np.int32(0)
        for n0 in range(0, N, nb):
            L = min(nb, N - n0)
            # x read row by row; xi's rows are nb + 16 words apart (not a power of two: no
            # cache-set conflicts between the values one row of x scatters into xi)
            if H == 1 and Wd == 1:  # a Dense: one loop (nested loops of one trip cost 8x here)
                for q in range(L):
                    for c in range(C):
                        xi[0, 0, c, q] = np.int64(x[n0 + q, c, 0, 0] * xscale)  # exact: on the grid
            else:
                for q in range(L):
                    for c in range(C):
                        for i in range(H):
                            for j in range(Wd):
                                xi[i, j, c, q] = np.int64(x[n0 + q, c, i, j] * xscale)
            for oh in range(OH):
                par = oh & 1
                for ow in range(OW):
                    for m in range(M):
                        for q in range(L):
                            acc[m, q] = B[m]
                    for kh in range(KH):
                        ih = oh * sh + kh * dh
                        for kw in range(KW):
                            iw = ow * sw + kw * dw
                            for c in range(C):
                                m = 0
                                if narrow and not generic:  # int32 throughout: twice the lanes
                                    # (numba computes int32 * int32 in int64; each np.int32 keeps
                                    # the vector lanes 32 bits wide, the same bits: nothing overflows
                                    # int32 here, and the sums wrap mod 2^32, a multiple of 2^awidth)
                                    while m + 4 <= M:
                                        w0, w1 = Wk[kh, kw, c, m], Wk[kh, kw, c, m + 1]
                                        w2, w3 = Wk[kh, kw, c, m + 2], Wk[kh, kw, c, m + 3]
                                        for q in range(L):
                                            xv = xi[ih, iw, c, q]
                                            acc[m, q] = np.int32(acc[m, q] + np.int32(
                                                np.int32(np.int32(xv * w0) + c32) >> s32))
                                            acc[m + 1, q] = np.int32(acc[m + 1, q] + np.int32(
                                                np.int32(np.int32(xv * w1) + c32) >> s32))
                                            acc[m + 2, q] = np.int32(acc[m + 2, q] + np.int32(
                                                np.int32(np.int32(xv * w2) + c32) >> s32))
                                            acc[m + 3, q] = np.int32(acc[m + 3, q] + np.int32(
                                                np.int32(np.int32(xv * w3) + c32) >> s32))
                                        m += 4
                                    for m in range(m, M):
                                        wv = Wk[kh, kw, c, m]
                                        for q in range(L):
                                            acc[m, q] = np.int32(acc[m, q] + np.int32(
                                                np.int32(np.int32(xi[ih, iw, c, q] * wv) + c32) >> s32))
                                    continue
                                if not generic:  # four output channels per pass over the block
                                    while m + 4 <= M:
                                        w0, w1 = Wk[kh, kw, c, m], Wk[kh, kw, c, m + 1]
                                        w2, w3 = Wk[kh, kw, c, m + 2], Wk[kh, kw, c, m + 3]
                                        if sh_p == 0:  # exact products: no rounding
                                            for q in range(L):
                                                xv = xi[ih, iw, c, q]
                                                acc[m, q] += xv * w0
                                                acc[m + 1, q] += xv * w1
                                                acc[m + 2, q] += xv * w2
                                                acc[m + 3, q] += xv * w3
                                        elif c0 == 0:  # AP_TRN: floor, an arithmetic shift
                                            for q in range(L):
                                                xv = xi[ih, iw, c, q]
                                                acc[m, q] += (xv * w0) >> sh_p
                                                acc[m + 1, q] += (xv * w1) >> sh_p
                                                acc[m + 2, q] += (xv * w2) >> sh_p
                                                acc[m + 3, q] += (xv * w3) >> sh_p
                                        else:
                                            for q in range(L):
                                                xv = xi[ih, iw, c, q]
                                                acc[m, q] += (xv * w0 + c0) >> sh_p
                                                acc[m + 1, q] += (xv * w1 + c0) >> sh_p
                                                acc[m + 2, q] += (xv * w2 + c0) >> sh_p
                                                acc[m + 3, q] += (xv * w3 + c0) >> sh_p
                                        m += 4
                                for m in range(m, M):
                                    wv = Wk[kh, kw, c, m]
                                    if wv == 0:
                                        continue
                                    if generic:
                                        for q in range(L):
                                            acc[m, q] += _round_shift(xi[ih, iw, c, q] * wv, s, mode)
                                    else:
                                        for q in range(L):
                                            acc[m, q] += (xi[ih, iw, c, q] * wv + c0) >> sh_p
                    if simple:  # signed accum and result, TRN, WRAP: shifts only
                        for m in range(M):
                            for q in range(L):
                                v = np.int64(acc[m, q])
                                if awidth > 0:
                                    v = (v << afree) >> afree
                                v = ((v >> d) << rfree) >> rfree
                                if relu and v < 0:
                                    v = 0
                                rows[par, m, ow, q] = np.float64(v) * rback
                        continue
                    for q in range(L):
                        for m in range(M):
                            v = np.int64(acc[m, q])
                            if awidth > 0:  # the accumulator's wrap: its low awidth bits
                                v = (v << afree) >> afree if asigned else v & amask
                            v = _to_result(v, d, rmode, rhow, rwidth, rsigned, rclo, rchi)
                            if relu and v < 0:
                                v = 0
                            rows[par, m, ow, q] = np.float64(v) * rback
                if pool:  # rows 2i and 2i+1 done: their 2x2 maxima (exact) are pooled row i
                    if oh & 1:
                        for q0 in range(0, L, 8):
                            for m in range(M):
                                for pw in range(OW // 2):
                                    for q in range(q0, min(q0 + 8, L)):
                                        out[n0 + q, m, oh >> 1, pw] = max(
                                            max(rows[0, m, 2 * pw, q], rows[0, m, 2 * pw + 1, q]),
                                            max(rows[1, m, 2 * pw, q], rows[1, m, 2 * pw + 1, q]))
                    continue
                # the row into the output in tiles of 8 samples (out's stride between samples
                # is M * OH * OW values: written a row at a time, not a value at a time)
                if OW == 1 and OH == 1:  # a Dense: one loop per sample
                    for q in range(L):
                        for m in range(M):
                            out[n0 + q, m, 0, 0] = rows[0, m, 0, q]
                    continue
                for q0 in range(0, L, 8):
                    for m in range(M):
                        for ow in range(OW):
                            for q in range(q0, min(q0 + 8, L)):
                                out[n0 + q, m, oh, ow] = rows[par, m, ow, q]


#: samples per block of `_conv_fused` (its innermost loop)
_BLOCK = 128


def conv_fused(x: np.ndarray, xfrac: int, wk: np.ndarray, bias: np.ndarray, strides, dilations, out_hw,
               s: int, rounding: str, accum, d: int, result, out: np.ndarray | None = None,
               narrow: bool = False, relu: bool = False, pool: bool = False) -> np.ndarray:
    """hls4ml's Conv (or Dense: 1x1 on a 1x1 image) on raw integers, every cast in one pass:
    x [N, C, H, W] float64 on its 2^-xfrac grid, padded; wk [KH, KW, C, M] and bias [M] the
    raw integers of weights and bias on the accumulator's grid (products rounded by a right
    shift of `s` bits in `rounding` mode); the accumulator wraps to `accum`'s width (None:
    exact, no wrap); the result is the accumulator cast to `result` (`d` = accumulator
    fractional bits - result's; WRAP with N = 0 or a clip to its range), as float64
    [N, M, OH, OW]. The caller proves that no int64 overflows; `narrow`: that every raw
    input, weight, product and rounding constant fits int32 and accum wraps at <= 32 bits
    (the sums run in int32 then, twice the vector lanes). `relu`: then max(result, 0), a Relu
    that follows (its cast the identity). `pool`: then a 2x2 MaxPool of stride 2 without
    padding (floor), whose cast is the identity: the output is [N, M, OH // 2, OW // 2]."""
    n, m = x.shape[0], wk.shape[3]
    oh, ow = (int(v) for v in out_hw)
    if out is None:
        out = np.empty((n, m) + ((oh // 2, ow // 2) if pool else (oh, ow)), np.float64)
    if accum is None:
        awidth, asigned = 0, True
    else:
        awidth, asigned = accum.width, accum.signed
    rhow, clo, chi = result_clip(result)
    dt = np.int32 if narrow else np.int64
    xi = np.empty(x.shape[2:] + x.shape[1:2] + (_BLOCK + 16,), dt)  # (see the kernel's fill)
    acc = np.empty((m, _BLOCK), dt)
    rows = np.empty((2, m, ow, _BLOCK + 8), np.float64)  # rows 8 words longer: no set conflicts
    _conv_fused(np.ascontiguousarray(x, np.float64), float(2.0 ** xfrac), np.ascontiguousarray(wk, dt),
                np.ascontiguousarray(bias, np.int64), int(strides[0]), int(strides[1]), int(dilations[0]),
                int(dilations[1]), int(s), ROUNDING[rounding], int(awidth), bool(asigned), int(d),
                ROUNDING[result.rounding], rhow, int(result.width), bool(result.signed), clo, chi,
                float(2.0 ** -result.frac_bits), out, xi, acc, bool(relu), rows, bool(pool), oh, ow)
    return out


def result_clip(fmt) -> tuple[int, int, int]:
    """(how, lo, hi) of `_cast` for a fixed type: WRAP (N = 0), or a clip of its raws to
    [lo, hi] (SAT; SAT_SYM: [-max, max] when signed)."""
    if fmt.overflow == "WRAP":
        return WRAP, 0, 0
    lo = -fmt.raw_max if fmt.overflow == "SAT_SYM" and fmt.signed else fmt.raw_min
    return CLIP, int(lo), int(fmt.raw_max)


def fusable_result(fmt) -> bool:
    """Whether `conv_fused` computes the cast to `fmt` (else the caller casts)."""
    return (fmt.width <= 53 and (fmt.overflow == "SAT" or (fmt.overflow == "WRAP" and fmt.sat_bits == 0)
                                 or (fmt.overflow == "SAT_SYM" and (fmt.width > 1 or not fmt.signed))))


def sum_rounded(X: np.ndarray, W: np.ndarray, B: np.ndarray, s: int, rounding: str) -> np.ndarray:
    """sum_k round(X[m, k] W[k, j] / 2^s) + B[j] in X's integer dtype (int32 or int64), which
    wraps mod 2^32 or 2^64 (s <= 0: no rounding; W already holds any left shift)."""
    out = np.empty((X.shape[0], W.shape[1]), X.dtype)
    kernel = _sum_rounded32 if X.dtype == np.int32 else _sum_rounded64
    kernel(X, W, B.astype(X.dtype), int(s), ROUNDING[rounding], out)
    return out


def literal(X: np.ndarray, W: np.ndarray, B: np.ndarray, s: int, rounding: str, how: int, width: int,
            signed: bool, lo: int, hi: int, clo: int, chi: int, counts: np.ndarray) -> np.ndarray:
    """hls4ml's loop on int64 raw values; `counts` += (product casts, sum casts) that overflow
    [lo, hi]; an overflowing value becomes its wrap (how=WRAP) or its clip to [clo, chi]."""
    out = np.empty((X.shape[0], W.shape[1]), np.int64)
    _literal(X, W, B.astype(np.int64), int(s), ROUNDING[rounding], how, width, signed, lo, hi, clo, chi, out,
             counts)
    return out
