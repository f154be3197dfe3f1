"""Bit-exact oracle for the nonlinear kernels: conveyor's Sigmoid, Tanh, Softmax, LeakyRelu and
BatchNormalization against hls4ml's own HLS C++ (nnet_activation.h, nnet_batchnorm.h of the
pinned hls4ml wheel, compiled with g++), and conveyor's LRN against its C++ definition
(tests/hls4ml_oracle/conveyor_lrn.h). Everything runs through `Graph.run(x, precision=...)`
on single-node ONNX graphs, so the registrations and the config's `tables` are covered too.

The driver is generated from CASES below, compiled once and cached under
``$CONVEYOR_CACHE/hls4ml_oracle/<hash>`` (default ``~/.cache/conveyor``). No network or no g++
is a failure, not a skip. Zero mismatches allowed.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hls4ml_headers import hls4ml_driver
from onnx import TensorProto, helper, numpy_helper
from oracle_build import case_parts, parallel_parts

import conveyor
from conveyor import PrecisionError
from conveyor.numerics import FixedType, PrecisionConfig
from conveyor.ops import lut
from conveyor.ops.norm import lrn_sum_format

DRIVER_DIR = Path(__file__).parent / "hls4ml_oracle"
DRIVER_SOURCES = ("oracle.h", "conveyor_lrn.h", "main.cpp")
CXXFLAGS = ("-O1", "-std=c++14", "-w")
SOFTMAX_VECTORS = 100_000

F = FixedType.parse


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    kind: str                      # sigmoid tanh softmax leaky batchnorm lrn
    data: str
    res: str
    p: dict = field(default_factory=dict)
    id: int = -1


def _sig_tanh_cases(kind: str) -> list[Case]:
    small_res = "ap_ufixed<12,0,AP_RND,AP_SAT>" if kind == "sigmoid" else "ap_fixed<12,1,AP_RND,AP_SAT>"
    return [
        Case(kind, "ap_fixed<16,6>", "ap_fixed<16,6>", {"grid": True}),
        Case(kind, "ap_fixed<8,3>", "ap_fixed<8,3>", {"grid": True}),
        Case(kind, "ap_fixed<18,8>", "ap_fixed<18,8>", {"grid": True}),
        Case(kind, "ap_fixed<16,6>", small_res, {"grid": True, "size": 1000, "table": "ap_fixed<16,2,AP_RND_CONV>"}),
        Case(kind, "ap_ufixed<12,4>", "ap_fixed<16,6>", {"grid": True, "size": 2048}),
        Case(kind, "ap_fixed<40,32>", "ap_fixed<16,6>", {"grid": False}),   # (int) keeps 32 bits
        Case(kind, "ap_fixed<6,8>", "ap_fixed<16,6>", {"grid": True}),     # LSB 4
        Case(kind, "ap_fixed<16,6>", "ap_fixed<24,4,AP_RND>", {"grid": True, "table": "ap_fixed<32,2,AP_RND>"}),
    ]


HLS_DEF = "ap_fixed<18,8,AP_RND,AP_SAT>"   # hls4ml's exp_table_t / inv_table_t / inv_inp_t / accum_t


def _softmax_cases() -> list[Case]:
    d = {"exp": HLS_DEF, "inv": HLS_DEF, "inv_inp": HLS_DEF, "accum": HLS_DEF, "exp_size": 1024, "inv_size": 1024}
    q16, q8, q18 = "ap_fixed<16,6>", "ap_fixed<8,3>", "ap_fixed<18,8>"
    return [
        Case("softmax", q16, q16, {**d, "n": 5, "impl": "stable"}),
        Case("softmax", q16, q16, {**d, "n": 10, "impl": "stable"}),
        Case("softmax", q16, q16, {**d, "n": 10, "impl": "stable", "accum": None}),
        Case("softmax", q16, q16, {**d, "n": 5, "impl": "latency"}),
        Case("softmax", q16, q16, {**d, "n": 10, "impl": "latency", "accum": None}),
        Case("softmax", q8, "ap_ufixed<8,0,AP_RND,AP_SAT>", {**d, "n": 5, "impl": "stable"}),
        Case("softmax", q8, q8, {**d, "n": 10, "impl": "latency"}),
        Case("softmax", q18, q18, {**d, "n": 10, "impl": "stable"}),
        Case("softmax", "ap_ufixed<12,4>", q16, {**d, "n": 5, "impl": "stable"}),
        Case("softmax", q16, "ap_fixed<16,1,AP_RND_CONV,AP_SAT>",
             {"n": 10, "impl": "stable", "exp": "ap_fixed<16,6,AP_RND,AP_SAT>", "exp_size": 512,
              "inv": "ap_fixed<20,10,AP_RND_CONV,AP_SAT>", "inv_size": 2048,
              "inv_inp": "ap_ufixed<16,6,AP_RND,AP_SAT>", "accum": "ap_fixed<20,8,AP_RND,AP_SAT>"}),
        Case("softmax", q16, q16, {**d, "n": 10, "impl": "argmax"}),
    ]


def _other_cases() -> list[Case]:
    return [
        Case("leaky", "ap_fixed<16,6>", "ap_fixed<16,6>", {"alpha": 0.01, "param": "ap_fixed<16,6>"}),
        Case("leaky", "ap_fixed<8,3>", "ap_fixed<8,3>", {"alpha": 0.3, "param": "ap_fixed<8,1,AP_RND>"}),
        Case("leaky", "ap_fixed<18,8>", "ap_fixed<12,4,AP_RND,AP_SAT>", {"alpha": 0.1, "param": "ap_fixed<18,8>"}),
        Case("batchnorm", "ap_fixed<16,6>", "ap_fixed<16,6>", {"scale": "ap_fixed<16,6>", "bias": "ap_fixed<16,6>"}),
        Case("batchnorm", "ap_fixed<8,3>", "ap_fixed<8,3>", {"scale": "ap_fixed<8,3>", "bias": "ap_fixed<8,3>"}),
        Case("batchnorm", "ap_fixed<18,8>", "ap_fixed<18,8,AP_RND,AP_SAT>",
             {"scale": "ap_fixed<18,8,AP_RND_CONV>", "bias": "ap_fixed<18,8,AP_RND_CONV>"}),
        Case("lrn", "ap_fixed<16,6>", "ap_fixed<16,6>",
             {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0, "accum": None, "scale": 10.0}),
        Case("lrn", "ap_fixed<8,3>", "ap_fixed<8,3>",
             {"size": 3, "alpha": 0.5, "beta": 0.75, "bias": 2.0, "accum": "ap_fixed<12,6>", "scale": 2.0,
              "table": {"size": 1024, "min": 0, "max": 64, "format": "ap_fixed<16,2,AP_RND>"}}),
        Case("lrn", "ap_fixed<18,8>", "ap_fixed<18,8>",
             {"size": 4, "alpha": 1e-3, "beta": 0.5, "bias": 1.0, "accum": "ap_fixed<24,18,AP_RND,AP_SAT>",
              "scale": 40.0, "table": {"size": 2048, "min": 0, "max": 131072}}),
    ]


CASES = _sig_tanh_cases("sigmoid") + _sig_tanh_cases("tanh") + _softmax_cases() + _other_cases()
for _i, _c in enumerate(CASES):
    _c.id = _i


# ----------------------------------------------------------------- hls4ml's own size rules
def hls4ml_softmax_sizes(c: Case) -> tuple[int, int]:
    """Table sizes as hls4ml 1.3's Vivado backend sets them (FixSoftmaxTableSize, then
    SoftmaxConfigTemplate for the stable implementation), from its Python code."""
    t_in, t_inv = F(c.data), F(c.p["inv"])
    exp_size, inv_size = c.p["exp_size"], c.p["inv_size"]
    cap = 2 ** min(t_in.width, t_inv.width)
    exp_size, inv_size = min(exp_size, cap), min(inv_size, cap)
    if c.p["impl"] == "stable" and t_in.signed:
        exp_size = min(exp_size, 2 ** (t_in.width - 1))
    return exp_size, inv_size


def _norm_t(c: Case) -> str:
    t = F(c.data)
    s = int(t.signed)
    return f"ap_ufixed<{t.width - s},{t.integer - s}>"


def _auto_accum(c: Case) -> str:
    # the exact accumulator: hls4ml's own (unused) accum_t_str formula
    e, s = F(c.p["exp"]), math.ceil(math.log2(c.p["n"]))
    return f"ap_{'' if e.signed else 'u'}fixed<{e.width + s},{e.integer + s}>"


# ------------------------------------------------------------------------- C++ generation
def _cxx_case(c: Case) -> str:
    ns = f"case{c.id}"
    head = f"namespace {ns} {{\ntypedef {F(c.data)} data_t;\ntypedef {F(c.res)} res_t;\n"
    if c.kind in ("sigmoid", "tanh"):
        body = (f"struct cfg : nnet::activ_config {{\n  static const unsigned n_in = 1;\n"
                f"  static const unsigned table_size = {c.p.get('size', 1024)};\n"
                "  static const unsigned io_type = nnet::io_parallel;\n  static const unsigned reuse_factor = 1;\n"
                f"  typedef {F(c.p.get('table', 'ap_fixed<18,8>'))} table_t;\n}};\n")
        call = f"oracle::{c.kind}<{ns}::data_t, {ns}::res_t, {ns}::cfg>"
    elif c.kind == "softmax":
        exp_size, inv_size = hls4ml_softmax_sizes(c)
        accum = c.p["accum"] if c.p["accum"] is not None else _auto_accum(c)
        norm = _norm_t(c) if c.p["impl"] == "stable" else "ap_fixed<1,0>"
        body = (f"struct cfg : nnet::activ_config {{\n"
                f"  static const unsigned n_in = {c.p['n']};\n  static const unsigned n_slice = {c.p['n']};\n"
                "  static const unsigned n_outer = 1;\n  static const unsigned n_inner = 1;\n"
                "  static const unsigned parallelization_factor = -1;\n"
                f"  static const unsigned exp_table_size = {exp_size};\n"
                f"  static const unsigned inv_table_size = {inv_size};\n"
                "  static const unsigned io_type = nnet::io_parallel;\n  static const unsigned reuse_factor = 1;\n"
                "  static const unsigned axis = 1;\n"
                f"  static const nnet::softmax_implementation implementation = nnet::softmax_implementation::{c.p['impl']};\n"
                "  static constexpr float exp_scale = 1.0;\n"
                f"  typedef {F(c.p['exp'])} exp_table_t;\n  typedef {F(c.p['inv'])} inv_table_t;\n"
                f"  typedef {F(accum)} accum_t;\n  typedef {F(c.p['inv_inp'])} inv_inp_t;\n"
                f"  typedef {F(norm)} inp_norm_t;\n}};\n")
        call = f"oracle::softmax<{ns}::data_t, {ns}::res_t, {ns}::cfg>"
    elif c.kind == "leaky":
        body = (f"struct cfg : nnet::activ_config {{\n  static const unsigned n_in = 1;\n"
                "  static const unsigned table_size = 1024;\n  static const unsigned io_type = nnet::io_parallel;\n"
                "  static const unsigned reuse_factor = 1;\n  typedef ap_fixed<18,8> table_t;\n"
                f"  typedef {F(c.p['param'])} param_t;\n}};\n")
        call = f"oracle::leaky_relu<{ns}::data_t, {ns}::cfg::param_t, {ns}::res_t, {ns}::cfg>"
    elif c.kind == "batchnorm":
        body = (f"struct cfg : nnet::batchnorm_config {{\n  static const unsigned n_in = {BN_C * BN_S};\n"
                f"  static const unsigned n_filt = {BN_C};\n"
                "  static const unsigned n_scale_bias = (n_filt == -1) ? n_in : n_filt;\n"
                "  static const unsigned io_type = nnet::io_parallel;\n  static const unsigned reuse_factor = 1;\n"
                "  static const unsigned multiplier_limit = DIV_ROUNDUP(n_in, reuse_factor);\n"
                "  static const bool store_weights_in_bram = false;\n"
                f"  typedef {F(c.p['bias'])} bias_t;\n  typedef {F(c.p['scale'])} scale_t;\n"
                "  template<class x_T, class y_T>\n  using product = nnet::product::mult<x_T, y_T>;\n};\n")
        call = f"oracle::batchnorm<{ns}::data_t, {ns}::res_t, {ns}::cfg>"
    else:  # lrn
        tab = {**lut.DEFAULTS["lrn"], **c.p.get("table", {})}
        accum = c.p["accum"] if c.p["accum"] is not None else str(lrn_sum_format(F(c.data), c.p["size"]))
        body = (f"struct cfg : conveyor::lrn_config {{\n  static const unsigned n_chan = {LRN_C};\n"
                f"  static const unsigned n_spatial = {LRN_S};\n  static const unsigned size = {c.p['size']};\n"
                f"  static const unsigned table_size = {tab['size']};\n"
                f"  static const int table_min = {int(tab['min'])};\n  static const int table_max = {int(tab['max'])};\n"
                f"  static constexpr double alpha = {_f32(c.p['alpha']):.17g}, beta = {_f32(c.p['beta']):.17g}, "
                f"bias = {_f32(c.p['bias']):.17g};\n"
                f"  typedef {F(tab['format'])} table_t;\n  typedef {F(accum)} accum_t;\n}};\n")
        call = f"oracle::lrn<{ns}::data_t, {ns}::res_t, {ns}::cfg>"
    return head + body + f"}}\nint run_case_{c.id}(long count, int mode) {{ return {call}(count, mode); }}\n"


@pytest.fixture(scope="module")
def driver() -> Path:
    return hls4ml_driver("hls4ml_oracle", label="hls4ml oracle", sources_dir=DRIVER_DIR, sources=DRIVER_SOURCES,
                         generated=case_parts(CASES, _cxx_case, parallel_parts(12)), cxxflags=CXXFLAGS)


def _call(exe: Path, case: Case, count: int, payload: np.ndarray | None = None, mode: int = 0) -> np.ndarray:
    data = b"" if payload is None else np.ascontiguousarray(payload, dtype=np.float64).tobytes()
    proc = subprocess.run([str(exe), str(case.id), str(count), str(mode)], input=data, capture_output=True,
                          timeout=300, check=False)
    if proc.returncode:
        pytest.fail(f"hls4ml oracle case {case.id} ({case.kind}) failed: {proc.stderr.decode()[-2000:]}")
    return np.frombuffer(proc.stdout, dtype=np.float64)


# ------------------------------------------------------------------- conveyor side: graphs
BN_N, BN_C, BN_S = 3000, 8, 4
LRN_N, LRN_C, LRN_S = 400, 16, 4


def _f32(v: float) -> float:
    return float(np.float32(v))  # ONNX float attributes


def _graph(op: str, in_shape, attrs=None, inits=None, extra_inputs=(), opset=17):
    inits = dict(inits or {})
    node = helper.make_node(op, ["x", *extra_inputs], ["y"], name="n", **(attrs or {}))
    g = helper.make_graph(
        [node], f"lut_{op}",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, list(in_shape))],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, list(in_shape))],
        [numpy_helper.from_array(np.asarray(v, np.float64), k) for k, v in inits.items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return conveyor.from_model(model)


def _grid(t: FixedType) -> np.ndarray:
    return t.from_raw(np.arange(t.raw_min, t.raw_max + 1, dtype=np.int64))


def _random_grid(t: FixedType, shape, rng, scale=None) -> np.ndarray:
    """Values of t: a third uniform over its range, a third normal (std `scale`), a third near each other."""
    n = int(np.prod(shape))
    sat = FixedType(t.width, t.integer, t.signed, "TRN", "SAT")
    uni = t.from_raw(rng.integers(t.raw_min, t.raw_max + 1, n, dtype=np.int64))
    scale = scale if scale is not None else t.max_value / 4
    nor = sat.quantize(rng.standard_normal(n) * scale + (0 if t.signed else scale))
    close = sat.quantize(rng.standard_normal(n) * 0.05 + np.repeat(rng.standard_normal(n // 10 + 1), 10)[:n] * scale)
    pick = rng.integers(0, 3, n)
    return np.choose(pick, [uni, nor, close]).reshape(shape)


def _config(c: Case) -> dict:
    node = {"result": c.res}
    cfg: dict = {"default": c.data, "input": c.data, "nodes": {"n": node}}
    if c.kind in ("sigmoid", "tanh"):
        cfg["tables"] = {c.kind: {"size": c.p.get("size", 1024), "format": c.p.get("table", "ap_fixed<18,8>")}}
    elif c.kind == "softmax":
        node["accum"] = c.p["accum"] if c.p["accum"] is not None else "auto"
        cfg["tables"] = {"softmax": {"implementation": c.p["impl"]},
                         "softmax_exp": {"size": c.p["exp_size"], "format": c.p["exp"]},
                         "softmax_inv": {"size": c.p["inv_size"], "format": c.p["inv"], "input": c.p["inv_inp"]}}
    elif c.kind == "leaky":
        node["weight"] = c.p["param"]
    elif c.kind == "batchnorm":
        node["weight"], node["bias"] = c.p["scale"], c.p["bias"]
    elif c.kind == "lrn":
        node["accum"] = c.p["accum"] if c.p["accum"] is not None else "auto"
        if "table" in c.p:
            cfg["tables"] = {"lrn": c.p["table"]}
    return cfg


def _inputs_and_graph(c: Case, rng):
    """(conveyor graph, its input, payload for the driver, count, reshape of the driver's output)."""
    t = F(c.data)
    if c.kind in ("sigmoid", "tanh", "leaky"):
        x = _grid(t) if c.p.get("grid", True) else _random_grid(t, (65536,), rng, scale=2.0 ** 30)
        attrs = {"alpha": c.p["alpha"]} if c.kind == "leaky" else {}
        g = _graph({"sigmoid": "Sigmoid", "tanh": "Tanh", "leaky": "LeakyRelu"}[c.kind], x.shape, attrs)
        payload = np.concatenate([[_f32(c.p["alpha"])], x]) if c.kind == "leaky" else x
        return g, x, payload, x.size, lambda y: y
    if c.kind == "softmax":
        n = c.p["n"]
        x = _random_grid(t, (SOFTMAX_VECTORS, n), rng, scale=2.0)
        return _graph("Softmax", x.shape, {"axis": -1}), x, x, SOFTMAX_VECTORS, lambda y: y.reshape(x.shape)
    if c.kind == "batchnorm":
        x = _random_grid(t, (BN_N, BN_C, BN_S), rng, scale=t.max_value / 3)
        gamma, beta = rng.uniform(0.5, 2.0, BN_C).astype(np.float32), rng.standard_normal(BN_C).astype(np.float32)
        mean, var = rng.standard_normal(BN_C).astype(np.float32), rng.uniform(0.1, 2.0, BN_C).astype(np.float32)
        g = _graph("BatchNormalization", x.shape, {"epsilon": 1e-5},
                   {"gamma": gamma, "beta": beta, "mean": mean, "var": var}, ("gamma", "beta", "mean", "var"))
        eps = _f32(1e-5)
        scale = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        bias = beta.astype(np.float64) - mean.astype(np.float64) * scale
        chan_last = np.transpose(x, (0, 2, 1))          # hls4ml: channels last, index % n_filt
        payload = np.concatenate([scale, bias, chan_last.ravel()])
        return g, x, payload, BN_N, lambda y: np.transpose(y.reshape(BN_N, BN_S, BN_C), (0, 2, 1))
    x = _random_grid(t, (LRN_N, LRN_C, LRN_S), rng, scale=c.p["scale"])
    g = _graph("LRN", x.shape, {k: c.p[k] for k in ("size", "alpha", "beta", "bias")})
    return g, x, x, LRN_N, lambda y: y.reshape(x.shape)


def _run_case(exe: Path, c: Case, seed: int):
    rng = np.random.default_rng(seed)
    g, x, payload, count, shape_back = _inputs_and_graph(c, rng)
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(_call, exe, c, count, payload)
        mine = g.run(x, precision=_config(c))["y"]
        theirs = shape_back(fut.result())
    return x, mine, theirs


def _assert_same(c: Case, x, mine, theirs):
    assert mine.shape == theirs.shape
    bad = np.flatnonzero(mine.ravel() != theirs.ravel())
    if bad.size:
        i = bad[0]
        rows = x.reshape(mine.shape[0], -1) if mine.ndim > 1 else x.reshape(-1, 1)
        where = np.unravel_index(i, mine.shape)
        pytest.fail(f"case {c.id} {c.kind} {c.data}->{c.res} {c.p}: {bad.size} of {mine.size} differ; first at "
                    f"{where}: input row {rows[where[0]] if mine.ndim > 1 else x.ravel()[i]}, conveyor "
                    f"{mine.ravel()[i]!r}, hls4ml {theirs.ravel()[i]!r}")


def _check_kind(driver, kinds):
    cases = [c for c in CASES if c.kind in kinds]
    total = 0
    for c in cases:
        x, mine, theirs = _run_case(driver, c, seed=100 + c.id)
        _assert_same(c, x, mine, theirs)
        total += mine.size
    return total


# ------------------------------------------------------------------------------- the tests
def test_tables_equal_hls4ml_tables(driver):
    """Every table entry, as hls4ml's init_*_table computes it (libm expf/tanhf, float math)."""
    for c in CASES:
        if c.kind in ("sigmoid", "tanh"):
            size, fmt = c.p.get("size", 1024), F(c.p.get("table", "ap_fixed<18,8>"))
            lo, hi = (-8, 8) if c.kind == "sigmoid" else (-4, 4)
            mine = (lut.sigmoid_table if c.kind == "sigmoid" else lut.tanh_table)(size, lo, hi, fmt).values
        elif c.kind == "softmax" and c.p["impl"] != "argmax":
            exp_size, inv_size = hls4ml_softmax_sizes(c)
            addr = F(_norm_t(c)) if c.p["impl"] == "stable" else F(c.data)
            mine = np.concatenate([
                lut.softmax_exp_table(addr, exp_size, F(c.p["exp"]), c.p["impl"] == "stable"),
                lut.softmax_inv_table(F(c.p["inv_inp"]), inv_size, F(c.p["inv"]))])
        elif c.kind == "lrn":
            tab = {**lut.DEFAULTS["lrn"], **c.p.get("table", {})}
            mine = lut.lrn_table(tab["size"], int(tab["min"]), int(tab["max"]), F(tab["format"]), _f32(c.p["bias"]),
                                 _f32(c.p["alpha"]) / c.p["size"], _f32(c.p["beta"])).values
        else:
            continue
        theirs = _call(driver, c, 0, mode=1)
        assert mine.shape == theirs.shape, (c, mine.shape, theirs.shape)
        bad = np.flatnonzero(mine != theirs)
        assert bad.size == 0, f"case {c.id} {c.kind} {c.p}: table entries {bad[:10]} differ: {mine[bad[:3]]} vs {theirs[bad[:3]]}"


def test_sigmoid_and_tanh_bit_exact(driver):
    """All 65,536 values of ap_fixed<16,6> (and every value of <8,3>, <18,8>, <12,4> unsigned,
    <6,8>; 65,536 random values of <40,32>) through hls4ml's nnet::sigmoid / nnet::tanh."""
    assert _check_kind(driver, ("sigmoid", "tanh")) > 2 * (65536 * 4 + 262144)


def test_softmax_bit_exact(driver):
    """100,000 random vectors per case, lengths 5 and 10: stable, latency and argmax, hls4ml's
    default table types and conveyor's exact ('auto') accumulator."""
    assert _check_kind(driver, ("softmax",)) >= 11 * SOFTMAX_VECTORS * 5


def test_leaky_relu_and_batchnorm_bit_exact(driver):
    _check_kind(driver, ("leaky", "batchnorm"))


def test_lrn_matches_its_cxx_definition(driver):
    _check_kind(driver, ("lrn",))


# ---- without the oracle --------------------------------------------------------------------
def test_float_sanity_at_16_bits():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 10)) * 3
    for op, attrs, tol in (("Sigmoid", {}, 0.01), ("Tanh", {}, 0.01), ("LeakyRelu", {"alpha": 0.1}, 0.005)):
        g = _graph(op, x.shape, attrs)
        err = np.max(np.abs(g.run(x, precision="ap_fixed<16,6>")["y"] - g.run(x)["y"]))
        assert err < tol, (op, err)
    # Softmax: hls4ml's default inverse table reads the top 10 bits of an ap_fixed<18,8> sum, steps
    # of 0.25, so 1/sum is off by up to ~20 %; a finer address for 1/sum fixes that.
    g = _graph("Softmax", x.shape, {"axis": -1})
    ref = g.run(x)["y"]
    coarse = np.max(np.abs(g.run(x, precision="ap_fixed<16,6>")["y"] - ref))
    fine = {"default": "ap_fixed<16,6>", "tables": {"softmax_inv": {"input": "ap_ufixed<16,4>", "size": 4096}}}
    assert 0.1 < coarse < 0.25 and np.max(np.abs(g.run(x, precision=fine)["y"] - ref)) < 0.01
    xl = np.abs(rng.standard_normal((2, 16, 5, 5))) * 8
    g = _graph("LRN", xl.shape, {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0})
    ref = g.run(xl)["y"]
    assert np.max(np.abs(g.run(xl, precision="ap_fixed<16,6>")["y"] - ref) / (np.abs(ref) + 1)) < 0.01
    gd = _graph("Div", x.shape, inits={"d": np.array([3.0])}, extra_inputs=("d",))
    assert np.max(np.abs(gd.run(x, precision="ap_fixed<16,6>")["y"] - x / 3)) < 0.005
    # unfolded BatchNormalization (no conv before it)
    c = 10
    gb = _graph("BatchNormalization", x.shape, {"epsilon": 1e-5},
                {"g": rng.uniform(0.5, 2, c), "b": rng.standard_normal(c), "m": rng.standard_normal(c),
                 "v": rng.uniform(0.5, 2, c)}, ("g", "b", "m", "v"))
    assert np.max(np.abs(gb.run(x, precision="ap_fixed<16,6>")["y"] - gb.run(x)["y"])) < 0.02


