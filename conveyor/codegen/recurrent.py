"""LSTM and GRU in the generated firmware: conveyor::lstm_sequence / gru_sequence (include/conveyor_rnn.h).

Per time step they call `conveyor::lstm_step` / `gru_step`, hls4ml 1.3.0's `lstm_static` /
`gru_static` (Vivado, io_parallel) line for line with the hidden state in its own type h_T and
the LSTM cell in s_T (tests/test_numerics_rnn.py checks that header against hls4ml's own
`nnet::lstm_stack` / `gru_stack` and the emulator bit for bit). The config structs are the ones
hls4ml's `recurrent_templates.py` writes (two `dense_config`s over `nnet::DenseLatency`, the
recurrent and the candidate activation tables), plus the sequence: its length, the steps that
count (a constant `sequence_lens`), the direction and which output (Y, Y_h or Y_c) the board reads.

Weights go in hls4ml's layout and gate order: W as [n_in][G*H], R as [H][G*H], B as the input
biases then the recurrent ones, gates i f c o (LSTM) / z r h (GRU), per direction; every output
of a dense is computed on its own, so reordering ONNX's gates (i o f c) changes no bits.
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.codegen.layers import Layer, dense_config, exact_accum, fixed
from conveyor.errors import CodegenError
from conveyor.numerics.fixed import FixedType

#: ONNX gate order -> hls4ml's (Keras'): hls4ml gate k is ONNX gate KERAS_FROM_ONNX[op][k]
KERAS_FROM_ONNX = {"LSTM": (0, 2, 3, 1), "GRU": (0, 1, 2)}   # LSTM ONNX i o f c -> i f c o
GATES = {"LSTM": 4, "GRU": 3}
OUTPUTS = {"LSTM": ("Y", "Y_h", "Y_c"), "GRU": ("Y", "Y_h")}
#: the recurrent activations hls4ml has (nnet_recr_activations.h)
ACTIVATIONS = ("Sigmoid", "Tanh", "Relu")
SUPPORTED = ("direction forward, reverse or bidirectional; layout 0 or 1 with batch 1; one output read "
             "(Y: return sequences, Y_h: last state, Y_c: last cell); activations Sigmoid/Tanh/Relu (LSTM: "
             "the same for g and h, as hls4ml has one `activation`), sigmoid/tanh tables over hls4ml's ranges "
             "[-8, 8) / [-4, 4); constant initial states and sequence_lens; no peepholes; GRU "
             "linear_before_reset 0 or 1")


def _refuse(layer: Layer, what: str) -> CodegenError:
    return CodegenError(f"node '{layer.node.name}' ({layer.node.op_type}): {what}; code generation takes {SUPPORTED}")


def _activations(layer: Layer) -> list[str]:
    from conveyor.ops.rnn import _activation_names

    node = layer.node
    names = _activation_names(node, ("Sigmoid", "Tanh", "Tanh") if node.op_type == "LSTM" else ("Sigmoid", "Tanh"))
    bad = sorted({a for a in names if a not in ACTIVATIONS})
    if bad:
        raise _refuse(layer, f"activations {bad}")
    return names


def _table(layer: Layer, act: str) -> tuple[int, FixedType]:
    """(entries, table_t) of a recurrent activation; only hls4ml's fixed table ranges."""
    from conveyor.ops import lut

    if act == "Relu":
        size, tfmt = lut.DEFAULTS["sigmoid"]["size"], FixedType.parse(lut.DEFAULTS["sigmoid"]["format"])
        return size, tfmt   # unused by nnet::activation::relu; hls4ml writes its defaults
    name = act.lower()
    size, lo, hi, tfmt = lut.range_spec(layer.node, layer.prec, name)
    want = (int(lut.DEFAULTS[name]["min"]), int(lut.DEFAULTS[name]["max"]))
    if (lo, hi) != want:
        raise _refuse(layer, f"tables.{name} spans [{lo}, {hi}); nnet::{name}'s table spans [{want[0]}, {want[1]})")
    return size, fixed(tfmt, f"node '{layer.node.name}' tables.{name}.format")


def _bound(fmt: FixedType) -> float:
    return max(abs(fmt.min_value), abs(fmt.max_value))


