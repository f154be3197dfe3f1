"""Bit-exact oracle for the recurrent kernels: conveyor's LSTM and GRU under a precision against
hls4ml's own HLS C++ (nnet_recurrent.h of the pinned hls4ml wheel: lstm_stack / gru_stack, with
the layer configs hls4ml's Vivado backend writes, compiled with g++), and against conveyor's C++
definition where conveyor goes beyond hls4ml (conveyor/codegen/include/conveyor_rnn.h: GRU with
linear_before_reset=0, separate state / cell types with initial states).

Every case runs 2,000 random sequences (4 weight sets of 500) through the C++ and through a
single-node ONNX graph (`Graph.run(x, precision=...)`) and compares every step's hidden state
(and the final states where the C++ returns them). Zero mismatches allowed. The driver is
generated from CASES, compiled once and cached under ``$CONVEYOR_CACHE/hls4ml_rnn_oracle/<hash>``
(default ``~/.cache/conveyor``); no network or no g++ is a failure, not a skip.
"""

from __future__ import annotations

import concurrent.futures as cf
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hls4ml_headers import hls4ml_driver
from onnx import TensorProto, helper, numpy_helper
from oracle_build import case_parts, parallel_parts

import conveyor
from conveyor import PrecisionError, zoo
from conveyor.graph.quantized import emulator_for
from conveyor.numerics import FixedType, PrecisionConfig

DRIVER_DIR = Path(__file__).parent / "hls4ml_rnn_oracle"
DRIVER_SOURCES = ("oracle.h", "main.cpp")   # conveyor_rnn.h: conveyor/codegen/include (the generated firmware's kernel)
CXXFLAGS = ("-O1", "-std=c++14", "-w")
GROUPS, SEQS = 4, 500          # weight sets per case, sequences per weight set
F = FixedType.parse
GATES = {"LSTM": 4, "GRU": 3}
#: ONNX gate k is hls4ml/Keras gate PERM[k]: LSTM ONNX i o f c, Keras i f c o; GRU z r h in both
PERM = {"LSTM": [0, 3, 1, 2], "GRU": [0, 1, 2]}


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    op: str                        # LSTM | GRU
    kind: str                      # hls4ml (zero initial states) | hls4ml_init | hls4ml_bidir | conveyor
    x: str
    w: str
    b: str
    acc: str | None                # None: conveyor's 'auto'; the C++ then uses `wide`
    res: str
    state: str | None = None       # conveyor roles (None: result); C++ h_T / s_T
    cell: str | None = None
    acts: tuple = ()               # ONNX activations (empty: Sigmoid, Tanh[, Tanh])
    lbr: int = 1                   # GRU linear_before_reset
    sigmoid: dict = field(default_factory=dict)   # tables.sigmoid: size, format
    tanh: dict = field(default_factory=dict)
    n_in: int = 5
    hid: int = 8
    seq: int = 8
    wide: str = "ap_fixed<48,20>"
    scale: float = 1.0             # weight scale
    id: int = -1

    @property
    def inits(self) -> bool:
        return self.kind in ("hls4ml_init", "conveyor")

    @property
    def ndir(self) -> int:
        return 2 if self.kind == "hls4ml_bidir" else 1

    @property
    def accum_cxx(self) -> str:
        return self.acc if self.acc is not None else self.wide


Q16, Q10 = "ap_fixed<16,6>", "ap_fixed<10,4>"
MIXED = {"x": "ap_fixed<12,4>", "w": "ap_fixed<8,2>", "b": "ap_fixed<8,3>", "acc": "ap_fixed<20,8,AP_RND,AP_SAT>",
         "res": "ap_fixed<12,5,AP_RND_CONV,AP_SAT>",
         "sigmoid": {"size": 2048, "format": "ap_ufixed<12,1,AP_RND>"},
         "tanh": {"size": 512, "format": "ap_fixed<14,2,AP_RND>"}}


