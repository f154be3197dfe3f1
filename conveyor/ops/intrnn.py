"""hls4ml's LSTM time loop (nnet_recurrent.h, lstm_static) on raw integers, one compiled pass
per sequence block (numba, the `fast` extra).

`conveyor.ops.rnn._lstm_fixed` hands a direction here on non-observing runs when every cast
in the loop is one this kernel computes exactly (see `lstm_fused`); otherwise it runs its
numpy time loop (the same bits, slower: ten numpy calls per step and gate). Per step and
sample, exactly what that loop computes:

    pre  = (accum_t)(xW + Wb + hR + Rb)      both denses' products rounded to accum_t's grid
                                             (a right shift), sums wrapping (AP_WRAP, N = 0:
                                             one wrap of the whole sum gives the bits of every
                                             intermediate cast), or exact ('auto')
    i, o, f = sigmoid_table[index(pre)]; g = tanh_table[index(pre)]   (values as accum_t)
    c = (cell_t)(g*i + c*f);  h = (state_t)(o * tanh_table[index(c)])

Samples are blocked (`_BLOCK` of them innermost, unit stride, which the compiler
vectorises); the state of a block stays in two small arrays for the whole sequence.
"""

from __future__ import annotations

import numpy as np

from conveyor.ops import intdot
from conveyor.ops.intdot import ROUNDING, njit

_BLOCK = 64
#: batches below this many samples run one sample at a time (`_accum_one`: the units innermost)
_SMALL_BATCH = 8