def test_div_is_a_product_with_the_quantized_reciprocal():
    x = _grid(F("ap_fixed<12,4>"))
    g = _graph("Div", x.shape, inits={"d": np.array([3.0])}, extra_inputs=("d",))
    cfg = {"default": "ap_fixed<12,4>", "nodes": {"n": {"weight": "ap_fixed<16,2,AP_RND>", "result": "ap_fixed<16,6>"}}}
    recip = F("ap_fixed<16,2,AP_RND>").quantize(np.array(1.0 / 3.0))
    np.testing.assert_array_equal(g.run(x, precision=cfg)["y"], F("ap_fixed<16,6>").quantize(x * recip))


def test_div_by_a_runtime_value_is_refused_naming_the_node():
    node = helper.make_node("Div", ["x", "d"], ["y"], name="ratio")
    gp = helper.make_graph([node], "div", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in "xd"],
                           [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    g = conveyor.from_model(m)
    with pytest.raises(PrecisionError, match="ratio.*constant"):
        g.run({"x": np.ones(4, np.float32), "d": np.ones(4, np.float32)}, precision="ap_fixed<16,6>")


def test_sigmoid_index_truncates_towards_zero():
    """hls4ml's (int) conversion truncates: (-1/64, 1/64) all read entry N/2 (sigmoid(0))."""
    idx = lut.range_index(np.array([-0.03, -0.02, -0.01, 0.0, 0.01, 0.02, 0.03, -9.0, 9.0]), 10, 1024, -8, 8)
    assert idx.tolist() == [511, 511, 512, 512, 512, 513, 513, 0, 1023]


def test_softmax_table_sizes_follow_hls4ml():
    for c in CASES:
        if c.kind == "softmax" and c.p["impl"] != "argmax":
            addr = F(_norm_t(c)) if c.p["impl"] == "stable" else F(c.data)
            from conveyor.ops.softmax import softmax_table_sizes
            got = softmax_table_sizes(F(c.data), c.p["impl"], c.p["exp_size"], c.p["inv_size"], F(c.p["inv"]),
                                      addr, F(c.p["inv_inp"]), "t")
            assert got == hls4ml_softmax_sizes(c), c


def test_table_settings_are_validated():
    with pytest.raises(PrecisionError, match="unknown table"):
        PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "tables": {"sigmiod": {"size": 512}}})
    with pytest.raises(PrecisionError, match="tables.sigmoid.min.*integer"):
        PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "tables": {"sigmoid": {"min": -7.5}}})
    with pytest.raises(PrecisionError, match="legacy"):
        PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "tables": {"softmax": {"implementation": "legacy"}}})
    with pytest.raises(PrecisionError, match="tables.tanh.format"):
        PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "tables": {"tanh": {"format": "mx:fp8_e4m3"}}})
    x = np.zeros((2, 5))
    g = _graph("Softmax", x.shape, {"axis": -1})
    with pytest.raises(PrecisionError, match="softmax_exp.size 1000 is not a power of two"):
        g.run(x, precision={"default": "ap_fixed<16,6>", "tables": {"softmax_exp": {"size": 1000}}})
    cfg = PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "tables": {"lrn": {"size": 256, "max": 1024}}})
    assert cfg.for_node("a", "LRN").tables == {"lrn": {"size": 256, "max": 1024.0}}


