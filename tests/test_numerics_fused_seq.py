"""The compiled batch-1 kernels of the sequence models' ops (LayerNormalization, Softmax, the
range tables of Erf/Gelu/...) against their numpy reference paths (the ones the hls4ml C++
oracle tests in tests/test_numerics_math_oracle.py hold against hls4ml): random formats with
the rounding modes RND_CONV, TRN and RND and the overflow modes WRAP and SAT, odd sizes, the
Emulator's cached plans (`lut.node_plans`) run twice on other inputs."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor import PrecisionError, ops
from conveyor.graph.quantized import CastContext
from conveyor.graph.tensor import Node
from conveyor.numerics.config import NodePrecision
from conveyor.numerics.fixed import FixedType
from conveyor.ops import intdot, layernorm

pytestmark = pytest.mark.skipif(not intdot.available(), reason="numba (the `fast` extra) is not installed")

ROUNDINGS = ("RND_CONV", "TRN", "RND")
OVERFLOWS = ("WRAP", "SAT")


def _grid(t: FixedType, shape, rng, scale=1.0) -> np.ndarray:
    return t.quantize(np.clip(rng.standard_normal(shape) * scale, t.min_value, t.max_value))


def _same(got, want, what):
    (gv, gf), (wv, wf) = got, want
    assert gf == wf, what
    for a, b in zip(gv, wv):
        np.testing.assert_array_equal(a, b, err_msg=what)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("overflow", OVERFLOWS)
def test_layernorm_compiled_equals_numpy(monkeypatch, rounding, overflow):
    rng = np.random.default_rng(len(rounding) * 10 + len(overflow))
    run = ops.get("LayerNormalization").run_fixed
    calls = []
    real = layernorm._rows_int
    monkeypatch.setattr(layernorm, "_rows_int", lambda *a: calls.append(1) or real(*a))
    taken = 0
    for case in range(10):
        dim, lead = int(rng.integers(1, 40)), (int(rng.integers(1, 6)), int(rng.integers(1, 4)))
        fx = FixedType(int(rng.integers(8, 19)), int(rng.integers(3, 8)), True, rounding, overflow)
        fs = FixedType(int(rng.integers(6, 14)), 2, True, rounding, overflow)
        fb = FixedType(int(rng.integers(6, 14)), 3, True, rounding, overflow)
        acc = None if case % 3 == 0 else FixedType(int(rng.integers(14, 30)), int(rng.integers(5, 10)), True,
                                                    rounding, overflow)
        R = FixedType(int(rng.integers(8, 19)), int(rng.integers(2, 6)), True, rounding, overflow)
        tables = {"layernorm": {"size": int(rng.choice([1024, 4096])), "range_power2": int(rng.integers(0, 3)),
                                "format": str(rng.choice(["ap_ufixed<8,5,AP_RND_CONV,AP_SAT>",
                                                          "ap_ufixed<12,6,AP_RND,AP_SAT>"]))}}
        prec = NodePrecision(weight=fs, bias=fb, accum=acc, result=R, tables=tables)
        scale, bias = _grid(fs, (dim,), rng, 1.0), _grid(fb, (dim,), rng, 0.5)
        node = Node(f"ln{case}", "LayerNormalization", ("x", "s", "b"), ("y",), {"axis": -1, "epsilon": 1e-5})
        params = {id(a): (float(a.min()), float(a.max())) for a in (scale, bias)}
        for again in range(2):
            x = _grid(fx, lead + (dim,), rng, float(rng.choice([0.3, 2.0, 8.0])))
            args, fmts = [x, scale, bias], [fx, fs, fb]
            before = len(calls)
            try:
                want = layernorm._fixed_numpy(node, args, fmts, prec, CastContext(False))
            except PrecisionError:
                with pytest.raises(PrecisionError):
                    run(node, args, fmts, prec, CastContext(False, params))
                continue
            got = run(node, args, fmts, prec, CastContext(False, params))
            taken += len(calls) > before
            _same(got, want, f"case {case} run {again} x {fx} acc {acc} R {R} {tables}")
            _same(run(node, args, fmts, prec, CastContext(True)), want, f"observed, case {case}")
    assert taken >= 10, taken


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("overflow", OVERFLOWS)
def test_softmax_compiled_equals_numpy(monkeypatch, rounding, overflow):
    from conveyor.ops import softmax

    rng = np.random.default_rng(100 + len(rounding) * 10 + len(overflow))
    run = ops.get("Softmax").run_fixed
    calls = []
    real = softmax._rows_int
    monkeypatch.setattr(softmax, "_rows_int", lambda *a: calls.append(1) or real(*a))
    for case in range(12):
        n = int(rng.integers(1, 40))
        shape = [int(rng.integers(1, 5)), int(rng.integers(1, 4)), n]
        axis = int(rng.choice([-1, 0, 1]))
        shape[axis], shape[-1] = shape[-1], shape[axis]
        fx = FixedType(int(rng.integers(6, 19)), int(rng.integers(2, 7)), bool(rng.integers(0, 4)), rounding, overflow)
        R = FixedType(int(rng.integers(8, 19)), int(rng.integers(1, 4)), bool(rng.integers(0, 2)), rounding, overflow)
        impl = str(rng.choice(["stable", "stable", "latency"]))
        tables = {"softmax": {"implementation": impl},
                  "softmax_exp": {"size": int(rng.choice([64, 256, 1024])),
                                  "format": f"ap_fixed<{int(rng.integers(12, 19))},8,AP_{rounding},AP_{overflow}>"},
                  "softmax_inv": {"size": int(rng.choice([128, 1024])),
                                  "format": f"ap_fixed<{int(rng.integers(12, 19))},{int(rng.integers(4, 9))},AP_RND,AP_SAT>"}}
        if rng.integers(0, 3) == 0:
            tables["softmax_exp"]["input"] = f"ap_ufixed<{int(rng.integers(6, 14))},{int(rng.integers(2, 5))},AP_{rounding},AP_{overflow}>"
        if rng.integers(0, 3) == 0:
            tables["softmax_inv"]["input"] = f"ap_fixed<{int(rng.integers(10, 19))},{int(rng.integers(4, 9))},AP_{rounding},AP_{overflow}>"
        prec = NodePrecision(weight=fx, bias=fx, accum=None, result=R, tables=tables)
        node = Node(f"sm{case}", "Softmax", ("x",), ("y",), {"axis": axis})
        for again in range(2):
            x = _grid(fx, tuple(shape), rng, float(rng.choice([0.5, 3.0])))
            before = len(calls)
            want = softmax._run_fixed_numpy(node, [x], [fx], prec, CastContext(False))
            got = run(node, [x], [fx], prec, CastContext(False, {}))
            assert len(calls) == before + 1
            _same(got, want, f"case {case} run {again} {fx} {R} {tables} axis {axis}")
            _same(run(node, [x], [fx], prec, CastContext(True)), want, f"observed, case {case}")
