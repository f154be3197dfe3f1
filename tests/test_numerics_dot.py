"""Dot products with an explicit accumulator, bit for bit against hls4ml's own C++.

`tests/hls4ml_dense_oracle/` drives hls4ml's `nnet::dense` (DenseLatency) and
`nnet::conv_2d_cl` (conv_2d_latency_cl) from the hls4ml wheel's `nnet_utils`, with layer
configs written the way hls4ml's Vivado backend writes them (`product::mult`, accum_t,
bias_t, weight_t), compiled with g++ against the wheel's ap_types headers
(`tests/hls4ml_headers.py` downloads the wheel into `$CONVEYOR_CACHE` or
`~/.cache/conveyor`). The driver binary is cached by a hash of its sources, the
generated cases, the wheel and the compiler. No network or no g++ is a failure, not a skip.

Every case runs >= 10,000 dot-product vectors through hls4ml and through a single-node
conveyor graph (`Graph.run(x, precision={...,"accum": ...})`); zero mismatches allowed.
Property tests then check that each fast path of `conveyor.ops.fixed.accumulate` gives
the same bits as the literal sequential loop.
"""

from __future__ import annotations

import concurrent.futures as cf
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hls4ml_headers import hls4ml_driver
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from oracle_build import parallel_parts

from conveyor import ops
from conveyor.errors import PrecisionError
from conveyor.graph.ir import Graph
from conveyor.graph.tensor import Node, Tensor
from conveyor.numerics.fixed import OVERFLOW_MODES, ROUNDING_MODES, FixedType
from conveyor.ops import fixed

DRIVER_DIR = Path(__file__).parent / "hls4ml_dense_oracle"
DRIVER_SOURCES = ("oracle.h", "main.cpp")
CXXFLAGS = ("-O1", "-std=c++14", "-w")
VECTORS = 10_000


