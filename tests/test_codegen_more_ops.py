"""conveyor compile + csim for the ops of conveyor/codegen/layers_more.py: Transpose, Squeeze /
Unsqueeze, MatMul (constant weights on 3-D values; two run-time values, hls4ml's einsum),
LayerNormalization, HardSigmoid, HardSwish, Gelu, Erf, Exp, Sqrt, Reciprocal, Pow, Sigmoid /
Tanh tables over other ranges, ReduceSum / ReduceMean / ReduceMax over any axes, Resize
(nearest and linear) and ConvTranspose (strided, padded, grouped) — each board's g++-built C
simulation equal to the emulator bit for bit, at ap_fixed<16,6> and a narrow RND/SAT config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from onnx import helper
from torch import nn

from conveyor.cli import _resolve_cluster
from conveyor.codegen import compile as compile_plan
from conveyor.codegen.csim import compare, run_chain
from conveyor.errors import CodegenError
from conveyor.frontends.onnx import from_model
from conveyor.frontends.torch import from_torch
from conveyor.planner import plan
from helpers import csim_equals_emulator, make_model

Q16 = "ap_fixed<16,6>"
NARROW = {"default": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<14,6,AP_RND,AP_SAT>"}
#: sigmoid / tanh tables over ranges nnet::sigmoid / nnet::tanh do not span, and own-table settings
TABLES = {"sigmoid": {"min": -4, "max": 4, "size": 512}, "tanh": {"min": -2, "max": 3},
          "exp": {"min": -4, "max": 4, "size": 512}, "reciprocal": {"min": -4, "max": 4}}


def _check(tmp_path, graph, p, x):
    manifest, env, _ = csim_equals_emulator(tmp_path, graph, p, x)
    return manifest, env


def _seq_model(seed=0):
    """A transformer-ish block on [1, 4, 8]: LayerNorm, MatMul by weights, Transpose, MatMul of two
    run-time values, and the elementwise / reduction ops on its results."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "ls", "lb"], ["ln"], name="ln", axis=-1, epsilon=1e-5),
        n("MatMul", ["ln", "W"], ["h"], name="proj"),
        n("Transpose", ["h"], ["t"], name="tr", perm=[0, 2, 1]),
        n("MatMul", ["h", "t"], ["s"], name="qk"),
        n("Gelu", ["s"], ["g"], name="gelu"),
        n("Gelu", ["h"], ["gt"], name="gelu_tanh", approximate="tanh"),
        n("HardSwish", ["s"], ["hs"], name="hswish"),
        n("HardSigmoid", ["h"], ["hg"], name="hsig", alpha=0.3, beta=0.4),
        n("Erf", ["h"], ["er"], name="erf"),
        n("Exp", ["h"], ["ex"], name="exp"),
        n("Relu", ["h"], ["rl"], name="relu"),
        n("Sqrt", ["rl"], ["sq"], name="sqrt"),
        n("Pow", ["rl", "half"], ["pw"], name="pow"),
        n("Reciprocal", ["h"], ["rc"], name="recip"),
        n("Sigmoid", ["h"], ["sg"], name="sigmoid"),
        n("Tanh", ["s"], ["th"], name="tanh"),
        n("ReduceMean", ["s", "ax2"], ["rm"], name="rmean", keepdims=1),
        n("ReduceSum", ["h", "ax1"], ["rs"], name="rsum", keepdims=0),
        n("ReduceMax", ["s", "ax12"], ["rx"], name="rmax", keepdims=1),
        n("Unsqueeze", ["rs", "ax1"], ["un"], name="unsq"),
        n("Squeeze", ["un", "ax1"], ["sz"], name="sq_"),
        n("MatMul", ["t", "ln"], ["tl"], name="tl"),   # [1, 8, 4] @ [1, 4, 8]: a transposed operand
        n("Pad", ["h", "pads"], ["pr"], name="pad_reflect", mode="reflect"),
        n("Pad", ["h", "pads"], ["pz"], name="pad_zero"),
        n("Gather", ["h", "gi"], ["ga"], name="gather", axis=1),
        n("Split", ["h", "spl"], ["sa", "sb"], name="split", axis=2),
        n("Add", ["sa", "bias3"], ["ad"], name="add_const"),
        n("Sub", ["one5", "h"], ["rs_"], name="rsub"),
        n("Mul", ["s", "k"], ["mk"], name="mul_const"),
        n("Mul", ["h", "rm8"], ["mb"], name="mul_bcast"),   # [1, 4, 8] * [1, 4, 1]... of two run-time values
        n("Div", ["h", "three"], ["dv"], name="div"),
        n("Neg", ["s"], ["ng"], name="neg"),
        n("Abs", ["h"], ["ab"], name="abs"),
        n("ReduceMean", ["h", "ax2"], ["rm8"], name="rmean8", keepdims=1),
        n("LayerNormalization", ["h", "ls"], ["ln2"], name="ln_nobias", axis=-1, epsilon=1e-3),
        n("Cast", ["hg"], ["cs"], name="cast", to=1),
        n("Tanh", ["cs"], ["ct_"], name="tanh_cast"),
    ]
    outs = {"g": [1, 4, 4], "gt": [1, 4, 8], "hs": [1, 4, 4], "hg": [1, 4, 8], "er": [1, 4, 8], "ex": [1, 4, 8],
            "sq": [1, 4, 8], "pw": [1, 4, 8], "rc": [1, 4, 8], "sg": [1, 4, 8], "th": [1, 4, 4], "rm": [1, 4, 1],
            "rx": [1, 1, 1], "sz": [1, 8], "tl": [1, 8, 8], "pr": [1, 6, 11], "pz": [1, 6, 11], "ga": [1, 2, 8],
            "ad": [1, 4, 3], "rs_": [1, 4, 8], "mk": [1, 4, 4], "mb": [1, 4, 8], "dv": [1, 4, 8], "ng": [1, 4, 4],
            "ab": [1, 4, 8], "ln2": [1, 4, 8], "ct_": [1, 4, 8]}
    inits = {"ls": rng.uniform(0.5, 2.0, 8).astype(np.float32), "lb": (rng.normal(size=8) * 0.5).astype(np.float32),
             "W": (rng.normal(size=(8, 8)) * 0.6).astype(np.float32), "half": np.array(0.5, np.float32),
             "ax1": np.array([1]), "ax2": np.array([2]), "ax12": np.array([1, 2]),
             "pads": np.array([0, 1, 1, 0, 1, 2]), "gi": np.array([3, 0]), "spl": np.array([3, 5]),
             "bias3": np.array([0.25, -1.5, 0.7071], np.float32), "one5": np.array(1.5, np.float32),
             "k": np.array(0.37, np.float32), "three": np.array(3.0, np.float32)}
    model = make_model(nodes, [("x", [1, 4, 8])], list(outs.items()), inits, opset=20)
    return from_model(model)