if njit is not None:
    from conveyor.ops.intdot import _round_shift, _to_result
    from conveyor.ops.lut import range_index_one

    @njit(cache=True, nogil=True)
    def _ridx(v, n, k, d, offset):
        """`lut.range_index` of one raw value (as `lut._range_index_int`): (int)(v * n / R)
        truncating towards zero at the LSB (one division by R * 2^f: a shift when k >= 0),
        the low 32 bits, plus the offset in 32 bits, clamped to the table."""
        idx = range_index_one(v * n, k, d, offset)
        if idx < 0:
            return 0
        if idx > n - 1:
            return n - 1
        return idx

    @njit(cache=True, nogil=True)
    def _accum_one(acc, src, Wm, s, c0, mode):
        """`_accum_part` for a block of one sample (acc [G], src [K]): the output index j
        innermost, unit stride in acc and in a row of Wm, which the compiler vectorises (with
        the sample innermost, one sample leaves a loop of one trip per product)."""
        K, G = Wm.shape
        if src.itemsize == 4 and acc.itemsize == 4 and mode <= 2:
            s32, c32 = np.int32(s & 31), np.int32(c0)
            for i in range(K):
                xv = np.int32(src[i])
                if xv == 0:
                    continue
                for j in range(G):
                    acc[j] = np.int32(acc[j] + np.int32(np.int32(np.int32(xv * Wm[i, j]) + c32) >> s32))
            return
        for i in range(K):
            xv = np.int64(src[i])
            if xv == 0:
                continue
            if s == 0:
                for j in range(G):
                    acc[j] += xv * Wm[i, j]
            elif mode <= 2:
                for j in range(G):
                    acc[j] += (xv * Wm[i, j] + c0) >> s
            elif mode == 6:  # AP_RND_CONV: ties to even, branch-free (c0 = 2^(s-1) - 1)
                for j in range(G):
                    p = xv * Wm[i, j]
                    acc[j] += (p + c0 + ((p >> s) & 1)) >> s
            else:
                for j in range(G):
                    acc[j] += _round_shift(xv * Wm[i, j], s, mode)

    @njit(cache=True, nogil=True)
    def _accum_part(acc, src, Wm, s, c0, mode, L):
        """acc[j, q] += round(src[i, q] * Wm[i, j] / 2^s) over i (s = 0: exact products)."""
        K, G = Wm.shape
        if acc.shape[1] == 1:  # a block of one sample (`_block`): contiguous rows
            _accum_one(acc.reshape(G), src.reshape(K), Wm, s, c0, mode if s > 0 else 0)
            return
        generic = mode > 2 and s > 0
        if src.itemsize == 4 and acc.itemsize == 4 and not generic:
            # int32 throughout (numba computes int32 * int32 in int64: each np.int32 keeps the
            # vector lanes 32 bits wide; nothing overflows, the sums wrap mod 2^32)
            s32, c32 = np.int32(s & 31), np.int32(c0)
            for i in range(K):
                for j in range(G):
                    w = Wm[i, j]
                    for q in range(L):
                        acc[j, q] = np.int32(acc[j, q] + np.int32(np.int32(np.int32(src[i, q] * w) + c32) >> s32))
            return
        for i in range(K):
            for j in range(G):
                w = Wm[i, j]
                if w == 0:
                    continue
                if generic:
                    for q in range(L):
                        acc[j, q] += _round_shift(np.int64(src[i, q]) * w, s, mode)
                elif s == 0:
                    for q in range(L):
                        acc[j, q] += src[i, q] * w
                else:
                    for q in range(L):
                        acc[j, q] += (src[i, q] * w + c0) >> s

    @njit(cache=True, nogil=True, inline="always")
    def _ridx_fast(v, n, k, offset):
        """`_ridx` for a power-of-two divisor (2^k), branch-free (vectorisable): towards
        zero is a floor after adding 2^k - 1 to negative values."""
        p = v * n
        dr = (p + ((p >> 63) & ((np.int64(1) << k) - 1))) >> k
        dr = ((dr + 2147483648) & 0xFFFFFFFF) - 2147483648
        idx = ((dr + offset + 2147483648) & 0xFFFFFFFF) - 2147483648
        return min(max(idx, 0), n - 1)

    @njit(cache=True, nogil=True, inline="always")
    def _cast_fast(v, f):
        """`_to_result` for d >= 0 and TRN / RND / RND_MIN_INF / RND_CONV (one added constant,
        for RND_CONV plus the parity of the truncated value, and a shift) in the form of
        `_fast_cast`: f = (d, constant, free, mask, lo, hi, parity)."""
        v = (v + f[1] + ((v >> f[0]) & f[6])) >> f[0]
        return min(max(((v << f[2]) >> f[2]) & f[3], f[4]), f[5])

    @njit(cache=True, nogil=True)
    def _gates_fast(acc, hs, cs, y, t, n0, L, H, afree, amask, sig, tg, tc, tp, gi_shift, cf_shift, cf, hf,
                    back_h):
        """The gates, cell and state of one step for a block, every operation branch-free."""
        n0_, k0, o0 = tp[0, 0], tp[0, 1], tp[0, 3]
        n1, k1, o1 = tp[1, 0], tp[1, 1], tp[1, 3]
        n2, k2, o2 = tp[2, 0], tp[2, 1], tp[2, 3]
        for u in range(H):
            for q in range(L):
                ai = ((np.int64(acc[u, q]) << afree) >> afree) & amask
                ao = ((np.int64(acc[H + u, q]) << afree) >> afree) & amask
                af = ((np.int64(acc[2 * H + u, q]) << afree) >> afree) & amask
                ag = ((np.int64(acc[3 * H + u, q]) << afree) >> afree) & amask
                vi = sig[_ridx_fast(ai, n0_, k0, o0)]
                vo = sig[_ridx_fast(ao, n0_, k0, o0)]
                vf = sig[_ridx_fast(af, n0_, k0, o0)]
                vg = tg[_ridx_fast(ag, n1, k1, o1)]
                cn = _cast_fast(((vg * vi) << gi_shift) + ((cs[u, q] * vf) << cf_shift), cf)
                vt = tc[_ridx_fast(cn, n2, k2, o2)]
                hn = _cast_fast(vo * vt, hf)
                cs[u, q] = cn
                hs[u, q] = hn
                y[t, n0 + q, u] = np.float64(hn) * back_h

    @njit(cache=True, nogil=True)
    def _gates_one(acc, hs, cs, yrow, H, afree, amask, sig, tg, tc, tp, gi_shift, cf_shift, cf, hf, back_h):
        """`_gates_fast` for a block of one sample on 1-D rows (acc [4H], hs, cs, yrow [H]): the
        unit innermost at unit stride, which the compiler vectorises (table reads as gathers)."""
        n0_, k0, o0 = tp[0, 0], tp[0, 1], tp[0, 3]
        n1, k1, o1 = tp[1, 0], tp[1, 1], tp[1, 3]
        n2, k2, o2 = tp[2, 0], tp[2, 1], tp[2, 3]
        for u in range(H):
            ai = ((np.int64(acc[u]) << afree) >> afree) & amask
            ao = ((np.int64(acc[H + u]) << afree) >> afree) & amask
            af = ((np.int64(acc[2 * H + u]) << afree) >> afree) & amask
            ag = ((np.int64(acc[3 * H + u]) << afree) >> afree) & amask
            vi = sig[_ridx_fast(ai, n0_, k0, o0)]
            vo = sig[_ridx_fast(ao, n0_, k0, o0)]
            vf = sig[_ridx_fast(af, n0_, k0, o0)]
            vg = tg[_ridx_fast(ag, n1, k1, o1)]
            cn = _cast_fast(((vg * vi) << gi_shift) + ((cs[u] * vf) << cf_shift), cf)
            vt = tc[_ridx_fast(cn, n2, k2, o2)]
            hn = _cast_fast(vo * vt, hf)
            cs[u] = cn
            hs[u] = hn
            yrow[u] = np.float64(hn) * back_h

    @njit(cache=True, nogil=True)
    def _gates_direct(acc, hs, cs, y, t, n0, L, H, afree, amask, dsig, dtg, dtc, base_a, base_c, gi_shift,
                      cf_shift, cf, hf, back_h):
        """`_gates_fast` with every table read straight by the raw value (`_direct`): the
        accumulator and the cell are narrow, so each table is expanded to one entry per raw value."""
        for u in range(H):
            for q in range(L):
                ai = (((np.int64(acc[u, q]) << afree) >> afree) & amask) - base_a
                ao = (((np.int64(acc[H + u, q]) << afree) >> afree) & amask) - base_a
                af = (((np.int64(acc[2 * H + u, q]) << afree) >> afree) & amask) - base_a
                ag = (((np.int64(acc[3 * H + u, q]) << afree) >> afree) & amask) - base_a
                vi, vo, vf, vg = dsig[ai], dsig[ao], dsig[af], dtg[ag]
                cn = _cast_fast(((vg * vi) << gi_shift) + ((cs[u, q] * vf) << cf_shift), cf)
                hn = _cast_fast(vo * dtc[cn - base_c], hf)
                cs[u, q] = cn
                hs[u, q] = hn
                y[t, n0 + q, u] = np.float64(hn) * back_h

    @njit(cache=True, nogil=True)
    def _lstm_seq(x, xscale, Wx, Wh, B, sx, cx, sh, ch, mode, awidth, asigned,
                  sig, tg, tc, tp, gi_shift, cf_shift, cp, hp, h0, c0, back_h, back_c,
                  y, hN, cN, xb, hs, cs, acc, fast, cf, hf, direct, dsig, dtg, dtc, base_a, base_c):
        """x [T, N, I] float64 on its 2^-f grid (xscale = 2^f); Wx [I, 4H], Wh [H, 4H] raw
        weights lifted to the accumulator's grid; B [4H] the raw bias sum on it; s*, c*: the
        right shift of the products of x (of h) and its rounding constant; awidth: the
        accumulator's wrap (0: exact); sig, tg, tc: raw table values (gates i, o, f; gate
        g; tanh of c), tp [3, 4] their index parameters (n, k, d, offset); cp, hp: the cell
        and state casts (d, rounding, how, width, signed, lo, hi); h0, c0 [N, H] raw initial
        state. Out: y [T, N, H], hN, cN [N, H] as float64 values. xb, hs, cs, acc: blocks."""
        T, N, I = x.shape
        G = Wx.shape[1]
        H = G // 4
        nb = acc.shape[1]
        afree = 64 - awidth
        amask = (np.int64(1) << awidth) - 1 if 0 < awidth < 63 else np.int64(-1)
        if fast:  # one form for the wrap: ((v << free) >> free) & mask
            if awidth == 0:
                afree, amask = 0, np.int64(-1)
            elif asigned:
                amask = np.int64(-1)
            else:
                afree = 0
        for n0 in range(0, N, nb):
            L = min(nb, N - n0)
            for u in range(H):
                for q in range(L):
                    hs[u, q] = h0[n0 + q, u]
                    cs[u, q] = c0[n0 + q, u]
            for t in range(T):
                for i in range(I):
                    for q in range(L):
                        xb[i, q] = np.int64(x[t, n0 + q, i] * xscale)  # exact: on the grid
                for j in range(G):
                    bj = B[j]
                    for q in range(L):
                        acc[j, q] = bj
                _accum_part(acc, xb, Wx, sx, cx, mode, L)
                _accum_part(acc, hs, Wh, sh, ch, mode, L)
                if direct:
                    _gates_direct(acc, hs, cs, y, t, n0, L, H, afree, amask, dsig, dtg, dtc, base_a, base_c,
                                  gi_shift, cf_shift, cf, hf, back_h)
                    continue
                if fast and nb == 1:
                    _gates_one(acc.reshape(G), hs.reshape(H), cs.reshape(H), y[t, n0], H, afree, amask, sig, tg,
                               tc, tp, gi_shift, cf_shift, cf, hf, back_h)
                    continue
                if fast:
                    _gates_fast(acc, hs, cs, y, t, n0, L, H, afree, amask, sig, tg, tc, tp, gi_shift, cf_shift,
                                cf, hf, back_h)
                    continue
                for u in range(H):
                    for q in range(L):
                        g4 = (np.int64(acc[u, q]), np.int64(acc[H + u, q]), np.int64(acc[2 * H + u, q]),
                              np.int64(acc[3 * H + u, q]))
                        if awidth > 0:  # (accum_t)(tmpres + tmpres_state): its low awidth bits
                            if asigned:
                                g4 = ((g4[0] << afree) >> afree, (g4[1] << afree) >> afree,
                                      (g4[2] << afree) >> afree, (g4[3] << afree) >> afree)
                            else:
                                g4 = (g4[0] & amask, g4[1] & amask, g4[2] & amask, g4[3] & amask)
                        vi = sig[_ridx(g4[0], tp[0, 0], tp[0, 1], tp[0, 2], tp[0, 3])]
                        vo = sig[_ridx(g4[1], tp[0, 0], tp[0, 1], tp[0, 2], tp[0, 3])]
                        vf = sig[_ridx(g4[2], tp[0, 0], tp[0, 1], tp[0, 2], tp[0, 3])]
                        vg = tg[_ridx(g4[3], tp[1, 0], tp[1, 1], tp[1, 2], tp[1, 3])]
                        csum = ((vg * vi) << gi_shift) + ((np.int64(cs[u, q]) * vf) << cf_shift)
                        cn = _to_result(csum, cp[0], cp[1], cp[2], cp[3], cp[4] != 0, cp[5], cp[6])
                        vt = tc[_ridx(cn, tp[2, 0], tp[2, 1], tp[2, 2], tp[2, 3])]
                        hn = _to_result(vo * vt, hp[0], hp[1], hp[2], hp[3], hp[4] != 0, hp[5], hp[6])
                        cs[u, q] = cn
                        hs[u, q] = hn
                        y[t, n0 + q, u] = np.float64(hn) * back_h
            for u in range(H):
                for q in range(L):
                    hN[n0 + q, u] = np.float64(hs[u, q]) * back_h
                    cN[n0 + q, u] = np.float64(cs[u, q]) * back_c


