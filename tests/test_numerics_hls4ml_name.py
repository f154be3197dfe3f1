"""`precision="hls4ml-name:<format>"`: the types hls4ml 1.3.0's granularity="name" config
resolves ('auto' accumulators and results, InferPrecisionTypes), derived by conveyor per node.

tests/data/hls4ml_name_types.json is what hls4ml 1.3.0 itself resolved for the MLP and the
CNN of benchmarks/hls4ml_models.py (written by tests/data/hls4ml_name_types.py in hls4ml's
own venv: conversion only, so CI needs no hls4ml)."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch

import conveyor
from conveyor.errors import PrecisionError
from conveyor.graph.names import resolve_config
from conveyor.numerics.config import PrecisionConfig
from conveyor.numerics.fixed import FixedType

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "benchmarks"))
import hls4ml_models  # noqa: E402

with open(os.path.join(HERE, "data", "hls4ml_name_types.json")) as f:
    HLS4ML = json.load(f)
ROLE = {"weight_t": "weight", "bias_t": "bias", "accum_t": "accum", "result_t": "result"}
TABLE = {"exp_table_t": ("softmax_exp", "format"), "inv_table_t": ("softmax_inv", "format"),
         "inv_inp_t": ("softmax_inv", "input")}


def _graph(name):
    torch.manual_seed(0)
    model = hls4ml_models.build(name).eval()
    return conveyor.from_torch(model, torch.zeros(1, *hls4ml_models.SHAPES[name][0]))


@pytest.mark.parametrize("key", sorted(HLS4ML))
def test_every_type_hls4ml_resolves_is_the_one_conveyor_derives(key):
    name, precision = key.split(" ", 1)
    g = _graph(name)
    cfg = resolve_config(g, "hls4ml-name:" + precision)
    node_of = {layer: node for node, layer in g.layer_names.items()}
    compared = 0
    for layer, entry in HLS4ML[key]["layers"].items():
        types = entry["types"]
        if entry["class"] == "Input":
            assert cfg.input_format() == FixedType.parse(types["result_t"]), key
            compared += 1
            continue
        node = g.node(node_of[layer])
        prec = cfg.for_node(node.name, node.op_type)
        for t, text in types.items():
            want = FixedType.parse(text)
            if t in ROLE and not (entry["class"] in ("Activation", "Reshape") and t != "result_t"):
                assert getattr(prec, ROLE[t]) == want, (key, layer, t, str(getattr(prec, ROLE[t])), text)
                compared += 1
            elif t in TABLE:
                table, field = TABLE[t]
                assert FixedType.parse(cfg.tables[table][field]) == want, (key, layer, t)
                compared += 1
    assert compared >= 12, compared


def test_user_settings_win_and_bad_infer_is_named():
    g = _graph("mlp")
    cfg = resolve_config(g, {"default": "hls4ml-name:ap_fixed<16,6>", "nodes": {"fc2": {"accum": "ap_fixed<20,10>"}},
                             "op_types": {"Relu": {"result": "ap_ufixed<8,3>"}}})
    fc2 = g.node({v: k for k, v in g.layer_names.items()}["fc2"])
    fc3 = g.node({v: k for k, v in g.layer_names.items()}["fc3"])
    p2, p3 = cfg.for_node(fc2.name, fc2.op_type), cfg.for_node(fc3.name, fc3.op_type)
    assert p2.accum == FixedType.parse("ap_fixed<20,10>")
    # input ufixed<8,3> (the Relu), weights fixed<16,6>, 64 inputs: 16+8+6 bits, 6+3+6 integer,
    # then one more integer bit for the bias: <31,16>
    assert p2.result == FixedType.parse("ap_fixed<31,16>")
    assert p3.accum == p3.result == FixedType.parse("ap_fixed<30,15>")  # 32 inputs: +5
    with pytest.raises(PrecisionError, match="infer.*accepted"):
        PrecisionConfig.coerce({"default": "ap_fixed<16,6>", "infer": "hls4ml_model"})


def test_name_types_run_and_keep_every_sum_exact():
    # hls4ml's inferred Dense/Conv types cannot overflow or round: the accumulator results equal
    # conveyor's exact ones; only where a wide result feeds the next layer unrounded do they differ
    g = _graph("cnn")
    x = np.random.default_rng(1).standard_normal((20, 1, 16, 16))
    out = g.output_names[0]
    y = g.run(x, precision="hls4ml-name:ap_fixed<16,6>")[out]
    ref = g.run(x, precision={"default": "ap_fixed<16,6>", "nodes": {"fc": {"result": "ap_fixed<42,22>"}}})[out]
    np.testing.assert_array_equal(y, ref)
