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