def _auto_accum(layer: Layer, fx, fw, fr, fb, S, C, w, r, b, acts, tables, lbr: bool) -> FixedType:
    """'auto' (the emulator computes every accum_t value exactly): an ap_fixed that holds each
    one, i.e. the dense sums, the gate sums, the activations' results and (GRU, linear before
    reset) r times the recurrent sum, on the finest grid among them."""
    op = layer.node.op_type
    n_in, hid = w.shape[0], r.shape[0]
    wmax, rmax = float(np.max(np.abs(w))), float(np.max(np.abs(r)))
    bmax = float(np.max(np.abs(b))) if b is not None else 0.0
    xw = exact_accum(fx, fw, fb, n_in, wmax, bmax)
    hr = exact_accum(S, fr, fb, hid, rmax, bmax)
    fbf = fb.frac_bits if fb is not None else 0
    pre_frac = max(0, xw.frac_bits, hr.frac_bits, fbf)
    pre = 2.0 ** max(xw.integer, hr.integer)                 # |xw + hr| < 2^(max integer bits)

    def out(act, in_frac, in_bound):  # (grid, bound) of an activation's result
        if act == "Relu":
            return in_frac, in_bound
        return tables[act].frac_bits, _bound(tables[act])

    f_frac, f_bound = out(acts[0], pre_frac, pre)             # i f o / z r
    fracs, bounds = [pre_frac, f_frac], [pre, f_bound]
    if op == "LSTM":
        for frac_bound in (out(acts[1], pre_frac, pre), out(acts[2], C.frac_bits, _bound(C))):  # c~, act(c)
            fracs.append(frac_bound[0])
            bounds.append(frac_bound[1])
    else:
        h_frac, h_bound = pre_frac, pre
        if lbr:                                              # r * (h R_h + Rb_h), then + x W_h
            p_frac, p_bound = f_frac + hr.frac_bits, f_bound * 2.0 ** hr.integer
            h_frac, h_bound = max(pre_frac, p_frac), 2.0 ** xw.integer + p_bound
            fracs += [p_frac, h_frac]
            bounds += [p_bound, h_bound]
        hh = out(acts[1], h_frac, h_bound)
        fracs.append(hh[0])
        bounds.append(hh[1])
    frac = max(fracs)
    integer = max(1, math.ceil(math.log2(max(bounds) + 2.0 ** -frac)) + 2)
    if integer + frac > 1024:
        raise CodegenError(f"node '{layer.node.name}' ({op}): an exact ('auto') accumulator needs "
                           f"{integer + frac} bits, beyond ap_fixed's 1024; set accum to a format")
    return FixedType(integer + frac, integer)


def _activ_cfg(name: str, n_in: int, size: int, table) -> str:
    return f"""struct {name} : nnet::activ_config {{
    static const unsigned n_in = {n_in};
    static const unsigned table_size = {size};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = 1;
    typedef {table} table_t;
}};
"""


def _raw_array(name: str, fmt: FixedType, values: np.ndarray) -> str:
    raw = np.asarray(fmt.quantize_raw(np.asarray(values, np.float64).reshape(-1)), dtype=np.int64)
    return f"static const long long {name}[{raw.size}] = {{{', '.join(map(str, raw.tolist()))}}};\n"


def _const_input(layer: Layer, slot: int, what: str):
    """A constant input (initial states, sequence_lens), None when absent; refused when computed."""
    node = layer.node
    if slot >= len(node.inputs) or not node.inputs[slot]:
        return None
    if slot not in layer.consts:
        raise _refuse(layer, f"its {what} '{node.inputs[slot]}' is computed, not a constant")
    return np.asarray(layer.consts[slot], np.float64)