def _seq_x(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4, 8)) * rng.uniform(0.2, 3, (n, 1, 1))   # row spreads over the LayerNorm table


@pytest.mark.parametrize("precision", [Q16, NARROW], ids=["q16", "narrow"])
def test_sequence_ops_one_board(tmp_path, precision):
    graph = _seq_model()
    prec = {"default": precision, "tables": TABLES} if isinstance(precision, str) else {**precision, "tables": TABLES}
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=prec)
    _, env = _check(tmp_path, graph, p, _seq_x(300, 1))
    assert len(np.unique(env["tl"], axis=0)) > 250   # the outputs follow the inputs


def _image_model(seed=0):
    """Conv, then ConvTranspose (strided + padded + output_padding; grouped), Resize nearest and
    linear, a 4-D Transpose, reductions over channels / one spatial axis / the plane."""
    rng = np.random.default_rng(seed)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        n("ConvTranspose", ["c", "tw", "tb"], ["ct"], name="deconv", strides=[2, 2], pads=[1, 1, 1, 1],
          output_padding=[1, 1], kernel_shape=[3, 3]),
        n("ConvTranspose", ["c", "gw", "gb"], ["cg"], name="deconv_g", strides=[2, 2], group=2, kernel_shape=[2, 2]),
        n("Resize", ["c", "", "sc"], ["rn"], name="up_nearest", mode="nearest"),
        n("Resize", ["c", "", "sc"], ["rl"], name="up_linear", mode="linear"),
        n("Resize", ["c", "", "sc"], ["ra"], name="up_linear_ac", mode="linear",
          coordinate_transformation_mode="asymmetric"),
        n("Transpose", ["c"], ["tc"], name="tr4", perm=[0, 1, 3, 2]),
        n("Relu", ["tc"], ["tr"], name="relu_t"),
        n("ReduceMax", ["c", "a1"], ["mx"], name="max_c", keepdims=1),
        n("ReduceMean", ["c", "a3"], ["mw"], name="mean_w", keepdims=0),
        n("ReduceSum", ["c", "a23"], ["sp"], name="sum_hw", keepdims=1),
        n("ReduceMean", ["c", "a23"], ["mp"], name="mean_hw", keepdims=1),
    ]
    outs = {"ct": [1, 2, 12, 12], "cg": [1, 2, 12, 12], "rn": [1, 4, 12, 12], "rl": [1, 4, 12, 12],
            "ra": [1, 4, 12, 12], "tr": [1, 4, 6, 6], "mx": [1, 1, 6, 6], "mw": [1, 4, 6], "sp": [1, 4, 1, 1],
            "mp": [1, 4, 1, 1]}
    inits = {"cw": (rng.normal(size=(4, 3, 3, 3)) * 0.5).astype(np.float32),
             "cb": (rng.normal(size=4) * 0.2).astype(np.float32),
             "tw": (rng.normal(size=(4, 2, 3, 3)) * 0.5).astype(np.float32),
             "tb": (rng.normal(size=2) * 0.2).astype(np.float32),
             "gw": (rng.normal(size=(4, 1, 2, 2)) * 0.5).astype(np.float32),
             "gb": (rng.normal(size=2) * 0.2).astype(np.float32),
             "sc": np.array([1, 1, 2, 2], np.float32), "a1": np.array([1]), "a3": np.array([3]),
             "a23": np.array([2, 3])}
    return from_model(make_model(nodes, [("x", [1, 3, 6, 6])], list(outs.items()), inits, opset=18))