# ----------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One layer: types (hls4ml names: input_t, weight_t, bias_t, accum_t, result_t) and shape."""

    op: str  # Dense, Gemm, MatMul (no bias: zero biases in hls4ml), Conv
    x: str
    w: str
    b: str
    acc: str
    res: str
    n_in: int = 24
    n_out: int = 6
    # Conv only: input (H, W, C), kernel, stride, dilation, pads (top, left, bottom, right)
    hwc: tuple = (6, 6, 3)
    kernel: int = 3
    stride: int = 1
    dilation: int = 1
    pads: tuple = (1, 1, 1, 1)
    n_pixels: int = 1

    @property
    def out_hw(self) -> tuple[int, int]:
        h, w, _ = self.hwc
        eff = (self.kernel - 1) * self.dilation + 1
        t, left, bot, r = self.pads
        return (h + t + bot - eff) // self.stride + 1, (w + left + r - eff) // self.stride + 1

    @property
    def images(self) -> int:
        oh, ow = self.out_hw
        return -(-VECTORS // (oh * ow))


CASES = [
    # products rounded (TRN) into a 16-bit accumulator that wraps: hls4ml's default types
    Case("Dense", "ap_fixed<16,6>", "ap_fixed<8,3>", "ap_fixed<8,3>", "ap_fixed<16,6>", "ap_fixed<16,6>"),
    Case("Dense", "ap_fixed<12,4>", "ap_fixed<10,2>", "ap_fixed<10,4>", "ap_fixed<14,5,AP_RND,AP_SAT>",
         "ap_fixed<10,4,AP_RND_CONV,AP_SAT>"),
    # products exactly on the accumulator's grid, wrap-around: the exact sum wrapped once
    Case("Dense", "ap_fixed<10,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_fixed<16,4>", "ap_fixed<14,6>"),
    # on the grid, saturating: partial sums clip in hls4ml's order
    Case("Dense", "ap_fixed<10,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_fixed<16,4,AP_TRN,AP_SAT>",
         "ap_fixed<12,4,AP_RND,AP_SAT>"),
    Case("Dense", "ap_fixed<8,3>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<12,4,AP_TRN_ZERO,AP_SAT_SYM>",
         "ap_fixed<8,4,AP_RND_ZERO,AP_SAT_SYM>"),
    Case("Dense", "ap_fixed<8,3>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<12,5,AP_RND_ZERO,AP_WRAP_SM>",
         "ap_fixed<10,5>"),
    Case("Dense", "ap_fixed<8,3>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<14,2,AP_TRN,AP_WRAP_SM>",
         "ap_fixed<10,3,AP_RND_INF,AP_SAT>", n_in=17, n_out=5),
    Case("Dense", "ap_fixed<9,4>", "ap_fixed<7,1>", "ap_fixed<8,2>", "ap_fixed<14,5,AP_RND_INF,AP_WRAP,2>",
         "ap_fixed<10,5,AP_TRN,AP_WRAP,1>"),
    Case("Dense", "ap_fixed<9,4>", "ap_fixed<7,1>", "ap_fixed<8,2>", "ap_fixed<14,6,AP_RND_MIN_INF,AP_SAT_ZERO>",
         "ap_fixed<10,5>"),
    # unsigned accumulator fed signed products; unsigned everything with rounding + wrap
    Case("Dense", "ap_fixed<10,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_ufixed<14,6,AP_RND,AP_SAT>",
         "ap_ufixed<10,5>"),
    Case("Dense", "ap_ufixed<8,4>", "ap_ufixed<6,1>", "ap_ufixed<6,2>", "ap_ufixed<12,5>",
         "ap_ufixed<10,5,AP_RND,AP_SAT>", n_in=32, n_out=4),
    Case("Dense", "ap_fixed<10,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_ufixed<18,6,AP_TRN,AP_WRAP>",
         "ap_fixed<14,8>"),
    # the bias is rounded when cast to accum_t (16 fractional bits into 10)
    Case("Dense", "ap_fixed<8,4>", "ap_fixed<8,2>", "ap_fixed<16,2>", "ap_fixed<16,6,AP_RND_CONV,AP_SAT>",
         "ap_fixed<12,6>"),
    # wide enough to lose nothing: the exact (BLAS) path
    Case("Dense", "ap_fixed<16,6>", "ap_fixed<16,6>", "ap_fixed<16,6>", "ap_fixed<48,20>", "ap_fixed<16,6>"),
    # 28 x 26-bit products on a 2^-44 grid: sums beyond 2^53 units, wrapped via integer limbs
    Case("Dense", "ap_fixed<28,8>", "ap_fixed<26,2>", "ap_fixed<20,4>", "ap_fixed<52,8>",
         "ap_fixed<24,8,AP_RND,AP_SAT>", n_in=40, n_out=3),
    Case("Gemm", "ap_fixed<12,4>", "ap_fixed<10,2>", "ap_fixed<10,4>", "ap_fixed<13,5,AP_RND_CONV,AP_SAT>",
         "ap_fixed<10,4>"),
    Case("MatMul", "ap_fixed<16,6>", "ap_fixed<8,3>", "ap_fixed<8,3>", "ap_fixed<12,5,AP_RND,AP_WRAP>",
         "ap_fixed<12,5>"),
    Case("Conv", "ap_fixed<10,4>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<12,4,AP_RND,AP_SAT>",
         "ap_fixed<10,4>", n_pixels=2),
    Case("Conv", "ap_fixed<10,4>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<11,3>",
         "ap_fixed<8,3,AP_RND_CONV,AP_SAT>", hwc=(8, 8, 2), n_out=3, stride=2, pads=(0, 0, 0, 0)),
    Case("Conv", "ap_fixed<8,3>", "ap_fixed<8,1>", "ap_fixed<8,2>", "ap_fixed<16,4,AP_TRN,AP_SAT>",
         "ap_fixed<10,4>", hwc=(7, 7, 2), n_out=4, kernel=2, dilation=2, pads=(1, 0, 0, 1)),
]


def _t(text: str) -> FixedType:
    return FixedType.parse(text)


# ------------------------------------------------------------------ the driver
def _case_source(i: int, c: Case) -> str:
    head = f"// case {i}: {c}\nnamespace case_{i} {{\n"
    types = f"typedef {c.x} input_t;\ntypedef {c.res} result_t;\n"
    if c.op != "Conv":
        body = f"""struct config : nnet::dense_config {{
    static const unsigned n_in = {c.n_in};
    static const unsigned n_out = {c.n_out};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned strategy = nnet::latency;
    static const unsigned reuse_factor = 1;
    static const unsigned n_zeros = 0;
    static const unsigned n_nonzeros = {c.n_in * c.n_out};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {c.acc} accum_t;
    typedef {c.b} bias_t;
    typedef {c.w} weight_t;
    typedef ap_uint<1> index_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
}}
int oracle_case_{i}(long count) {{ return oracle::run_dense<case_{i}::input_t, case_{i}::result_t, case_{i}::config>(count); }}
"""
        return head + types + body
    h, w, ch = c.hwc
    oh, ow = c.out_hw
    t, left, bot, r = c.pads
    body = f"""struct config_mult : nnet::dense_config {{
    static const unsigned n_in = {c.kernel * c.kernel * ch};
    static const unsigned n_out = {c.n_out};
    static const unsigned reuse_factor = 1;
    static const unsigned strategy = nnet::latency;
    static const unsigned n_zeros = 0;
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    typedef {c.acc} accum_t;
    typedef {c.b} bias_t;
    typedef {c.w} weight_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
struct config : nnet::conv2d_config {{
    static const unsigned pad_top = {t};
    static const unsigned pad_bottom = {bot};
    static const unsigned pad_left = {left};
    static const unsigned pad_right = {r};
    static const unsigned in_height = {h};
    static const unsigned in_width = {w};
    static const unsigned n_chan = {ch};
    static const unsigned filt_height = {c.kernel};
    static const unsigned filt_width = {c.kernel};
    static const unsigned kernel_size = filt_height * filt_width;
    static const unsigned n_filt = {c.n_out};
    static const unsigned stride_height = {c.stride};
    static const unsigned stride_width = {c.stride};
    static const unsigned out_height = {oh};
    static const unsigned out_width = {ow};
    static const unsigned dilation_height = {c.dilation};
    static const unsigned dilation_width = {c.dilation};
    static const unsigned reuse_factor = 1;
    static const unsigned n_zeros = 0;
    static const unsigned multiplier_limit = DIV_ROUNDUP(kernel_size * n_chan * n_filt, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    static const unsigned strategy = nnet::latency;
    static const unsigned n_partitions = {oh * ow // c.n_pixels};
    static const unsigned n_pixels = out_height * out_width / n_partitions;
    template<class data_T, class CONFIG_T>
    using fill_buffer = oracle::fill_im2col<data_T, CONFIG_T>;
    typedef {c.acc} accum_t;
    typedef {c.b} bias_t;
    typedef {c.w} weight_t;
    typedef config_mult mult_config;
}};
}}
int oracle_case_{i}(long count) {{ return oracle::run_conv2d<case_{i}::input_t, case_{i}::result_t, case_{i}::config>(count); }}
"""
    return head + types + body


def _generated_files(n_parts: int) -> dict[str, str]:
    """The cases, a few per translation unit (parsing the headers costs more than a case)."""
    files = {f"part_{k}.cpp": "// generated by tests/test_numerics_dot.py\n#include \"oracle.h\"\n" + "".join(
        _case_source(i, c) for i, c in enumerate(CASES) if i % n_parts == k) for k in range(n_parts)}
    files["cases.h"] = "".join(f"int oracle_case_{i}(long count);\n" for i in range(len(CASES))) + (
        "#define ORACLE_CASES(M) " + " ".join(f"M({i})" for i in range(len(CASES))) + "\n")
    return files


@pytest.fixture(scope="module")
def driver() -> Path:
    return hls4ml_driver("hls4ml_dense_oracle", label="hls4ml oracle", sources_dir=DRIVER_DIR, sources=DRIVER_SOURCES,
                         generated=_generated_files(parallel_parts(8)), cxxflags=CXXFLAGS)


# -------------------------------------------------------------------- the data
def _grid(t: FixedType, shape, rng, spread=None) -> np.ndarray:
    """Random values of type t: raw codes uniform over the range, each row (axis 0)
    shrunk by a random number of bits (`spread`) so that some sums stay in range."""
    raw = rng.integers(t.raw_min, t.raw_max, size=shape, endpoint=True)
    if spread is not None:
        shift = spread if np.ndim(spread) == 0 else np.reshape(spread, (-1,) + (1,) * (len(shape) - 1))
        raw = raw >> shift
    return t.from_raw(raw)


def _case_data(c: Case, seed: int):
    rng = np.random.default_rng(seed)
    xt, wt, bt = _t(c.x), _t(c.w), _t(c.b)
    if c.op == "Conv":
        h, w, ch = c.hwc
        n = c.images
        x = _grid(xt, (n, h, w, ch), rng, rng.integers(0, max(1, xt.width // 2), n))
        wk = _grid(wt, (c.kernel, c.kernel, ch, c.n_out), rng, int(rng.integers(0, 2)))
    else:
        n = VECTORS
        x = _grid(xt, (n, c.n_in), rng, rng.integers(0, max(1, xt.width // 2), n))
        wk = _grid(wt, (c.n_in, c.n_out), rng, 0)
    b = _grid(bt, (c.n_out,), rng, 0) if c.op != "MatMul" else np.zeros(c.n_out)
    return x, wk, b


def _conveyor(c: Case, x, wk, b) -> np.ndarray:
    """The same layer as a one-node conveyor graph, run bit-accurately."""
    precision = {"default": c.res, "input": c.x, "weight": c.w, "bias": c.b, "accum": c.acc, "result": c.res}
    n = x.shape[0]
    f64 = np.dtype(np.float64)
    if c.op == "Conv":
        h, w, ch = c.hwc
        t, left, bot, r = c.pads
        node = Node("conv", "Conv", ("x", "W", "B"), ("y",), {
            "kernel_shape": [c.kernel] * 2, "strides": [c.stride] * 2, "dilations": [c.dilation] * 2,
            "pads": [t, left, bot, r]})
        g = Graph.build("conv", [node], [Tensor("x", (n, ch, h, w), f64)], ["y"],
                        {"W": wk.transpose(3, 2, 0, 1), "B": b})
        return g.run(x.transpose(0, 3, 1, 2), precision=precision)["y"].transpose(0, 2, 3, 1).reshape(n, -1)
    if c.op == "Gemm":
        node, weights = Node("fc", "Gemm", ("x", "W", "B"), ("y",), {"transB": 1}), {"W": wk.T.copy(), "B": b}
    elif c.op == "MatMul":
        node, weights = Node("fc", "MatMul", ("x", "W"), ("y",)), {"W": wk}
    else:
        node, weights = Node("fc", "Dense", ("x", "W", "B"), ("y",)), {"W": wk, "B": b}
    g = Graph.build("fc", [node], [Tensor("x", (n, c.n_in), f64)], ["y"], weights)
    return g.run(x, precision=precision)["y"]


def _hls4ml(exe: Path, i: int, c: Case, x, wk, b) -> np.ndarray:
    payload = np.concatenate([wk.ravel(), b.ravel(), x.ravel()]).astype("<f8").tobytes()
    p = subprocess.run([str(exe), str(i), str(x.shape[0])], input=payload, capture_output=True, check=False)
    if p.returncode:
        pytest.fail(f"hls4ml oracle case {i} ({c}) exited {p.returncode}: {p.stderr.decode()[-2000:]}")
    return np.frombuffer(p.stdout, dtype="<f8").reshape(x.shape[0], -1)


def test_dense_and_conv_match_hls4ml_bit_for_bit(driver):
    with cf.ThreadPoolExecutor(min(len(CASES), os.cpu_count() or 1)) as pool:
        data = [_case_data(c, seed=100 + i) for i, c in enumerate(CASES)]
        futures = [pool.submit(_hls4ml, driver, i, c, *d) for i, (c, d) in enumerate(zip(CASES, data))]
        report, total = [], 0
        for i, (c, d, fut) in enumerate(zip(CASES, data, futures)):
            got = _conveyor(c, *d)
            want = fut.result()
            assert got.shape == want.shape, (c, got.shape, want.shape)
            dots = got.size // c.n_out
            acc = _t(c.acc)
            bad = np.flatnonzero(got.ravel() != want.ravel())
            assert dots >= VECTORS
            if bad.size:
                j = int(bad[0])
                pytest.fail(f"case {i} {c}: {bad.size} of {got.size} outputs differ from hls4ml; first at {j}: "
                            f"conveyor {got.ravel()[j]!r}, hls4ml {want.ravel()[j]!r} (accum {acc})")
            total += dots
            report.append(f"{c.op} {c.acc}: {dots} dot products, {np.unique(want).size} distinct results")
    print("\n" + "\n".join(report) + f"\n{total} dot products, zero mismatches")
    assert total >= VECTORS * len(CASES)


def test_oracle_cases_exercise_every_path():
    """The oracle cases cover each way `accumulate` can go (checked on the same data)."""
    seen = set()
    for i, c in enumerate(CASES):
        x, wk, b = _case_data(c, seed=100 + i)
        xt, wt, acc = _t(c.x), _t(c.w), _t(c.acc)
        prod = xt.frac_bits + wt.frac_bits
        if acc.frac_bits < prod:
            seen.add("rounding+wrap" if acc.overflow == "WRAP" and acc.sat_bits == 0 else "rounding+sequential")
        elif acc.overflow == "WRAP" and acc.sat_bits == 0:
            bound = c.n_in * np.max(np.abs(x)) * np.max(np.abs(wk)) + np.max(np.abs(b))
            seen.add("limbs" if bound * 2.0 ** prod >= 2.0 ** 53 else "wrap")
        else:
            seen.add("on-grid")
    assert seen >= {"rounding+wrap", "rounding+sequential", "wrap", "limbs", "on-grid"}, seen


# ---------------------------------------------------------- fast paths vs loop
def _fixed_types(draw, max_width=12, signed=None):
    w = draw(st.integers(1, max_width))
    s = draw(st.booleans()) if signed is None else signed
    return FixedType(w, draw(st.integers(-3, w + 3)), s)


@st.composite
def problems(draw):
    op = draw(st.sampled_from(["Dense", "Conv", "MatMul", "Gemm"]))
    fx, fw, fb = (_fixed_types(draw) for _ in range(3))
    width = draw(st.integers(2, 24))
    signed = draw(st.booleans())
    overflow = draw(st.sampled_from(OVERFLOW_MODES if signed else [o for o in OVERFLOW_MODES if o != "WRAP_SM"]))
    n_sat = draw(st.integers(0, min(3, width))) if overflow in ("WRAP", "WRAP_SM") else 0
    prod_frac = fx.frac_bits + fw.frac_bits
    frac = draw(st.one_of(st.integers(prod_frac - 4, prod_frac + 4), st.integers(-4, 20)))
    acc = FixedType(width, width - frac, signed, draw(st.sampled_from(ROUNDING_MODES)), overflow, n_sat)
    seed = draw(st.integers(0, 2 ** 32 - 1))
    spread = draw(st.integers(0, 8))
    return op, fx, fw, fb, acc, seed, spread


def _problem_arrays(op, fx, fw, fb, seed, spread):
    rng = np.random.default_rng(seed)
    if op == "Conv":
        n, c, m, k, group = 2, 4, 4, int(rng.integers(1, 4)), int(rng.choice([1, 2]))
        node = Node("c", "Conv", ("x", "W", "B"), ("y",), {
            "group": group, "pads": [1, 0, 0, 1], "strides": [1, int(rng.integers(1, 3))]})
        x = _grid(fx, (n, c, 5, 6), rng, rng.integers(0, spread + 1, n))
        w = _grid(fw, (m, c // group, k, k), rng, int(rng.integers(0, spread + 1)))
        b = _grid(fb, (m,), rng)
    elif op == "MatMul":
        node = Node("m", "MatMul", ("x", "W"), ("y",))
        x = _grid(fx, (3, 4, 7), rng, rng.integers(0, spread + 1, 3))
        w = _grid(fw, (3, 7, 5), rng)
        b = None
    elif op == "Gemm":
        node = Node("g", "Gemm", ("x", "W", "B"), ("y",), {"transA": 1, "transB": 1})
        x = _grid(fx, (9, 6), rng, rng.integers(0, spread + 1, 9))
        w = _grid(fw, (4, 9), rng)
        b = _grid(fb, (6, 4), rng)
    else:
        node = Node("d", "Dense", ("x", "W", "B"), ("y",))
        x = _grid(fx, (8, 2, 13), rng, rng.integers(0, spread + 1, 8))
        w = _grid(fw, (13, 5), rng, int(rng.integers(0, spread + 1)))
        b = _grid(fb, (5,), rng)
    return node, x, w, b


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_fast_paths_equal_the_sequential_loop(problem):
    op, fx, fw, fb, acc, seed, spread = problem
    node, x, w, b = _problem_arrays(op, fx, fw, fb, seed, spread)
    spec = ops.get(op).run_fixed.spec
    fast = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc)
    slow = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc, method="sequential")
    np.testing.assert_array_equal(fast, slow)
    # every accumulator value is one accum_t holds
    np.testing.assert_array_equal(acc.quantize(fast), fast)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2 ** 32 - 1), st.sampled_from(["Dense", "Conv"]), st.integers(26, 27), st.booleans())
def test_wrapped_sums_beyond_2_53_units_use_limbs(seed, op, width, signed):
    """Sums past float64's exact range, wrapped by an accumulator on the products' grid."""
    fx, fw, fb = FixedType(width, 6), FixedType(width, 2), FixedType(12, 4)
    frac = fx.frac_bits + fw.frac_bits + int(np.random.default_rng(seed).integers(0, 3))
    acc = FixedType(52 - (not signed), 52 - (not signed) - frac, signed)
    node, x, w, b = _problem_arrays(op, fx, fw, fb, seed, 0)
    spec = ops.get(op).run_fixed.spec
    bound = spec.reduce_len(w) * np.max(np.abs(x)) * np.max(np.abs(w)) * 2.0 ** (fx.frac_bits + fw.frac_bits)
    assume(bound >= 2.0 ** 53)  # beyond a single BLAS product's exact range
    fast = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc)
    slow = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, acc, method="sequential")
    np.testing.assert_array_equal(fast, slow)


def test_lossless_accumulator_equals_auto_and_sequential():
    fx, fw, fb = FixedType(16, 6), FixedType(8, 3), FixedType(8, 3)
    node, x, w, b = _problem_arrays("Conv", fx, fw, fb, 3, 0)
    spec = ops.get("Conv").run_fixed.spec
    auto = fixed.accumulate(spec, node, x, w, b, fx, fw, fb, None)
    wide = FixedType(40, 20)
    for method in ("auto", "sequential"):
        np.testing.assert_array_equal(fixed.accumulate(spec, node, x, w, b, fx, fw, fb, wide, method=method), auto)


def test_single_node_graphs_with_a_lossy_accumulator():
    """Graph.run with a top-level accum role: Dense and Conv give the loop's bits, and a
    narrow accumulator really does change the result."""
    rng = np.random.default_rng(5)
    f64 = np.dtype(np.float64)
    q = FixedType(16, 6)
    conv = Graph.build("c", [Node("c", "Conv", ("x", "W", "B"), ("y",), {"pads": [1, 1, 1, 1]})],
                       [Tensor("x", (2, 3, 8, 8), f64)], ["y"],
                       {"W": rng.standard_normal((4, 3, 3, 3)), "B": rng.standard_normal(4)})
    dense = Graph.build("d", [Node("d", "Dense", ("x", "W", "B"), ("y",))], [Tensor("x", (5, 40), f64)], ["y"],
                        {"W": rng.standard_normal((40, 7)), "B": rng.standard_normal(7)})
    for g, x in ((conv, rng.standard_normal((2, 3, 8, 8)) * 4), (dense, rng.standard_normal((5, 40)) * 4)):
        auto = g.run(x, precision="ap_fixed<16,6>")["y"]
        for accum in ("ap_fixed<14,5,AP_RND,AP_SAT>", "ap_fixed<16,6>", "ap_fixed<20,4>"):
            got = g.run(x, precision={"default": "ap_fixed<16,6>", "accum": accum})["y"]
            node = g.nodes[0]
            spec = ops.get(node.op_type).run_fixed.spec
            a = FixedType.parse(accum)
            want = q.quantize(fixed.accumulate(spec, node, q.quantize(x), q.quantize(g.weights["W"]),
                                               q.quantize(g.weights["B"]), q, q, q, a, method="sequential"))
            np.testing.assert_array_equal(got, want)
            assert not np.array_equal(got, auto), accum
        wide = g.run(x, precision={"default": "ap_fixed<16,6>", "accum": "ap_fixed<48,20>"})["y"]
        np.testing.assert_array_equal(wide, auto)


def test_block_format_accumulator_is_refused():
    g = Graph.build("d", [Node("d", "Dense", ("x", "W", "B"), ("y",))], [Tensor("x", (1, 4), np.dtype(np.float64))],
                    ["y"], {"W": np.ones((4, 2)), "B": np.zeros(2)})
    with pytest.raises(PrecisionError, match="accum must be ap_fixed"):
        g.run(np.ones((1, 4)), precision={"default": "ap_fixed<16,6>", "accum": "mx:fp8_e4m3"})