def recurrent(layer: Layer):
    """ONNX LSTM / GRU over one item's sequence (batch 1)."""
    from conveyor.ops.rnn import _direction, _dims, _layout

    node, op = layer.node, layer.node.op_type
    G = GATES[op]
    x_shape = layer.in_shapes[0]
    if len(layer.in_shapes) != 1:
        raise _refuse(layer, f"{len(layer.in_shapes)} computed inputs {list(node.inputs)}")
    if 7 in layer.params:
        raise _refuse(layer, "peephole weights P (drop the input: the emulator takes only all-zero ones)")
    if any(s not in layer.params for s in (1, 2)):
        raise _refuse(layer, "W and R must be constants")
    seq, batch, n_in, hid, ndir = _dims(node, [x_shape, layer.params[1][0].shape, layer.params[2][0].shape,
                                               layer.params[3][0].shape if 3 in layer.params else None], G)
    if batch != 1:
        raise _refuse(layer, f"input X {x_shape} holds a batch of {batch} (layout {_layout(node)})")
    which = layer.output
    names = OUTPUTS[op]
    acts = _activations(layer)
    if op == "LSTM" and any(acts[3 * d + 1] != acts[3 * d + 2] for d in range(ndir)):
        raise _refuse(layer, f"activations {acts}: g and h differ")
    lbr = bool(int(node.attr("linear_before_reset", 0))) if op == "GRU" else False
    lens = _const_input(layer, 4, "sequence_lens")
    n_valid = seq if lens is None else int(lens.reshape(-1)[0])
    h0 = _const_input(layer, 5, "initial_h")
    c0 = _const_input(layer, 6, "initial_c") if op == "LSTM" else None
    h0 = h0.reshape(ndir, hid) if h0 is not None else None     # layout 0 or 1: the same with batch 1
    c0 = c0.reshape(ndir, hid) if c0 is not None else None
    prec = layer.prec
    fx = fixed(layer.in_fmts[0], f"node '{node.name}' input X")
    (w, fw), (r, fr) = layer.params[1], layer.params[2]
    fw, fr = fixed(fw, f"node '{node.name}' W"), fixed(fr, f"node '{node.name}' R")
    b, fb = layer.params.get(3, (None, None))
    fb = fixed(fb, f"node '{node.name}' B") if b is not None else None
    R = fixed(layer.out_fmt, f"node '{node.name}' result")
    S = fixed(prec.state if prec.state is not None else prec.result, f"node '{node.name}' state")
    C = fixed(prec.cell if prec.cell is not None else prec.result, f"node '{node.name}' cell")
    perm = list(KERAS_FROM_ONNX[op])

    def keras(m, k):  # ONNX [G*H, k] -> hls4ml [k][G*H], gates reordered
        return np.ascontiguousarray(m.reshape(G, hid, k)[perm].reshape(G * hid, k).T)

    def keras_b(v):
        return v.reshape(G, hid)[perm].reshape(-1)

    ws = [keras(w[d], n_in) for d in range(ndir)]
    rs = [keras(r[d], hid) for d in range(ndir)]
    bs = [np.concatenate([keras_b(b[d, :G * hid]), keras_b(b[d, G * hid:])]) for d in range(ndir)] \
        if b is not None else None
    tables = {a: _table(layer, a)[1] for a in set(acts) if a != "Relu"}
    per_dir = len(acts) // ndir
    if prec.accum is None:   # per direction (their activations may differ), the wider of both
        wide = [_auto_accum(layer, fx, fw, fr, fb, S, C, np.concatenate(ws, 1), np.concatenate(rs, 1),
                            np.concatenate(bs) if bs is not None else None, acts[d * per_dir:(d + 1) * per_dir],
                            tables, lbr) for d in range(ndir)]
        i, f = max(a.integer for a in wide), max(a.frac_bits for a in wide)
        acc = FixedType(i + f, i)
    else:
        acc = fixed(prec.accum, f"node '{node.name}' accum")
    bias_t = fb if fb is not None else FixedType(2, 1)
    c = layer.cfg
    reuse = max(1, math.ceil(G * hid * (n_in + hid) / max(layer.parallelism, 1)))
    n_res = seq * ndir * hid if which == 0 else ndir * hid
    text = [f"// {c}: {node.name}: {op} {_direction(node)}, {seq} steps ({n_valid} counted) of {n_in} -> "
            f"hidden {hid}, output {names[which]}; accum {acc}, state {S}" + (f", cell {C}" if op == "LSTM" else "")
            + "\n", '#include "conveyor_rnn.h"\n',
            dense_config(f"{c}_mult1", n_in, G * hid, reuse, acc, bias_t, fw),
            dense_config(f"{c}_mult2", hid, G * hid, reuse, acc, bias_t, fr),
            dense_config(f"{c}_mult_zr", hid, 2 * hid, reuse, acc, bias_t, fr),
            dense_config(f"{c}_mult_h", hid, hid, reuse, acc, bias_t, fr)]
    i = layer.index
    text.append(f"""struct {c} {{  // {node.name}: the types of its parameters w{i}, r{i}, b{i}
    typedef {fw} weight_t;
    typedef {fr} recurrent_weight_t;
    typedef {bias_t} bias_t;
}};
""")
    calls = []
    reverse = {"forward": [0], "reverse": [1], "bidirectional": [0, 1]}[_direction(node)]
    for d in range(ndir):
        recr, act = acts[d * per_dir], acts[d * per_dir + 1]
        rsize, rtab = _table(layer, recr)
        asize, atab = _table(layer, act)
        cd = f"{c}_d{d}"
        how = "reverse" if reverse[d] else "forward"
        text += [_activ_cfg(f"{cd}_recr", hid * (G - 1), rsize, rtab), _activ_cfg(f"{cd}_act", hid, asize, atab),
                 f"""struct {cd} : nnet::{op.lower()}_config {{  // {node.name}: direction {d} ({how})
    typedef {acc} accum_t;
    typedef {fw} weight_t;
    typedef {fr} recurrent_weight_t;
    typedef {bias_t} bias_t;
    typedef {bias_t} recurrent_bias_t;
    typedef {S} h_t;
    typedef {C} s_t;
    typedef {c}_mult1 mult_config1;
    typedef {c}_mult2 mult_config2;
    typedef {c}_mult_zr mult_config_zr;
    typedef {c}_mult_h mult_config_h;
    typedef {cd}_recr ACT_CONFIG_{op};
    template<class x_T, class y_T, class config_T>
    using activation_recr = nnet::activation::{recr.lower()}<x_T, y_T, config_T>;
    typedef {cd}_act ACT_CONFIG_T;
    template<class x_T, class y_T, class config_T>
    using activation = nnet::activation::{act.lower()}<x_T, y_T, config_T>;
    static const unsigned n_in = {n_in};
    static const unsigned n_out = {hid};
    static const unsigned n_state = {hid};
    static const unsigned n_sequence = {seq};
    static const unsigned n_sequence_out = {seq};
    static const unsigned n_valid = {n_valid};
    static const unsigned n_dirs = {ndir};
    static const unsigned dir = {d};
    static const bool reverse = {'true' if reverse[d] else 'false'};
    static const unsigned which = {which};  // 0 Y, 1 Y_h, 2 Y_c
    static const unsigned n_res = {n_res};
    static const unsigned io_type = nnet::io_parallel;
    static const unsigned reuse_factor = {reuse};  // plan: {layer.parallelism} multipliers
    static const bool store_weights_in_bram = false;
    static const bool use_static = true;
    static const bool pytorch_order = false;
}};
"""]
        text.append(_raw_array(f"{cd}_h0_raw", S, h0[d] if h0 is not None else np.zeros(hid)))
        if op == "LSTM":
            text.append(_raw_array(f"{cd}_c0_raw", C, c0[d] if c0 is not None else np.zeros(hid)))
        wo, ro, bo = d * n_in * G * hid, d * hid * G * hid, d * 2 * G * hid
        bias = (f"b{i} + {bo}", f"b{i} + {bo + G * hid}") if bs is not None else (f"{c}_nobias", f"{c}_nobias")
        init = (f"{cd}::h_t {cd}_h0[{hid}]; for (int k = 0; k < {hid}; k++) conveyor::from_raw({cd}_h0[k], "
                f"{cd}_h0_raw[k]);")
        if op == "LSTM":
            init += (f" {cd}::s_t {cd}_c0[{hid}]; for (int k = 0; k < {hid}; k++) conveyor::from_raw({cd}_c0[k], "
                     f"{cd}_c0_raw[k]);")
            calls.append(init + f" conveyor::lstm_sequence<{{x}}_t, {cd}::h_t, {cd}::s_t, {{y}}_t, {cd}>({{x}}, {{y}}, "
                         f"{cd}_h0, {cd}_c0, w{i} + {wo}, r{i} + {ro}, {bias[0]}, {bias[1]});")
        else:
            after = "true" if lbr else "false"
            calls.append(init + f" conveyor::gru_sequence<{{x}}_t, {cd}::h_t, {{y}}_t, {cd}, {after}>({{x}}, {{y}}, "
                         f"{cd}_h0, w{i} + {wo}, r{i} + {ro}, {bias[0]}, {bias[1]});")
    if bs is None:
        text.append(f"static {bias_t} {c}_nobias[{G * hid}];  // B absent: zeros\n")
    flat = {1: np.concatenate([m.reshape(-1) for m in ws]), 2: np.concatenate([m.reshape(-1) for m in rs])}
    if bs is not None:
        flat[3] = np.concatenate(bs)
    return "".join(text), " ".join(calls), flat


#: the C arrays and config types of a recurrent node's parameters (board.py names slot 1 `w`, others `b`)
recurrent.param_arrays = {1: ("w", "weight_t"), 2: ("r", "recurrent_weight_t"), 3: ("b", "bias_t")}
#: Y [seq, dirs, 1, H] is 4-D but no image: it keeps ONNX's order inside the board
recurrent.channels_last = False

WRITERS = {"LSTM": recurrent, "GRU": recurrent}
