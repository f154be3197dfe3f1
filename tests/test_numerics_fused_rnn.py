"""The compiled LSTM time loop (`conveyor.ops.intrnn.lstm_fused`, taken by Graph.run's
non-observing runs) against the numpy time loop of `rnn._lstm_fixed` (the one the oracle
tests in tests/test_numerics_rnn.py hold against hls4ml's C++), on random formats and data:
exact ('auto') and wrapping accumulators with every rounding mode of the products, state and
cell casts with every rounding and WRAP/SAT/SAT_SYM, narrow (int32) and wide (int64)
integers, odd sizes and batches that leave a partial sample block, both directions, initial
states, other table sizes and formats."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import PrecisionError, ops
from conveyor.graph.quantized import CastContext
from conveyor.graph.tensor import Node
from conveyor.numerics.config import NodePrecision
from conveyor.numerics.fixed import ROUNDING_MODES, FixedType
from conveyor.ops import intdot, intrnn

pytestmark = pytest.mark.skipif(not intdot.available(), reason="numba (the `fast` extra) is not installed")


def _grid(t: FixedType, shape, rng, scale=1.0) -> np.ndarray:
    return t.quantize(np.clip(rng.standard_normal(shape) * scale, t.min_value, t.max_value))


def _fmt(rng, lo=4, hi=16, overflow=("WRAP", "SAT", "SAT_SYM")) -> FixedType:
    w = int(rng.integers(lo, hi + 1))
    return FixedType(w, int(rng.integers(2, min(w, 8) + 1)), bool(rng.integers(0, 5) > 0),
                     str(rng.choice(ROUNDING_MODES)), str(rng.choice(overflow)))


def _problem(rng):
    n_in, hid = int(rng.integers(1, 8)), int(rng.integers(1, 6))
    seq = int(rng.integers(1, 6))
    batch = int(rng.choice([1, 3, intrnn._BLOCK, intrnn._BLOCK + 5, 2 * intrnn._BLOCK + 1]))
    direction = str(rng.choice(["forward", "reverse", "bidirectional"]))
    ndir = 2 if direction == "bidirectional" else 1
    wide = int(rng.integers(0, 3)) == 0  # products beyond int32: the int64 kernel
    fx = FixedType(int(rng.integers(18, 27) if wide else rng.integers(6, 17)), int(rng.integers(2, 6)))
    fw = FixedType(int(rng.integers(14, 21) if wide else rng.integers(6, 13)), int(rng.integers(1, 3)))
    fr = FixedType(int(rng.integers(14, 21) if wide else rng.integers(6, 13)), int(rng.integers(1, 3)))
    fb = FixedType(int(rng.integers(6, 13)), int(rng.integers(1, 4)))
    S, C = _fmt(rng), _fmt(rng, 6, 20)
    kind = int(rng.integers(0, 4))
    if kind == 3:  # narrow accumulator and cell, casts by one shift: the kernel's direct tables
        S = FixedType(S.width, S.integer, S.signed, str(rng.choice(["TRN", "RND", "RND_MIN_INF"])), S.overflow)
        C = FixedType(min(C.width, 16), min(C.integer, 6), C.signed, str(rng.choice(["TRN", "RND"])), C.overflow)
    if kind == 0:
        A = None
    else:
        pf = max(fx.frac_bits + fw.frac_bits, S.frac_bits + fr.frac_bits)
        width = {1: int(rng.integers(10, 30)), 2: int(rng.integers(34, 48)), 3: int(rng.integers(8, 17))}[kind]
        frac = int(rng.integers(max(1, pf - 12), max(2, pf - 3)))  # rounding products (a right shift)
        A = FixedType(width, width - frac, bool(rng.integers(0, 6) > 0), str(rng.choice(ROUNDING_MODES)), "WRAP")
    R = _fmt(rng)
    # tables fine enough (4096 entries: 2^8 per unit) that one LSB of a coarse accumulator
    # moves the index, so that a product's rounding shows in the outputs
    tables = {"sigmoid": {"size": int(rng.choice([1000, 4096, 4096]))}, "tanh": {"size": 4096}}
    if rng.integers(0, 2):
        tables["sigmoid"]["format"] = "ap_fixed<12,4>"
    if rng.integers(0, 2):
        tables["tanh"] = {"size": int(rng.choice([512, 4096])), "min": -2.0, "max": 6.0,
                          "format": "ap_fixed<14,2,AP_RND,AP_SAT>"}
    prec = NodePrecision(weight=fw, bias=fb, accum=A, result=R, state=S, cell=C, tables=tables)
    ins = ["X", "W", "R", "B"]
    args = [_grid(fx, (seq, batch, n_in), rng, 3.0), _grid(fw, (ndir, 4 * hid, n_in), rng, 0.7),
            _grid(fr, (ndir, 4 * hid, hid), rng, 0.7), _grid(fb, (ndir, 8 * hid), rng, 0.5)]
    fmts = [fx, fw, fr, fb]
    if rng.integers(0, 2):  # initial states
        ins += ["", "h0", "c0"]
        args += [None, _grid(S, (ndir, batch, hid), rng, 2.0), _grid(C, (ndir, batch, hid), rng, 2.0)]
        fmts += [None, S, C]
    node = Node("lstm", "LSTM", tuple(ins), ("Y", "Y_h", "Y_c"), {"hidden_size": hid, "direction": direction})
    return node, args, fmts, prec


def test_fused_lstm_equals_the_numpy_time_loop(monkeypatch):
    rng = np.random.default_rng(3)
    run = ops.get("LSTM").run_fixed
    kinds, refused = [], 0
    real_seq, real_plan = intrnn._lstm_seq, intrnn.lstm_plan
    monkeypatch.setattr(intrnn, "_lstm_seq", lambda *a: kinds.append((a[2].dtype, a[10] > 0, a[-6])) or real_seq(*a))
    for case in range(150):
        node, args, fmts, prec = _problem(rng)
        before = len(kinds)
        try:
            got, got_fmts = run(node, args, fmts, prec, CastContext(False))
        except PrecisionError:  # sums beyond float64's exact range: the numpy loop refuses them too
            monkeypatch.setattr(intrnn, "lstm_plan", lambda *a, **k: None)
            with pytest.raises(PrecisionError):
                run(node, args, fmts, prec, CastContext(False))
            monkeypatch.setattr(intrnn, "lstm_plan", real_plan)
            refused += 1
            continue
        fused = len(kinds) > before
        monkeypatch.setattr(intrnn, "lstm_plan", lambda *a, **k: None)
        want, want_fmts = run(node, args, fmts, prec, CastContext(False))
        monkeypatch.setattr(intrnn, "lstm_plan", real_plan)
        assert got_fmts == want_fmts
        for a, b, name in zip(got, want, ("Y", "Y_h", "Y_c")):
            np.testing.assert_array_equal(a, b, err_msg=f"case {case} {name} fused={fused} {node.attrs} {fmts} {prec}")
    # the kernel really ran, with int32 and int64 sums, wrapping and exact accumulators
    assert len(kinds) >= 110 and refused < 25, (len(kinds), refused)
    seen = {(np.dtype(dt).itemsize, wraps) for dt, wraps, _ in kinds}
    assert {(4, True), (8, True), (8, False)} <= seen, seen
    direct = sum(d for _, _, d in kinds)
    assert 10 <= direct <= len(kinds) - 30, direct  # tables read by raw value, and by index


def test_fused_lstm_steps_aside_where_it_cannot_be_exact(monkeypatch):
    """Saturating accumulators, sequence_lens and observing runs keep the numpy loop."""
    rng = np.random.default_rng(5)
    node, args, fmts, prec = _problem(rng)
    calls = []
    monkeypatch.setattr(intrnn, "_lstm_seq", lambda *a: calls.append(1))
    sat = NodePrecision(prec.weight, prec.bias, FixedType(20, 8, overflow="SAT"), prec.result, prec.tables,
                        prec.state, prec.cell)
    ops.get("LSTM").run_fixed(node, args, fmts, sat, CastContext(False))
    ops.get("LSTM").run_fixed(node, args, fmts, prec, CastContext(True))
    assert not calls


@pytest.mark.parametrize("rounding", ["RND_CONV", "TRN", "RND"])
@pytest.mark.parametrize("overflow", ["WRAP", "SAT"])
def test_fused_lstm_small_batches_one_sample_at_a_time(monkeypatch, rounding, overflow):
    """Batches below `_SMALL_BATCH` run one sample at a time (units innermost, `_accum_one` and
    `_gates_one`); the state and cell casts in every rounding (RND_CONV by its parity term) and
    overflow mode, exact and wrapping accumulators (products rounded in RND_CONV too), odd
    sizes. The Emulator's parameters (`is_param`) keep their plan between runs: a second run
    on other inputs must still equal the numpy loop."""
    rng = np.random.default_rng({"RND_CONV": 11, "TRN": 12, "RND": 13}[rounding] + 7 * (overflow == "SAT"))
    run = ops.get("LSTM").run_fixed
    real_seq, real_plan = intrnn._lstm_seq, intrnn.lstm_plan
    blocks = []
    monkeypatch.setattr(intrnn, "_lstm_seq", lambda *a: blocks.append((a[30].shape[1], a[31])) or real_seq(*a))
    for case in range(8):
        n_in, hid, seq = int(rng.integers(1, 19)), int(rng.integers(1, 13)), int(rng.integers(1, 9))
        batch = int(rng.choice([1, 2, intrnn._SMALL_BATCH - 1]))
        fx, fw, fb = FixedType(int(rng.integers(8, 17)), 4), FixedType(int(rng.integers(6, 12)), 1), FixedType(10, 3)
        S = FixedType(int(rng.integers(8, 17)), int(rng.integers(2, 5)), True, rounding, overflow)
        C = FixedType(int(rng.integers(10, 20)), int(rng.integers(3, 6)), True, rounding, overflow)
        A = None if case % 2 == 0 else FixedType(int(rng.integers(18, 30)), 10, True, "RND_CONV", "WRAP")
        prec = NodePrecision(weight=fw, bias=fb, accum=A, result=S, state=S, cell=C,
                             tables={"sigmoid": {"size": 4096}, "tanh": {"size": 4096}})
        w, r = _grid(fw, (1, 4 * hid, n_in), rng, 0.7), _grid(fw, (1, 4 * hid, hid), rng, 0.7)
        b = _grid(fb, (1, 8 * hid), rng, 0.5)
        node = Node(f"lstm{case}", "LSTM", ("X", "W", "R", "B"), ("Y", "Y_h", "Y_c"), {"hidden_size": hid})
        params = {id(a): (float(a.min()), float(a.max())) for a in (w, r, b)}
        for again in range(2):
            x = _grid(fx, (seq, batch, n_in), rng, 3.0)
            args, fmts = [x, w, r, b], [fx, fw, fw, fb]
            before = len(blocks)
            got, _ = run(node, args, fmts, prec, CastContext(False, params))
            assert len(blocks) == before + 1 and blocks[-1] == (1, True), blocks[-1:]
            monkeypatch.setattr(intrnn, "lstm_plan", lambda *a, **k: None)
            want, _ = run(node, args, fmts, prec, CastContext(False))
            monkeypatch.setattr(intrnn, "lstm_plan", real_plan)
            for a, bb, name in zip(got, want, ("Y", "Y_h", "Y_c")):
                np.testing.assert_array_equal(a, bb, err_msg=f"case {case} run {again} {name} {fmts} {prec}")
