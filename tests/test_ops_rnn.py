"""LSTM and GRU kernels against onnxruntime (and the ONNX reference evaluator where
onnxruntime rejects a configuration), plus shape inference, MACs and attribute checks."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

import conveyor.ops.rnn  # registers LSTM and GRU
from conveyor.errors import ModelError
from conveyor.graph.tensor import Node
from conveyor.ops import registry
from conveyor.ops.registry import ValueInfo

RTOL, ATOL = 1e-4, 1e-5
SLOTS = {
    "LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
    "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
}
OUTS = {"LSTM": ["Y", "Y_h", "Y_c"], "GRU": ["Y", "Y_h"]}
GATES = {"LSTM": 4, "GRU": 3}


def make_inputs(op, seq=5, batch=3, inp=4, hid=6, ndir=1, layout=0, bias=True, init_h=False,
                init_c=False, peep=False, lens=None, seed=0):
    rng = np.random.default_rng(seed)
    g = GATES[op]

    def rnd(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state = (batch, ndir, hid) if layout else (ndir, batch, hid)
    a = {
        "X": rnd(*((batch, seq, inp) if layout else (seq, batch, inp)), scale=1.0),
        "W": rnd(ndir, g * hid, inp),
        "R": rnd(ndir, g * hid, hid),
    }
    if bias:
        a["B"] = rnd(ndir, 2 * g * hid)
    if lens is not None:
        a["sequence_lens"] = np.asarray(lens, np.int32)
    if init_h:
        a["initial_h"] = rnd(*state)
    if init_c:
        a["initial_c"] = rnd(*state)
    if peep:
        a["P"] = rnd(ndir, 3 * hid)
    return a


def slot_names(op, arrays):
    names = [n if n in arrays else "" for n in SLOTS[op]]
    while names and names[-1] == "":
        names.pop()
    return names


def onnx_model(op, arrays, attrs, outputs, opset):
    names = slot_names(op, arrays)
    ins = [helper.make_tensor_value_info(
        n, TensorProto.INT32 if n == "sequence_lens" else TensorProto.FLOAT, arrays[n].shape)
        for n in names if n]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs if n]
    node = helper.make_node(op, names, outputs, name="rnn0", **attrs)
    graph = helper.make_graph([node], "g", ins, outs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return model


def run_ort(model, arrays):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: arrays[i.name] for i in model.graph.input})


def run_ref(model, arrays):
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {i.name: arrays[i.name] for i in model.graph.input})


def conveyor_node(op, arrays, attrs, outputs, opset):
    return Node("rnn0", op, tuple(slot_names(op, arrays)), tuple(outputs), dict(attrs), opset)


def run_conveyor(op, arrays, attrs, outputs, opset):
    node = conveyor_node(op, arrays, attrs, outputs, opset)
    opdef = registry.get(op)
    opdef.check(node)
    vals = [arrays[n] if n else None for n in node.inputs]
    got = opdef.run(node, vals)
    assert len(got) == len(OUTS[op])
    infos = [ValueInfo(v.shape, v.dtype) if v is not None else None for v in vals]
    shapes = opdef.infer(node, infos)
    assert len(shapes) == len(OUTS[op])
    for (shape, dtype), arr in zip(shapes, got):
        assert arr.shape == shape and arr.dtype == np.float32 and dtype == np.float32
    return [g for g, n in zip(got, outputs) if n]


def compare(op, arrays, attrs, outputs=None, opset=14, reference="ort"):
    outputs = list(OUTS[op]) if outputs is None else outputs
    model = onnx_model(op, arrays, attrs, outputs, opset)
    want = (run_ort if reference == "ort" else run_ref)(model, arrays)
    got = run_conveyor(op, arrays, attrs, outputs, opset)
    assert len(got) == len(want)
    for g, w, n in zip(got, want, [o for o in outputs if o]):
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=f"output {n}")
    return got


# ---- numerics vs onnxruntime --------------------------------------------------------------

DIRS = ["forward", "reverse", "bidirectional"]


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("bias", [True, False])
def test_lstm_basic(direction, bias):
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs("LSTM", ndir=ndir, bias=bias)
    compare("LSTM", a, {"hidden_size": 6, "direction": direction})


@pytest.mark.parametrize("direction", DIRS)
def test_lstm_full(direction):
    """initial_h/c, peepholes and unequal sequence_lens together."""
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs("LSTM", seq=6, batch=4, ndir=ndir, init_h=True, init_c=True, peep=True,
                    lens=[6, 3, 1, 5], seed=1)
    compare("LSTM", a, {"hidden_size": 6, "direction": direction})


@pytest.mark.parametrize("direction", DIRS)
def test_lstm_clip_input_forget(direction):
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs("LSTM", ndir=ndir, init_h=True, init_c=True, peep=True, seed=2)
    a["X"] *= 3
    compare("LSTM", a, {"hidden_size": 6, "direction": direction, "clip": 0.7, "input_forget": 1})


def test_lstm_clip_only():
    a = make_inputs("LSTM", peep=True, seed=3)
    a["X"] *= 4
    compare("LSTM", a, {"hidden_size": 6, "clip": 1.5})


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_basic(direction, lbr):
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs("GRU", ndir=ndir, seed=4)
    compare("GRU", a, {"hidden_size": 6, "direction": direction, "linear_before_reset": lbr})


@pytest.mark.parametrize("direction", DIRS)
@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_full(direction, lbr):
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs("GRU", seq=6, batch=4, ndir=ndir, init_h=True, lens=[2, 6, 4, 1], seed=5)
    compare("GRU", a, {"hidden_size": 6, "direction": direction, "linear_before_reset": lbr})


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_no_bias_clip(lbr):
    a = make_inputs("GRU", bias=False, init_h=True, seed=6)
    a["X"] *= 4
    compare("GRU", a, {"hidden_size": 6, "linear_before_reset": lbr, "clip": 0.8})


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_opset7(op):
    a = make_inputs(op, ndir=2, init_h=True, lens=[5, 2, 4], seed=7)
    compare(op, a, {"hidden_size": 6, "direction": "bidirectional"}, opset=7)


@pytest.mark.parametrize("op,outputs", [
    ("LSTM", ["Y"]), ("LSTM", ["", "Y_h"]), ("LSTM", ["", "", "Y_c"]), ("LSTM", ["Y", "", "Y_c"]),
    ("GRU", ["", "Y_h"]), ("GRU", ["Y"]),
])
def test_omitted_outputs(op, outputs):
    a = make_inputs(op, ndir=2, lens=[5, 1, 3], seed=8)
    compare(op, a, {"hidden_size": 6, "direction": "bidirectional"}, outputs=outputs)


def test_omitted_middle_inputs():
    # B omitted but sequence_lens and initial_c given: "" slots in between.
    a = make_inputs("LSTM", bias=False, init_c=True, lens=[5, 4, 2], seed=9)
    assert slot_names("LSTM", a) == ["X", "W", "R", "", "sequence_lens", "", "initial_c"]
    compare("LSTM", a, {"hidden_size": 6})


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_zero_length_sequence(op):
    # onnxruntime gives zeros in Y and in the final states (not the initial state).
    a = make_inputs(op, ndir=2, init_h=True, init_c=(op == "LSTM"), lens=[5, 0, 3], seed=10)
    got = compare(op, a, {"hidden_size": 6, "direction": "bidirectional"})
    assert not got[0][:, :, 1].any() and not got[1][:, 1].any()


LSTM_ACTS = [
    (["HardSigmoid", "LeakyRelu", "Softsign"], [0.3, 0.05], [0.45]),
    (["Sigmoid", "Elu", "Softplus"], [0.8], []),
    (["Affine", "ScaledTanh", "ThresholdedRelu"], [0.6, 1.2, 0.1], [0.1, 0.7]),
    (["HardSigmoid", "Relu", "Tanh"], [], []),  # HardSigmoid defaults 0.2 / 0.5
]


@pytest.mark.parametrize("acts,alpha,beta", LSTM_ACTS)
def test_lstm_activations(acts, alpha, beta):
    a = make_inputs("LSTM", init_h=True, init_c=True, peep=True, lens=[5, 3, 4], seed=11)
    attrs = {"hidden_size": 6, "activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    compare("LSTM", a, attrs)


@pytest.mark.parametrize("lbr", [0, 1])
def test_gru_activations_bidirectional(lbr):
    # One (f, g) pair per direction; alpha consumed by the activations that take one.
    a = make_inputs("GRU", ndir=2, init_h=True, seed=12)
    attrs = {"hidden_size": 6, "direction": "bidirectional", "linear_before_reset": lbr,
             "activations": ["HardSigmoid", "Softsign", "Sigmoid", "LeakyRelu"],
             "activation_alpha": [0.25, 0.2], "activation_beta": [0.4]}
    compare("GRU", a, attrs)


# ---- layout 1 (batch first) ------------------------------------------------------------------

def _ort_accepts_layout1():
    a = make_inputs("GRU", layout=1)
    try:
        run_ort(onnx_model("GRU", a, {"hidden_size": 6, "layout": 1}, ["Y", "Y_h"], 14), a)
        return True
    except Exception:
        return False


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
@pytest.mark.parametrize("direction", DIRS)
def test_layout1_reference(op, direction):
    ndir = 2 if direction == "bidirectional" else 1
    a = make_inputs(op, layout=1, ndir=ndir, init_h=True, init_c=(op == "LSTM"), seed=13)
    attrs = {"hidden_size": 6, "direction": direction, "layout": 1}
    compare(op, a, attrs, reference="ort" if _ort_accepts_layout1() else "ref")


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_layout1_matches_layout0(op):
    """Every feature under layout 1 equals layout 0 on transposed tensors (checked vs onnxruntime)."""
    a0 = make_inputs(op, seq=6, batch=4, ndir=2, init_h=True, init_c=(op == "LSTM"),
                     peep=(op == "LSTM"), lens=[6, 2, 1, 4], seed=14)
    attrs = {"hidden_size": 6, "direction": "bidirectional", "clip": 2.0}
    want = compare(op, a0, attrs)
    a1 = dict(a0)
    a1["X"] = a0["X"].transpose(1, 0, 2).copy()
    for k in ("initial_h", "initial_c"):
        if k in a1:
            a1[k] = a0[k].transpose(1, 0, 2).copy()
    got = run_conveyor(op, a1, {**attrs, "layout": 1}, OUTS[op], 14)
    np.testing.assert_array_equal(got[0], want[0].transpose(2, 0, 1, 3))
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(g, w.transpose(1, 0, 2))


# ---- shapes, MACs, checks -------------------------------------------------------------------

@pytest.mark.parametrize("layout", [0, 1])
def test_infer_shapes(layout):
    seq, batch, inp, hid = 7, 2, 3, 5
    x = (batch, seq, inp) if layout else (seq, batch, inp)
    f32 = np.dtype(np.float32)
    for op, g in GATES.items():
        node = Node("n", op, ("X", "W", "R"), ("Y",), {"hidden_size": hid, "direction": "bidirectional",
                                                       "layout": layout}, 14)
        ins = [ValueInfo(x, f32), ValueInfo((2, g * hid, inp), f32), ValueInfo((2, g * hid, hid), f32)]
        out = registry.get(op).infer(node, ins + [None] * 5)
        y = (batch, seq, 2, hid) if layout else (seq, 2, batch, hid)
        st = (batch, 2, hid) if layout else (2, batch, hid)
        assert out == [(y, f32)] + [(st, f32)] * (len(OUTS[op]) - 1)


def test_infer_rejects_bad_shapes():
    f32 = np.dtype(np.float32)
    node = Node("n", "LSTM", ("X", "W", "R"), ("Y",), {"hidden_size": 5}, 14)
    ins = [ValueInfo((7, 2, 3), f32), ValueInfo((1, 20, 4), f32), ValueInfo((1, 20, 5), f32)]
    with pytest.raises(ModelError, match="'n'.*W.*\\(1, 20, 3\\)"):
        registry.get("LSTM").infer(node, ins)


def test_macs():
    f32 = np.dtype(np.float32)
    seq, batch, inp, hid = 7, 2, 3, 5
    ins = [ValueInfo((seq, batch, inp), f32), ValueInfo((2, 4 * hid, inp), f32),
           ValueInfo((2, 4 * hid, hid), f32), None, None, None, None, ValueInfo((2, 3 * hid), f32)]
    node = Node("n", "LSTM", ("X", "W", "R", "", "", "", "", "P"), ("Y",),
                {"hidden_size": hid, "direction": "bidirectional"}, 14)
    assert registry.get("LSTM").macs(node, ins, []) == (4 * hid * (inp + hid) + 6 * hid) * seq * batch * 2
    gnode = Node("g", "GRU", ("X", "W", "R"), ("Y",), {"hidden_size": hid}, 14)
    gins = [ins[0], ValueInfo((1, 3 * hid, inp), f32), ValueInfo((1, 3 * hid, hid), f32)]
    assert registry.get("GRU").macs(gnode, gins, []) == (3 * hid * (inp + hid) + 3 * hid) * seq * batch
    assert registry.get("LSTM").param_slots == (1, 2, 3, 7)
    assert registry.get("GRU").param_slots == (1, 2, 3)


@pytest.mark.parametrize("attrs,key", [
    ({"activations": ["Sigmoid", "Gelu", "Tanh"]}, "activations"),
    ({"activations": ["Sigmoid", "Tanh"]}, "activations"),
    ({"direction": "sideways"}, "direction"),
    ({"layout": 2}, "layout"),
    ({"clip": -1.0}, "clip"),
])
def test_check_rejects(attrs, key):
    node = Node("bad_rnn", "LSTM", ("X", "W", "R"), ("Y",), {"hidden_size": 4, **attrs}, 14)
    with pytest.raises(ModelError) as e:
        registry.get("LSTM").check(node)
    msg = str(e.value)
    assert "bad_rnn" in msg and key in msg and "accepted" in msg


def test_check_lists_accepted_activations():
    node = Node("r", "GRU", ("X", "W", "R"), ("Y",), {"activations": ["Swish", "Tanh"]}, 14)
    with pytest.raises(ModelError, match="Swish.*HardSigmoid.*Softplus"):
        registry.get("GRU").check(node)


def test_sequence_lens_out_of_range():
    a = make_inputs("GRU", lens=[5, 9, 1])
    node = conveyor_node("GRU", a, {"hidden_size": 6}, ["Y"], 14)
    with pytest.raises(ModelError, match="sequence_lens"):
        registry.get("GRU").run(node, [a[n] if n else None for n in node.inputs])


def test_bidirectional_needs_one_activation_set_per_direction():
    # As in the spec and onnxruntime: 6 names for a bidirectional LSTM, not 3.
    node = Node("bi", "LSTM", ("X", "W", "R"), ("Y",),
                {"direction": "bidirectional", "activations": ["Sigmoid", "Tanh", "Tanh"]}, 14)
    with pytest.raises(ModelError, match="'bi'.*activations.*6 names"):
        registry.get("LSTM").check(node)
    node = Node("bi", "LSTM", ("X", "W", "R"), ("Y",),
                {"direction": "bidirectional", "activations": ["sigmoid", "TANH", "Tanh"] * 2}, 14)
    registry.get("LSTM").check(node)


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_hidden_size_from_R(op):
    a = make_inputs(op, ndir=2, init_h=True, seed=16)
    names = OUTS[op]
    with_attr = run_conveyor(op, a, {"hidden_size": 6, "direction": "bidirectional"}, names, 14)
    without = run_conveyor(op, a, {"direction": "bidirectional"}, names, 14)
    for g, w in zip(without, with_attr):
        np.testing.assert_array_equal(g, w)


@pytest.mark.skipif(conveyor.ops.rnn._lstm_steps is None, reason="numba (the `fast`/`test` extra) is not installed")
@pytest.mark.parametrize("attrs,kw", [
    ({"hidden_size": 6}, {}),
    ({"hidden_size": 6, "direction": "bidirectional"}, {"ndir": 2, "init_h": True, "init_c": True}),
    ({"hidden_size": 6, "layout": 1}, {"layout": 1}),
])
def test_lstm_numba_time_loop_matches_the_numpy_loop(attrs, kw, monkeypatch):
    """The compiled time loop (default activations; MLAS's rational tanh) against the numpy loop
    (numpy's tanh), and against onnxruntime: float32 rounding apart, the same LSTM."""
    rnn = conveyor.ops.rnn
    arrays = make_inputs("LSTM", seq=7, batch=2, hid=6, **kw)
    node = conveyor_node("LSTM", arrays, attrs, OUTS["LSTM"], 14)
    vals = [arrays[n] if n else None for n in node.inputs]
    assert rnn._lstm_fast(node, rnn._prepare(node, vals, 4), None)
    fast = registry.get("LSTM").run(node, vals)
    with monkeypatch.context() as m:
        m.setattr(rnn, "_lstm_steps", None)
        slow = registry.get("LSTM").run(node, vals)
    consts = {"W", "R", "B"}  # Graph.run's kernel: the weights laid out once (OpDef.prepare)
    prepared = registry.get("LSTM").prepare(node, [ValueInfo(v.shape, v.dtype, v if n in consts else None) if n else None
                                                  for n, v in zip(node.inputs, vals)])
    assert prepared is not None
    for f, s_, q in zip(fast, slow, prepared(vals)):
        assert f.dtype == np.float32 and f.shape == s_.shape == q.shape
        np.testing.assert_allclose(f, s_, rtol=1e-5, atol=2e-6)  # 6-ulp tanh, float32 sums
        np.testing.assert_allclose(q, f, rtol=1e-6, atol=1e-7)   # the same loop; BLAS may order W x otherwise
    compare("LSTM", arrays, attrs, opset=14, reference="ref" if attrs.get("layout") else "ort")  # ort: no layout 1