@pytest.mark.parametrize("precision", [Q16, NARROW], ids=["q16", "narrow"])
def test_image_ops_one_board(tmp_path, precision):
    graph = _image_model()
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=precision)
    x = np.random.default_rng(2).normal(size=(150, 3, 6, 6)) * 1.5
    _, env = _check(tmp_path, graph, p, x)
    assert len(np.unique(env["ct"], axis=0)) > 140


class _Decoder(nn.Module):
    """torch's own export: ConvTranspose2d, nn.Upsample (nearest and bilinear), LayerNorm,
    a bias-free Linear (MatMul), Hardswish, a Slice, GELU (written out as Div by a constant, Erf,
    Add and Mul of a constant, Mul), a broadcast Sub and Neg / Abs."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
        self.ln = nn.LayerNorm(8)
        self.fc = nn.Linear(8, 8, bias=False)

    def forward(self, x):
        a = torch.relu(self.c(x))
        u = self.up(a) + nn.functional.interpolate(a[:, :2], scale_factor=2, mode="nearest")
        v = nn.functional.interpolate(u, scale_factor=0.5, mode="bilinear", align_corners=False)
        s = v.flatten(2)                       # [1, 2, 16]
        s = nn.functional.hardswish(s)
        t = self.fc(self.ln(s.reshape(1, 4, 8)))
        return nn.functional.gelu(t), torch.abs(-t[:, :1] - t * 0.75)


@pytest.mark.parametrize("precision", [Q16, NARROW], ids=["q16", "narrow"])
def test_torch_decoder_two_boards(tmp_path, precision):
    torch.manual_seed(3)
    graph = from_torch(_Decoder().eval(), torch.zeros(1, 1, 4, 4))
    ops = {n.op_type for n in graph.nodes}
    assert {"ConvTranspose", "Resize", "LayerNormalization", "MatMul", "Slice", "HardSwish", "Div", "Erf", "Mul",
            "Neg", "Abs", "Sub"} <= ops, ops
    cut = next(n.name for n in graph.nodes if n.op_type == "ConvTranspose")
    p = plan(graph, _resolve_cluster("zynq7035:2"), precision=precision, method="manual", cuts=[cut])
    x = np.random.default_rng(4).normal(size=(200, 1, 4, 4)) * 2
    _check(tmp_path, graph, p, x)


def test_unsupported_variants_are_refused_by_node(tmp_path):
    n = helper.make_node
    model = make_model([n("Resize", ["x", "", "sc"], ["y"], name="up3", mode="linear")], [("x", [1, 2, 4, 4])],
                       [("y", [1, 2, 12, 12])], {"sc": np.array([1, 1, 3, 3], np.float32)}, opset=18)
    graph = from_model(model)
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    with pytest.raises(CodegenError, match=r"node 'up3' \(Resize\): linear weights that are not dyadic"):
        compile_plan(p, graph, tmp_path)
    model = make_model([n("Pow", ["x", "e"], ["y"], name="cube")], [("x", [1, 8])], [("y", [1, 8])],
                       {"e": np.array(3.0, np.float32)})
    graph = from_model(model)
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=Q16)
    with pytest.raises(CodegenError, match=r"node 'cube' \(Pow\): exponent 3"):
        compile_plan(p, graph, tmp_path)


@pytest.mark.parametrize("boards,precision", [(1, Q16), (2, NARROW)], ids=["q16-1-board", "narrow-2-boards"])
def test_torch_transformer_encoder_layer(tmp_path, boards, precision):
    """torch's TransformerEncoderLayer (d_model 8, 2 heads, batch_first) as the dynamo exporter
    writes it: Dense and Gemm on [seq, n] rows, 5-D Transpose / Squeeze / Gather of the packed
    q, k, v, Mul by the scale, MatMul of two run-time values, Softmax over the last axis of a
    4-D value, LayerNorm, residual Adds. Its Reshapes fix the batch to 1, so the emulator runs
    item by item (csim.compare does)."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True).eval()
    graph = from_torch(layer, torch.zeros(1, 4, 8))
    assert {"Softmax", "MatMul", "Gemm", "Dense", "Gather", "LayerNormalization"} <= {n.op_type for n in graph.nodes}
    cut = {"method": "manual", "cuts": ["node_add"]} if boards == 2 else {}   # attention | LayerNorm + FFN
    p = plan(graph, _resolve_cluster(f"zynq7035:{boards}"), precision=precision, **cut)
    assert len(p.stages) == boards
    compile_plan(p, graph, tmp_path)
    x = np.random.default_rng(8).normal(size=(150, 4, 8))
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(tmp_path, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    out = graph.output_names[0]
    want = np.stack([np.asarray(graph.run(xi[None], precision=p.precision)[out]).reshape(-1) for xi in x[:20]])
    np.testing.assert_array_equal(env[out][:20], want)
    assert len(np.unique(env[out], axis=0)) == 150


class _Generator(nn.Module):
    """A GAN-style generator: Linear -> view as [1, 4, 2, 2] (an ONNX-order value becomes a
    channels-last image on the board) -> ConvTranspose2d -> Tanh -> Conv2d -> Sigmoid, the
    convolutions without a bias (DCGAN's), and a biased ConvTranspose2d beside."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 16)
        self.up = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1, bias=False)
        self.up2 = nn.ConvTranspose2d(4, 2, 4, stride=2, padding=1)
        self.c = nn.Conv2d(2, 1, 3, padding=1, bias=False)

    def forward(self, z):
        a = self.fc(z).view(1, 4, 2, 2)
        return torch.sigmoid(self.c(torch.tanh(self.up(a)) + self.up2(a)))


def test_torch_generator_linear_to_image(tmp_path):
    torch.manual_seed(5)
    graph = from_torch(_Generator().eval(), torch.zeros(1, 8))
    no_bias = {n.op_type for n in graph.nodes if n.op_type in ("Conv", "ConvTranspose") and len([t for t in n.inputs if t]) == 2}
    assert no_bias == {"Conv", "ConvTranspose"}, no_bias
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=NARROW)
    _, env = _check(tmp_path, graph, p, np.random.default_rng(9).normal(size=(200, 8)) * 2)
    assert len(np.unique(env[graph.output_names[0]], axis=0)) > 150


class _Shuffle(nn.Module):
    """A pixel shuffle written out (Reshape to 6-D, Transpose, Reshape: conveyor has no DepthToSpace)
    and a 4-D -> 4-D view of a channels-last value, each feeding a Conv."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        a = self.a(x).view(1, 2, 2, 2, 4, 4).permute(0, 1, 4, 2, 5, 3).reshape(1, 2, 8, 8)   # pixel_shuffle(., 2)
        s = torch.relu(self.b(a))   # [1, 4, 8, 8]
        return self.c(s.reshape(1, 2, 16, 8))


def test_pixel_shuffle_and_4d_reshapes(tmp_path):
    torch.manual_seed(6)
    graph = from_torch(_Shuffle().eval(), torch.zeros(1, 1, 4, 4))
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=NARROW)
    _, env = _check(tmp_path, graph, p, np.random.default_rng(10).normal(size=(100, 1, 4, 4)) * 2)
    assert len(np.unique(env[graph.output_names[0]], axis=0)) > 90