def _cases(op: str) -> list[Case]:
    return [
        Case(op, "hls4ml", Q16, Q16, Q16, Q16, Q16),                                  # hls4ml's defaults
        Case(op, "hls4ml", Q10, Q10, Q10, Q10, Q10, scale=2.0),                       # narrow: wraps
        Case(op, "hls4ml", **MIXED),                                                  # rounding, saturation, tables
        Case(op, "hls4ml", Q16, Q16, Q16, None, Q16),                                 # 'auto' = a wide accum_t
        Case(op, "hls4ml", "ap_fixed<16,6>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_fixed<14,4,AP_RND_CONV>",
             "ap_fixed<12,4,AP_RND,AP_SAT>", scale=3.0, n_in=3, hid=4, seq=12),          # accum_t wraps
        Case(op, "hls4ml", Q16, "ap_fixed<10,3>", "ap_fixed<10,3>", "ap_fixed<18,8,AP_RND_ZERO>",
             "ap_fixed<16,6,AP_TRN,AP_SAT>", acts=("Sigmoid", "Relu", "Relu") if op == "LSTM" else ("Sigmoid", "Relu")),
    ]


CASES = _cases("LSTM") + _cases("GRU") + [
    # hls4ml's pass_initial_states path (nnet::lstm: every activation type the same)
    Case("LSTM", "hls4ml_init", Q16, "ap_fixed<10,3>", "ap_fixed<10,3>", Q16, Q16),
    Case("GRU", "hls4ml_init", "ap_fixed<12,4>", "ap_fixed<10,3>", "ap_fixed<10,3>", "ap_fixed<18,7>",
         "ap_fixed<14,5,AP_RND,AP_SAT>"),
    # hls4ml's Bidirectional (the backward layer reads the sequence reversed): ONNX bidirectional
    Case("LSTM", "hls4ml_bidir", **MIXED),
    Case("GRU", "hls4ml_bidir", Q16, "ap_fixed<10,3>", "ap_fixed<10,3>", "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", Q16),
    # conveyor's own: state / cell types apart from result, initial states, GRU reset before
    Case("LSTM", "conveyor", "ap_fixed<12,4>", "ap_fixed<10,3>", "ap_fixed<10,3>", Q16,
         "ap_fixed<10,3,AP_RND_CONV,AP_SAT>", state="ap_fixed<14,4,AP_RND,AP_SAT>",
         cell="ap_fixed<18,8,AP_RND,AP_SAT>"),
    Case("LSTM", "conveyor", Q16, "ap_fixed<10,3>", "ap_fixed<10,3>", Q16, Q16, state="ap_fixed<8,1,AP_RND_CONV>",
         cell="ap_fixed<10,2>", seq=10),                                             # the cell wraps
    Case("GRU", "conveyor", Q16, Q16, Q16, Q16, Q16, lbr=0),
    Case("GRU", "conveyor", "ap_fixed<12,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", "ap_fixed<14,5,AP_RND,AP_SAT>",
         "ap_fixed<10,3,AP_RND_CONV,AP_SAT>", state="ap_fixed<12,3,AP_RND>", lbr=0, scale=2.0),
    Case("GRU", "conveyor", "ap_fixed<12,4>", "ap_fixed<8,2>", "ap_fixed<8,3>", None, "ap_fixed<10,3>",
         state="ap_fixed<14,4,AP_RND,AP_SAT>", lbr=1, wide="ap_fixed<44,16>"),
]
for _i, _c in enumerate(CASES):
    _c.id = _i


# ------------------------------------------------------------------------- C++ generation
def _table(c: Case, name: str) -> tuple[int, FixedType]:
    spec = getattr(c, name)
    return spec.get("size", 1024), F(spec.get("format", "ap_fixed<18,8>"))


def _acts_cxx(c: Case) -> tuple[str, str]:
    """(recurrent_activation, activation) as hls4ml names them."""
    acts = c.acts or (("Sigmoid", "Tanh", "Tanh") if c.op == "LSTM" else ("Sigmoid", "Tanh"))
    assert c.op == "GRU" or acts[1] == acts[2], "hls4ml's LSTM has one `activation` for g and h"
    return acts[0].lower(), acts[1].lower()