def _table_params(values: np.ndarray, frac_out: int, table, frac_in: int):
    """(raw values int64, [n, k, d, offset]) of a range table read by values on a 2^-frac_in
    grid (`lut.range_index`), or None when the kernel's integer form does not apply."""
    if frac_in < 0:
        return None
    n, r = int(table.size), int(table.hi - table.lo)
    d = r << frac_in
    if d >= 2 ** 62:
        return None
    k = d.bit_length() - 1 if r & (r - 1) == 0 else -1
    raw = np.asarray(values, np.float64) * 2.0 ** frac_out
    if not np.all(np.abs(raw) < 2.0 ** 53) or not np.array_equal(raw, np.round(raw)):
        return None
    return raw.astype(np.int64), [n, k, d, int(table.offset)]


def _cast_params(fmt, d: int) -> list[int] | None:
    """`intdot._to_result`'s (d, rounding, how, width, signed, lo, hi) for a cast to `fmt`."""
    if not intdot.fusable_result(fmt):
        return None
    how, lo, hi = intdot.result_clip(fmt)
    return [int(d), ROUNDING[fmt.rounding], how, int(fmt.width), int(fmt.signed), lo, hi]


def _fast_cast(p: list[int]) -> np.ndarray | None:
    """`_cast_params` p as `_cast_fast`'s (d, constant, free, mask, lo, hi, parity), or None.

    RND_CONV (ties to even) is floor((v + 2^(d-1) - 1 + bit_d(v)) / 2^d): above the tie the
    sum carries into bit d, below it does not, and at the tie it carries exactly when the
    truncated value is odd."""
    d, mode, how, width, signed, lo, hi = p
    if d < 0 or (mode > 2 and mode != 6) or width > 62:
        return None
    parity = int(mode == 6 and d > 0)
    c = 0 if mode == 0 or d == 0 else (1 << (d - 1)) - int(mode in (2, 6))
    big = 1 << 62
    if how == intdot.WRAP:
        free, mask = (64 - width, -1) if signed else (0, (1 << width) - 1)
        lo, hi = -big, big
    else:
        free, mask = 0, -1
    return np.array([d, c, free, mask, lo, hi, parity], np.int64)


