"""`precision="hls4ml:<format>"`: hls4ml 1.3.0's granularity="model" types for every role."""

from __future__ import annotations

import numpy as np
import torch

import conveyor
from conveyor.numerics.config import PrecisionConfig
from conveyor.numerics.fixed import FixedType

P = FixedType.parse("ap_fixed<16,6>")
SOFTMAX_T = "ap_fixed<18,8,AP_RND,AP_SAT>"


def test_every_role_and_accumulator_is_the_model_precision():
    cfg = PrecisionConfig.coerce("hls4ml:ap_fixed<16,6>")
    assert cfg.input_format() == P
    for op in ("Dense", "Conv", "MaxPool", "GlobalAveragePool", "LSTM", "Softmax", "Relu", "BatchNormalization"):
        p = cfg.for_node("n", op)
        # Layer._set_accum_t gives Softmax the model precision too, not its 18,8 attribute default
        assert (p.weight, p.bias, p.accum, p.result, p.state, p.cell) == (P,) * 6, op
    assert cfg.tables["softmax_exp"]["format"] == cfg.tables["softmax_inv"]["input"] == SOFTMAX_T
    assert cfg.tables["sigmoid"] == {"size": 1024, "min": -8.0, "max": 8.0, "format": "ap_fixed<18,8>"}
    # conveyor's own default: the same string without the prefix keeps exact accumulators
    assert PrecisionConfig.coerce("ap_fixed<16,6>").for_node("n", "Dense").accum is None


def test_overrides_sit_on_top_and_hls4ml_short_forms_parse():
    cfg = PrecisionConfig.coerce({"default": "hls4ml:fixed<10,4,RND,SAT>", "accum": "auto",
                                  "tables": {"softmax": {"implementation": "latency"}}})
    assert cfg.for_node("n", "Dense").accum is None
    assert cfg.for_node("n", "Dense").result == FixedType.parse("ap_fixed<10,4,AP_RND,AP_SAT>")
    assert cfg.tables["softmax"] == {"implementation": "latency"} and "softmax_exp" in cfg.tables


def test_hls4ml_defaults_round_products_where_conveyor_default_does_not():
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(20, 48), torch.nn.ReLU(), torch.nn.Linear(48, 7), torch.nn.Softmax(-1))
    g = conveyor.from_torch(mlp, torch.zeros(1, 20))
    x = np.random.default_rng(0).standard_normal((200, 20))
    out = g.output_names[0]
    h = g.run(x, precision="hls4ml:ap_fixed<16,6>")[out]
    explicit = g.run(x, precision={"default": "ap_fixed<16,6>", "accum": "ap_fixed<16,6>"})[out]
    exact = g.run(x, precision="ap_fixed<16,6>")[out]
    np.testing.assert_array_equal(h, explicit)  # tables written out = conveyor's (hls4ml's) defaults
    assert (h != exact).any()