def test_block_format_input_is_refused_for_tables():
    x = np.zeros((2, 8))
    g = _graph("Sigmoid", x.shape)
    with pytest.raises(PrecisionError, match="Sigmoid.*ap_fixed"):
        g.run(x, precision={"default": "ap_fixed<16,6>", "input": "mx:fp8_e4m3"})


@pytest.mark.skipif(lut.intdot_njit is None, reason="numba absent (the `fast` extra) or CONVEYOR_NO_NUMBA set")
@pytest.mark.parametrize("frac_bits,size,lo,hi", [(10, 1024, -8, 8), (10, 1024, -4, 4), (0, 256, -3, 4),
                                                  (23, 1000, -5, 7), (40, 512, -8, 8), (3, 64, 0, 6)])
def test_compiled_table_index_equals_the_numpy_one(monkeypatch, frac_bits, size, lo, hi):
    rng = np.random.default_rng(frac_bits + size)
    x = np.ldexp(np.round(rng.standard_normal(4000) * 2.0 ** (frac_bits + 3)), -frac_bits)
    x[:4] = [0.0, -2.0 ** -frac_bits, 2.0 ** -frac_bits, -1e3]
    with lut.counting_tables() as fast_tally:
        fast = lut.range_index(x, frac_bits, size, lo, hi)
    monkeypatch.setattr(lut, "intdot_njit", None)
    with lut.counting_tables() as slow_tally:
        slow = lut.range_index(x, frac_bits, size, lo, hi)
    np.testing.assert_array_equal(fast, slow)
    assert fast_tally == slow_tally and slow_tally[1] > 0