#: raw-value ranges up to this many entries get a direct table (`_direct`)
_DIRECT_MAX = 1 << 16
_DIRECT_CACHE: dict = {}


def _direct(act, frac_out: int, frac_in: int, fmt) -> tuple[np.ndarray, int]:
    """(entry per raw value of `fmt`, the lowest raw value): `act`'s table value at
    `lut.range_index` of every value of `fmt` on a 2^-frac_in grid, as raw integers on
    2^-frac_out. Cached: a few 64k-entry tables."""
    from conveyor.ops import lut

    t = act.table
    key = (t.size, t.lo, t.hi, t.fmt, str(act.A), frac_out, frac_in, fmt.width, fmt.signed)
    got = _DIRECT_CACHE.get(key)
    if got is None:
        lo = -(1 << (fmt.width - 1)) if fmt.signed else 0
        raw = np.arange(lo, lo + (1 << fmt.width), dtype=np.int64)
        idx = lut.range_index(raw * 2.0 ** -frac_in, frac_in, t.size, t.lo, t.hi)
        vals = (np.asarray(act.values, np.float64) * 2.0 ** frac_out).astype(np.int64)
        got = (np.ascontiguousarray(vals[idx]), lo)
        if len(_DIRECT_CACHE) > 32:
            _DIRECT_CACHE.clear()
        _DIRECT_CACHE[key] = got
    return got