def _dense_cfg(name: str, n_in: int, n_out: int, acc: str, b: str, w: str) -> str:
    """hls4ml's recr_mult_config_template_1/2 (recurrent_templates.py), latency strategy."""
    return f"""struct {name} : nnet::dense_config {{
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {n_out};
    static const unsigned strategy = nnet::latency;
    static const unsigned reuse_factor = 1;
    static const unsigned n_zeros = 0;
    static const unsigned n_nonzeros = {n_in * n_out};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
    static const bool store_weights_in_bram = false;
    typedef {F(acc)} accum_t;
    typedef {F(b)} bias_t;
    typedef {F(w)} weight_t;
    template<class data_T, class res_T, class CONFIG_T>
    using kernel = nnet::DenseLatency<data_T, res_T, CONFIG_T>;
    template<class x_T, class y_T>
    using product = nnet::product::mult<x_T, y_T>;
}};
"""


def _activ_cfg(name: str, n_in: int, size: int, table: FixedType) -> str:
    return f"""struct {name} : nnet::activ_config {{
    static const unsigned n_in = {n_in};
    static const unsigned table_size = {size};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    typedef {table} table_t;
}};
"""


def _cxx_case(c: Case) -> str:
    g, h = GATES[c.op], c.hid
    acc = c.accum_cxx
    recr, act = _acts_cxx(c)
    rsize, rtab = _table(c, "sigmoid" if recr == "sigmoid" else "tanh")
    asize, atab = _table(c, "tanh" if act == "tanh" else "sigmoid")
    ns = f"case{c.id}"
    out = [f"// case {c.id}: {c}\nnamespace {ns} {{\n",
           f"typedef {F(c.x)} data_t;\ntypedef {F(c.res)} res_t;\n",
           f"typedef {F(c.state or c.res)} h_t;\ntypedef {F(c.cell or c.res)} s_t;\n",
           _dense_cfg("config_1", c.n_in, g * h, acc, c.b, c.w),
           _dense_cfg("config_2", h, g * h, acc, c.b, c.w),
           _dense_cfg("config_zr", h, 2 * h, acc, c.b, c.w),
           _dense_cfg("config_h", h, h, acc, c.b, c.w),
           _activ_cfg("recr_config", h * (g - 1), rsize, rtab),
           _activ_cfg("act_config", h, asize, atab)]
    layer = f"""    typedef {F(acc)} accum_t;
    typedef {F(c.w)} weight_t;
    typedef {F(c.w)} recurrent_weight_t;
    typedef {F(c.b)} bias_t;
    typedef {F(c.b)} recurrent_bias_t;
    typedef config_1 mult_config1;
    typedef config_2 mult_config2;
    typedef config_zr mult_config_zr;
    typedef config_h mult_config_h;
    typedef recr_config ACT_CONFIG_{c.op};
    template<class x_T, class y_T, class config_T>
    using activation_recr = nnet::activation::{recr}<x_T, y_T, config_T>;
    typedef act_config ACT_CONFIG_T;
    template<class x_T, class y_T, class config_T>
    using activation = nnet::activation::{act}<x_T, y_T, config_T>;
    static const unsigned n_in  = {c.n_in};
    static const unsigned n_state = {h};
    static const bool pytorch_order = false;
"""
    run = f"""    static const unsigned n_sequence = {c.seq};
    static const unsigned n_sequence_out = {c.seq};
    static const unsigned io_type = nnet::latency;
    static const unsigned reuse_factor = 1;
    static const bool store_weights_in_bram = false;
    static const bool use_static = {'true' if c.kind in ('hls4ml', 'hls4ml_bidir') else 'false'};
"""
    if c.kind == "hls4ml_bidir":  # hls4ml's single_config_template and bidirectional_config_template
        cls = f"nnet::{c.op.lower()}_class_static<x_T, y_T, config_T, backward>"
        for d in ("forward", "backward"):
            out.append(f"struct config_{d} : nnet::single_layer_config {{\n{layer}"
                       f"    static const unsigned n_mult = {g};\n}};\n")
        out.append(f"""struct config : nnet::bidirectional_config {{
    typedef config_forward FORWARD_CONFIG;
    template<class x_T, class y_T, typename config_T, bool backward>
    using RNNfunc_forward = {cls};
    typedef config_backward BACKWARD_CONFIG;
    template<class x_T, class y_T, typename config_T, bool backward>
    using RNNfunc_backward = {cls};
    static const unsigned n_in = {c.n_in};
    static const unsigned n_out = {2 * h};
{run}    static const bool pytorch_order = false;
}};
}}
""")
    else:  # hls4ml's recr_config_template
        out.append(f"struct config : nnet::{c.op.lower()}_config {{\n{layer}    static const unsigned n_out = {h};\n{run}}};\n}}\n")
    t = f"{ns}::data_t, "
    if c.kind == "conveyor":
        call = (f"oracle::lstm_conveyor<{t}{ns}::h_t, {ns}::s_t, {ns}::res_t, {ns}::config>" if c.op == "LSTM" else
                f"oracle::gru_conveyor<{t}{ns}::h_t, {ns}::res_t, {ns}::config, {'true' if c.lbr else 'false'}>")
    elif c.kind == "hls4ml_bidir":
        call = f"oracle::bidirectional_hls4ml<{t}{ns}::res_t, {ns}::config, {g}>"
    elif c.op == "LSTM" and c.kind == "hls4ml":
        how = "stack" if F(c.x) == F(c.res) == F(acc) else "static"
        call = f"oracle::lstm_hls4ml_{how}<{t}{ns}::res_t, {ns}::config>"
    else:
        call = f"oracle::{c.op.lower()}_{c.kind}<{t}{ns}::res_t, {ns}::config>"
    out.append(f"int run_case_{c.id}(long groups, long seqs) {{ return {call}(groups, seqs); }}\n")
    return "".join(out)