@pytest.mark.parametrize("precision", [Q16, NARROW], ids=["q16", "narrow"])
def test_where_and_bipolar_quant(tmp_path, precision):
    """Where with constant conditions (a constant branch, broadcast conditions) and QONNX's
    BipolarQuant (+-scale by the sign of x / scale) between two MatMuls by weights."""
    from onnx import helper as h

    rng = np.random.default_rng(0)
    n = h.make_node
    nodes = [n("MatMul", ["x", "W"], ["h"], name="mm"),
             n("BipolarQuant", ["h", "bs"], ["bq"], name="bq", domain="qonnx.custom_op.general"),
             n("MatMul", ["bq", "W2"], ["y"], name="mm2"),
             n("Where", ["c", "h", "half"], ["wh"], name="where_c"),
             n("Relu", ["h"], ["r"], name="relu"),
             n("Where", ["c8", "r", "h"], ["w2"], name="where_2")]
    model = make_model(nodes, [("x", [1, 8])], [("y", [1, 4]), ("wh", [1, 8]), ("w2", [1, 8])],
                       {"W": rng.normal(size=(8, 8)).astype(np.float32), "W2": rng.normal(size=(8, 4)).astype(np.float32),
                        "bs": np.array(0.5, np.float32), "c": rng.uniform(size=(1, 8)) > 0.5,
                        "half": np.array(0.5, np.float32), "c8": rng.uniform(size=(8,)) > 0.5})
    model.opset_import.append(h.make_opsetid("qonnx.custom_op.general", 1))
    graph = from_model(model)
    assert [x.op_type for x in graph.nodes].count("Where") == 2 and "BipolarQuant" in {x.op_type for x in graph.nodes}
    p = plan(graph, _resolve_cluster("zynq7035:1"), precision=precision)
    _, env = _check(tmp_path, graph, p, rng.normal(size=(200, 8)) * 1.5)
    assert len(np.unique(env["y"], axis=0)) > 50