def lstm_fused(x, fx, w, r, wb, rb, fw, fr, fb, A, acts, S, C, h0, c0, value_range):
    """One direction of `rnn._lstm_fixed` (no sequence_lens), or None when this kernel does
    not compute it exactly: x [T, N, I] on fx's grid (already in loop order), w [4H, I],
    r [4H, H], wb, rb [4H] (or None) as quantized, A the accumulator (None: exact), acts
    the direction's `_FixedAct`s (f, g, h), S and C the state and cell types, h0, c0 [N, H].
    Returns (y [T, N, H], h [N, H], c [N, H]) as float64 values."""
    plan = lstm_plan(fx, w, r, wb, rb, fw, fr, fb, A, acts, S, C, value_range)
    return None if plan is None else lstm_run(plan, x, h0, c0)


def lstm_plan(fx, w, r, wb, rb, fw, fr, fb, A, acts, S, C, value_range):
    """What `lstm_fused` derives from the weights and formats alone (raw weights, tables, casts,
    the proof that nothing overflows), or None when the kernel does not compute this direction
    exactly. `lstm_run(plan, x, h0, c0)` then runs it on any x of w's input size: a caller
    that runs the same weights again (the Emulator) keeps the plan."""
    if njit is None:
        return None
    fa, ga, ha = acts
    if fa.table is None or ga.table is None or ha.table is None:
        return None  # relu: the numpy loop
    if A is not None and not (A.overflow == "WRAP" and A.sat_bits == 0 and A.width <= 62):
        return None  # a saturating accumulator: every cast in order (the numpy loop)
    G, I = w.shape
    H = G // 4
    xf, wf, hf, rf = fx.frac_bits, fw.frac_bits, S.frac_bits, fr.frac_bits
    if A is None:
        units = max(0, xf + wf, hf + rf, fb.frac_bits if fb is not None else 0)
        sx = sh = 0
        lift_x, lift_h = units - (xf + wf), units - (hf + rf)
        bias = np.zeros(G) if wb is None else wb + rb
    else:
        units = A.frac_bits
        sx, sh = xf + wf - units, hf + rf - units
        lift_x, lift_h = max(0, -sx), max(0, -sh)
        sx, sh = max(0, sx), max(0, sh)
        bias = np.zeros(G) if wb is None else A.quantize(wb) + A.quantize(rb)  # (accum_t) of each bias
    braw = bias * 2.0 ** units
    if not np.all(np.abs(braw) < 2.0 ** 53):
        return None
    wlo, whi = value_range(w)
    rlo, rhi = value_range(r)
    xr = max(-fx.min_value, fx.max_value) * 2.0 ** xf
    hr = max(-S.min_value, S.max_value) * 2.0 ** hf
    wr = max(-wlo, whi) * 2.0 ** (wf + lift_x)
    rr = max(-rlo, rhi) * 2.0 ** (rf + lift_h)
    px, ph = xr * wr, hr * rr
    bmax = float(np.max(np.abs(braw))) if braw.size else 0.0
    total = I * (px / 2.0 ** sx + 1) + H * (ph / 2.0 ** sh + 1) + bmax  # |every partial sum|, raw
    if not (total < 2.0 ** 62 and px < 2.0 ** 62 and ph < 2.0 ** 62):
        return None
    wrapping = A is not None and A.width <= 32
    narrow = (max(px + 2.0 ** sx, ph + 2.0 ** sh) < 2.0 ** 31 and max(xr, hr, wr, rr) < 2.0 ** 31
              and (wrapping or total < 2.0 ** 31))
    pre_raw = 2.0 ** A.width if A is not None else total
    f_frac, g_frac = fa.out_frac(units), ga.out_frac(units)
    t_frac = ha.out_frac(C.frac_bits)
    tabs = [_table_params(fa.values, f_frac, fa.table, units), _table_params(ga.values, g_frac, ga.table, units),
            _table_params(ha.values, t_frac, ha.table, C.frac_bits)]
    if any(t is None for t in tabs) or pre_raw * max(fa.table.size, ga.table.size) >= 2.0 ** 62:
        return None
    if 2.0 ** C.width * ha.table.size >= 2.0 ** 62:
        return None
    fc = max(g_frac + f_frac, C.frac_bits + f_frac)  # grid of g*i + c*f
    gi_shift, cf_shift = fc - (g_frac + f_frac), fc - (C.frac_bits + f_frac)
    vmax = [float(np.max(np.abs(t[0]))) if t[0].size else 0.0 for t in tabs]
    csum = vmax[1] * vmax[0] * 2.0 ** gi_shift + 2.0 ** C.width * vmax[0] * 2.0 ** cf_shift
    hprod = vmax[0] * vmax[2]
    if not (csum < 2.0 ** 53 and hprod < 2.0 ** 53 and fc - C.frac_bits < 62 and
            f_frac + t_frac - hf < 62 and C.frac_bits - fc < 62 and hf - (f_frac + t_frac) < 62):
        return None  # (the numpy loop refuses sums beyond float64's exact range, naming the node)
    cp = _cast_params(C, fc - C.frac_bits)
    hp = _cast_params(S, f_frac + t_frac - hf)
    if cp is None or hp is None:
        return None
    if (fc - C.frac_bits < 0 and csum * 2.0 ** (C.frac_bits - fc) >= 2.0 ** 62) or \
            (f_frac + t_frac - hf < 0 and hprod * 2.0 ** (hf - f_frac - t_frac) >= 2.0 ** 62):
        return None
    dt = np.int32 if narrow else np.int64
    cfast, hfast = _fast_cast(cp), _fast_cast(hp)
    fast = cfast is not None and hfast is not None and all(t[1][1] >= 0 for t in tabs)
    if not fast:
        cfast = hfast = np.zeros(7, np.int64)
    # the accumulator (wrapped) and the cell narrow: every table read by the raw value itself
    direct = fast and A is not None and max(1 << A.width, 1 << C.width) <= _DIRECT_MAX
    if direct:
        (dsig, base_a), (dtg, _) = _direct(fa, f_frac, units, A), _direct(ga, g_frac, units, A)
        dtc, base_c = _direct(ha, t_frac, C.frac_bits, C)
    else:
        dsig = dtg = dtc = np.zeros(1, np.int64)
        base_a = base_c = 0
    mode = ROUNDING[A.rounding] if A is not None else 0

    def rnd(s):  # the rounding constant of a right shift by s (modes 0..2, and 6 with the parity)
        return 0 if mode == 0 or s <= 0 else (1 << (s - 1)) - int(mode in (2, 6))

    wx = np.ascontiguousarray((w.T * 2.0 ** (wf + lift_x)).astype(dt))
    wh = np.ascontiguousarray((r.T * 2.0 ** (rf + lift_h)).astype(dt))
    head = (float(2.0 ** xf), wx, wh, braw.astype(np.int64), dt(sx), dt(rnd(sx)), dt(sh), dt(rnd(sh)), int(mode),
            int(A.width) if A is not None else 0, bool(A.signed) if A is not None else True, tabs[0][0],
            tabs[1][0], tabs[2][0], np.array([t[1] for t in tabs], np.int64), int(gi_shift), int(cf_shift),
            np.array(cp, np.int64), np.array(hp, np.int64))
    tail = (fast, cfast, hfast, direct, dsig, dtg, dtc, int(base_a), int(base_c))
    return head, tail, dt, hf, C.frac_bits, I, H


def lstm_run(plan, x, h0, c0):
    """`lstm_fused` of a `lstm_plan`: x [T, N, I] on the input's grid, h0, c0 [N, H] values."""
    head, tail, dt, hf, cfrac, I, H = plan
    T, N, _ = x.shape
    G = 4 * H
    y = np.empty((T, N, H), np.float64)
    hN = np.empty((N, H), np.float64)
    cN = np.empty((N, H), np.float64)
    nb = 1 if N < _SMALL_BATCH else _BLOCK
    _lstm_seq(np.ascontiguousarray(x, np.float64), *head, np.ascontiguousarray((h0 * 2.0 ** hf).astype(dt)),
              np.ascontiguousarray((c0 * 2.0 ** cfrac).astype(np.int64)), float(2.0 ** -hf),
              float(2.0 ** -cfrac), y, hN, cN, np.empty((I, nb), dt), np.empty((H, nb), dt),
              np.empty((H, nb), np.int64), np.empty((G, nb), dt), *tail)
    return y, hN, cN