@pytest.fixture(scope="module")
def driver() -> Path:
    return hls4ml_driver("hls4ml_rnn_oracle", label="hls4ml rnn oracle", sources_dir=DRIVER_DIR, sources=DRIVER_SOURCES,
                         generated=case_parts(CASES, _cxx_case, parallel_parts(len(CASES))), cxxflags=CXXFLAGS)


# --------------------------------------------------------------------------------- the data
def _rand(t: FixedType, shape, rng, scale: float) -> np.ndarray:
    """Values of t: 90 % normal (std `scale`, saturated into t), 10 % uniform over t's range."""
    sat = FixedType(t.width, t.integer, t.signed, "TRN", "SAT")
    nor = sat.quantize(rng.standard_normal(shape) * scale)
    uni = t.from_raw(rng.integers(t.raw_min, t.raw_max + 1, size=shape, dtype=np.int64))
    return np.where(rng.random(shape) < 0.9, nor, uni)


@dataclass
class Group:
    sets: list      # per direction (w, r, b, br): W [n_in, G*H], R [H, G*H] Keras layout, b, br [G*H]
    x: np.ndarray   # [SEQS, seq, n_in]
    h0: np.ndarray  # [SEQS, H] (zeros without initial states)
    c0: np.ndarray


def _groups(c: Case, rng) -> list[Group]:
    g, h = GATES[c.op], c.hid
    tx, tw, tb = F(c.x), F(c.w), F(c.b)
    ts, tc = F(c.state or c.res), F(c.cell or c.res)
    out = []
    for k in range(GROUPS):
        s = c.scale * (0.4, 0.8, 1.5, 0.8)[k]
        init = c.inits and k != 3      # the last weight set starts from zero states
        sets = [(_rand(tw, (c.n_in, g * h), rng, s), _rand(tw, (h, g * h), rng, s),
                 _rand(tb, (g * h,), rng, s), _rand(tb, (g * h,), rng, s)) for _ in range(c.ndir)]
        out.append(Group(
            sets=sets, x=_rand(tx, (SEQS, c.seq, c.n_in), rng, (1.0, 2.0, 1.0, 4.0)[k]),
            h0=_rand(ts, (SEQS, h), rng, 0.5) if init else np.zeros((SEQS, h)),
            c0=_rand(tc, (SEQS, h), rng, 1.0) if init and c.op == "LSTM" else np.zeros((SEQS, h))))
    return out


def _payload(c: Case, groups: list[Group]) -> bytes:
    parts = []
    for gr in groups:
        for w, r, b, br in gr.sets:
            parts += [w.ravel(), r.ravel(), b, br]
        per_seq = [gr.x.reshape(SEQS, -1)]
        if c.inits:
            per_seq.append(gr.h0)
            if c.op == "LSTM":
                per_seq.append(gr.c0)
        parts.append(np.concatenate(per_seq, axis=1).ravel())
    return np.ascontiguousarray(np.concatenate(parts), dtype=np.float64).tobytes()


def _call(exe: Path, c: Case, payload: bytes) -> np.ndarray:
    proc = subprocess.run([str(exe), str(c.id), str(GROUPS), str(SEQS)], input=payload, capture_output=True,
                          timeout=300, check=False)
    if proc.returncode:
        pytest.fail(f"hls4ml rnn oracle case {c.id} failed: {proc.stderr.decode()[-2000:]}")
    return np.frombuffer(proc.stdout, dtype=np.float64)


# ------------------------------------------------------------------- conveyor side: graphs
def onnx_rnn(op: str, seq: int, batch: int, n_in: int, hid: int, sets, h0=None, c0=None, acts=(), lbr: int = 1,
             **attrs):
    """A single-node ONNX LSTM/GRU (layout 0; bidirectional for two weight sets) from hls4ml-layout
    weights (Keras gate order), one (W, R, b, br) per direction."""
    g, perm = GATES[op], PERM[op]

    def onnx_w(wk):  # [K, G*H] Keras -> [G*H, K] ONNX gate order
        k = wk.shape[0]
        return wk.reshape(k, g, hid)[:, perm, :].reshape(k, g * hid).T

    def onnx_b(bk):
        return bk.reshape(g, hid)[perm].reshape(-1)

    inits = {"W": np.stack([onnx_w(s[0]) for s in sets]), "R": np.stack([onnx_w(s[1]) for s in sets]),
             "B": np.stack([np.concatenate([onnx_b(s[2]), onnx_b(s[3])]) for s in sets])}
    names = ["X", "W", "R", "B", "", ""]
    if h0 is not None:
        inits["h0"], names[5] = h0[None], "h0"
    if op == "LSTM" and c0 is not None:
        inits["c0"] = c0[None]
        names += ["c0"]
    while not names[-1]:
        names.pop()
    if len(sets) == 2:
        attrs["direction"] = "bidirectional"
    if acts:
        attrs["activations"] = list(acts) * len(sets)
    if op == "GRU":
        attrs["linear_before_reset"] = lbr
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outs, name="rnn", hidden_size=hid, **attrs)
    gp = helper.make_graph(
        [node], f"{op.lower()}_oracle", [helper.make_tensor_value_info("X", TensorProto.DOUBLE, [seq, batch, n_in])],
        [helper.make_tensor_value_info(o, TensorProto.DOUBLE, None) for o in outs],
        [numpy_helper.from_array(np.ascontiguousarray(v, np.float64), k) for k, v in inits.items()])
    model = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return conveyor.from_model(model)


def _precision(c: Case) -> dict:
    cfg = {"default": c.res, "input": c.x, "weight": c.w, "bias": c.b, "accum": c.acc or "auto", "result": c.res}
    if c.state:
        cfg["state"] = c.state
    if c.cell:
        cfg["cell"] = c.cell
    tables = {k: getattr(c, k) for k in ("sigmoid", "tanh") if getattr(c, k)}
    if tables:
        cfg["tables"] = tables
    return cfg


def _conveyor(c: Case, gr: Group) -> dict[str, np.ndarray]:
    init = c.inits and bool(np.any(gr.h0) or np.any(gr.c0))
    g = onnx_rnn(c.op, c.seq, SEQS, c.n_in, c.hid, gr.sets,
                 h0=gr.h0 if init else None, c0=gr.c0 if init else None, acts=c.acts, lbr=c.lbr)
    out = g.run(gr.x.transpose(1, 0, 2), precision=_precision(c))
    # Y [seq, ndir, batch, H] -> [batch, seq, ndir * H]: hls4ml's res[t][forward H, backward H]
    res = {"y": out["Y"].transpose(2, 0, 1, 3).reshape(SEQS, c.seq, c.ndir * c.hid), "h": out["Y_h"][0]}
    if c.op == "LSTM":
        res["c"] = out["Y_c"][0]
    return res


def _check_case(exe: Path, c: Case) -> int:
    rng = np.random.default_rng(1000 + c.id)
    groups = _groups(c, rng)
    with cf.ThreadPoolExecutor(1) as pool:
        fut = pool.submit(_call, exe, c, _payload(c, groups))
        mine = [_conveyor(c, gr) for gr in groups]
        theirs = fut.result()
    ys = c.seq * c.ndir * c.hid
    per_seq = ys + (c.hid * (2 if c.op == "LSTM" else 1) if c.inits else 0)
    assert theirs.size == GROUPS * SEQS * per_seq, (theirs.size, GROUPS * SEQS * per_seq)
    theirs = theirs.reshape(GROUPS, SEQS, per_seq)
    compared = 0
    for k, (m, gr) in enumerate(zip(mine, groups)):
        t = theirs[k]
        pairs = [("Y", m["y"], t[:, :ys].reshape(m["y"].shape))]
        if c.inits:
            pairs.append(("Y_h", m["h"], t[:, ys:ys + c.hid]))
            if c.op == "LSTM":
                pairs.append(("Y_c", m["c"], t[:, ys + c.hid:]))
        elif c.ndir == 1:
            assert np.array_equal(m["h"], m["y"][:, -1])
        for what, a, b in pairs:
            assert a.shape == b.shape
            bad = np.argwhere(a != b)
            if bad.size:
                s = bad[0][0]
                pytest.fail(f"case {c.id} {c.op} {c.kind} weight set {k}: {len(bad)} of {a.size} {what} values differ; "
                            f"first at {tuple(bad[0])}: conveyor {a[tuple(bad[0])]!r}, C++ {b[tuple(bad[0])]!r}\n"
                            f"sequence {gr.x[s].tolist()}\n{c}")
            compared += a.size
    return compared


# ------------------------------------------------------------------------------- the tests
def _run_cases(driver, op: str, kinds: tuple[str, ...]) -> int:
    total = 0
    for c in CASES:
        if c.op == op and c.kind in kinds:
            total += _check_case(driver, c)
    return total


def test_lstm_bit_exact_against_hls4ml(driver):
    """hls4ml's nnet::lstm_stack (lstm_static; nnet::lstm with pass_initial_states; Bidirectional):
    every step's h of 2,000 sequences per case, 8 cases."""
    assert _run_cases(driver, "LSTM", ("hls4ml", "hls4ml_init", "hls4ml_bidir")) >= 8 * GROUPS * SEQS * 8 * 4


def test_gru_bit_exact_against_hls4ml(driver):
    """hls4ml's nnet::gru_stack (gru_static; gru with pass_initial_states; Bidirectional): ONNX
    linear_before_reset=1, Keras reset_after=True."""
    assert _run_cases(driver, "GRU", ("hls4ml", "hls4ml_init", "hls4ml_bidir")) >= 8 * GROUPS * SEQS * 8 * 4


def test_conveyor_extensions_match_their_cxx_definition(driver):
    """State and cell formats apart from result, initial states, GRU with linear_before_reset=0."""
    assert _run_cases(driver, "LSTM", ("conveyor",)) + _run_cases(driver, "GRU", ("conveyor",)) > 0


# ---- without the oracle --------------------------------------------------------------------
def _random_rnn(op, seq=6, batch=5, n_in=3, hid=4, seed=0, **kw):
    rng = np.random.default_rng(seed)
    g = GATES[op]
    q = F("ap_fixed<10,3>")
    w, r = q.quantize(rng.standard_normal((n_in, g * hid))), q.quantize(rng.standard_normal((hid, g * hid)))
    b, br = q.quantize(rng.standard_normal(g * hid)), q.quantize(rng.standard_normal(g * hid))
    x = F(Q16).quantize(rng.standard_normal((seq, batch, n_in)) * 2)
    return (w, r, b, br), x


def _model(op, arrays, attrs, ins=("X", "W", "R", "B"), batch=5, extra_inputs=()):
    """A single-node ONNX model from ONNX-layout arrays (X as the graph input)."""
    names = list(ins)
    init = {k: v for k, v in arrays.items() if k in names and k != "X" and k not in extra_inputs}
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    node = helper.make_node(op, names, outs, name="rnn", **attrs)
    graph_inputs = [helper.make_tensor_value_info("X", TensorProto.DOUBLE, list(arrays["X"].shape))]
    for k in extra_inputs:
        elem = TensorProto.INT32 if arrays[k].dtype.kind == "i" else TensorProto.DOUBLE
        graph_inputs.append(helper.make_tensor_value_info(k, elem, list(arrays[k].shape)))
    gp = helper.make_graph([node], "g", graph_inputs, [helper.make_tensor_value_info(o, TensorProto.DOUBLE, None)
                                                       for o in outs],
                           [numpy_helper.from_array(np.asarray(v), k) for k, v in init.items()])
    m = helper.make_model(gp, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return conveyor.from_model(m)


def _onnx_arrays(op, params, x, hid, ndir=1):
    g, perm = GATES[op], PERM[op]
    w, r, b, br = params

    def ow(wk):
        return wk.reshape(wk.shape[0], g, hid)[:, perm, :].reshape(wk.shape[0], g * hid).T

    def ob(bk):
        return bk.reshape(g, hid)[perm].reshape(-1)

    return {"X": x, "W": np.stack([ow(w)] * ndir), "R": np.stack([ow(r)] * ndir),
            "B": np.stack([np.concatenate([ob(b), ob(br)])] * ndir)}


P16 = {"default": Q16, "weight": "ap_fixed<10,3>", "bias": "ap_fixed<10,3>"}


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_reverse_and_bidirectional_run_the_forward_kernel_on_reversed_sequences(op):
    params, x = _random_rnn(op)
    hid = 4
    a = _onnx_arrays(op, params, x, hid)
    fwd = _model(op, a, {"hidden_size": hid}).run(x, precision=P16)
    fwd_rev = _model(op, a, {"hidden_size": hid}).run(x[::-1].copy(), precision=P16)
    rev = _model(op, a, {"hidden_size": hid, "direction": "reverse"}).run(x, precision=P16)
    np.testing.assert_array_equal(rev["Y"], fwd_rev["Y"][::-1])
    np.testing.assert_array_equal(rev["Y_h"], fwd_rev["Y_h"])
    a2 = _onnx_arrays(op, params, x, hid, ndir=2)
    bi = _model(op, a2, {"hidden_size": hid, "direction": "bidirectional"}).run(x, precision=P16)
    np.testing.assert_array_equal(bi["Y"][:, 0], fwd["Y"][:, 0])
    np.testing.assert_array_equal(bi["Y"][:, 1], rev["Y"][:, 0])
    np.testing.assert_array_equal(bi["Y_h"], np.concatenate([fwd["Y_h"], rev["Y_h"]]))
    # layout 1 (batch first) is data movement only
    a1 = dict(a, X=x.transpose(1, 0, 2).copy())
    lay = _model(op, a1, {"hidden_size": hid, "layout": 1}).run(a1["X"], precision=P16)
    np.testing.assert_array_equal(lay["Y"], fwd["Y"].transpose(2, 0, 1, 3))
    np.testing.assert_array_equal(lay["Y_h"], fwd["Y_h"].transpose(1, 0, 2))


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_sequence_lens_stop_each_sequence_at_its_length(op, direction):
    """Entry b with length L computes exactly the length-L sequence (reversed within its own L for
    the reverse direction); Y is 0 past L and Y_h (Y_c) hold the state after step L (0 for L = 0).
    sequence_lens is a graph input (int32): integers pass the Emulator uncast."""
    params, x = _random_rnn(op, seq=6, batch=5)
    hid = 4
    lens = np.array([6, 3, 0, 1, 5], np.int32)
    a = _onnx_arrays(op, params, x, hid)
    a["sequence_lens"] = lens
    attrs = {"hidden_size": hid, "direction": direction}
    g = _model(op, a, attrs, ins=("X", "W", "R", "B", "sequence_lens"), extra_inputs=("sequence_lens",))
    out = g.run({"X": x, "sequence_lens": lens}, precision=P16)
    for bi, n in enumerate(lens):
        if n == 0:
            assert not np.any(out["Y"][:, :, bi]) and not np.any(out["Y_h"][:, bi])
            continue
        one = dict(a, X=x[:n, bi:bi + 1].copy())
        del one["sequence_lens"]
        ref = _model(op, one, attrs).run(one["X"], precision=P16)
        np.testing.assert_array_equal(out["Y"][:n, :, bi:bi + 1], ref["Y"])
        assert not np.any(out["Y"][n:, :, bi])
        np.testing.assert_array_equal(out["Y_h"][:, bi:bi + 1], ref["Y_h"])
        if op == "LSTM":
            np.testing.assert_array_equal(out["Y_c"][:, bi:bi + 1], ref["Y_c"])


def test_lstm_small_end_to_end_close_to_float():
    g = zoo.build("lstm-small")
    rng = np.random.default_rng(7)
    xs = rng.standard_normal((8,) + g.inputs[0].shape).astype(np.float32)
    for precision, tol in (("ap_fixed<16,6>", 0.03), ("ap_fixed<18,8>", 0.03),
                           ({"default": "ap_fixed<20,8>", "tables": {"sigmoid": {"size": 4096},
                                                                     "tanh": {"size": 4096}}}, 0.01)):
        err = max(np.max(np.abs(g.run(x, precision=precision)["output"] - g.run(x)["output"])) for x in xs)
        assert err < tol, (precision, err)
    # the statistics of the LSTM node cover its state and cell casts
    _, stats = emulator_for(g, "ap_fixed<16,6>").run(xs[0], observe=True)
    st = stats["lstm"]
    assert st.result_format == "ap_fixed<16,6>" and st.count == 2 * 16 * 64 and st.max > st.min


def test_state_and_cell_roles_default_to_result():
    cfg = PrecisionConfig.from_dict({"default": Q16, "result": "ap_fixed<12,4>",
                                     "nodes": {"a": {"result": "ap_fixed<10,2>"}, "b": {"cell": "ap_fixed<20,8>"}},
                                     "op_types": {"GRU": {"state": "ap_fixed<14,4>"}}})
    a, b, gru = cfg.for_node("a", "LSTM"), cfg.for_node("b", "LSTM"), cfg.for_node("c", "GRU")
    assert str(a.state) == str(a.cell) == "ap_fixed<10,2>"
    assert str(b.state) == "ap_fixed<12,4>" and str(b.cell) == "ap_fixed<20,8>"
    assert str(gru.state) == "ap_fixed<14,4>" and str(gru.cell) == "ap_fixed<12,4>"
    with pytest.raises(PrecisionError, match="'auto' is accepted only for the accum role"):
        PrecisionConfig.from_dict({"default": Q16, "state": "auto"})


@pytest.mark.parametrize("attrs, arrays, match", [
    ({"clip": 3.0}, {}, "clip=3.0 has no bit-accurate kernel"),
    ({"input_forget": 1}, {}, "input_forget=1"),
    ({"activations": ["HardSigmoid", "Tanh", "Tanh"]}, {}, r"activations \['HardSigmoid'\]"),
    ({}, {"P": np.full((1, 12), 0.5)}, "peephole"),
])
def test_what_hls4ml_does_not_compute_is_refused_naming_the_node(attrs, arrays, match):
    params, x = _random_rnn("LSTM")
    a = {**_onnx_arrays("LSTM", params, x, 4), **arrays}
    ins = ("X", "W", "R", "B", "", "", "", "P") if "P" in arrays else ("X", "W", "R", "B")
    g = _model("LSTM", a, {"hidden_size": 4, **attrs}, ins=ins)
    g.run(x)  # the float kernel computes it
    with pytest.raises(PrecisionError, match=f"LSTM node 'rnn'.*{match}"):
        g.run(x, precision=P16)


def test_zero_peepholes_are_accepted():
    params, x = _random_rnn("LSTM")
    a = _onnx_arrays("LSTM", params, x, 4)
    plain = _model("LSTM", a, {"hidden_size": 4}).run(x, precision=P16)
    a["P"] = np.zeros((1, 12))
    peep = _model("LSTM", a, {"hidden_size": 4}, ins=("X", "W", "R", "B", "", "", "", "P")).run(x, precision=P16)
    for k in plain:
        np.testing.assert_array_equal(plain[k], peep[k])
