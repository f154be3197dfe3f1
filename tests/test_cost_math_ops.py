"""FPGA cost of the newer element-wise engines: DSPs for their products, BRAM18K (or LUTRAM)
for their lookup tables, sized from the precision config's `tables`."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import conveyor
from conveyor.cost import dataflow_options, layer_work
from conveyor.hardware import catalog


def _graph():
    c = 16
    nodes = [
        helper.make_node("LayerNormalization", ["x", "s", "b"], ["ln"], name="ln", axis=-1),
        helper.make_node("HardSwish", ["ln"], ["hs"], name="hs"),
        helper.make_node("Gelu", ["hs"], ["ge"], name="ge"),
        helper.make_node("Pow", ["ge", "two"], ["sq"], name="sq"),
        helper.make_node("Pow", ["sq", "half"], ["rt"], name="rt"),
        helper.make_node("Exp", ["rt"], ["y"], name="ex"),
    ]
    inits = {"s": np.ones(c, np.float32), "b": np.zeros(c, np.float32), "two": np.array(2.0, np.float32),
             "half": np.array(0.5, np.float32)}
    g = helper.make_graph(nodes, "mathops", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, c])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, c])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])
    m.ir_version = 9
    return conveyor.from_model(m)


def test_products_and_tables_are_priced():
    g = _graph()
    board = catalog().board("zynq7035")
    prec = {"default": "ap_fixed<16,6>", "tables": {"exp": {"size": 32}}}
    works = {w.node: w for w in layer_work(g, prec)}
    want = {  # node: (products per element, table entries, table bits per entry)
        "ln": (3, 4096, 8), "hs": (2, 0, 0), "ge": (1, 1024, 18), "sq": (1, 0, 0), "rt": (0, 1024, 18),
        "ex": (0, 32, 18)}
    for name, (prods, words, width) in want.items():
        w = works[name]
        assert (w.lane_products, w.table_words, w.table_width) == (prods, words, width), (name, w)
    full = {name: dataflow_options(works[name], board)[-1] for name in want}
    p = full["hs"].parallelism
    assert p == 8  # one lane per row of [1, 8, 16]
    # 16 x 16-bit products: one DSP each (DSP48E1); tables of 1024 x 18 bits: one BRAM18K per two lanes
    assert full["hs"].resources.dsp == 2 * p and full["hs"].resources.bram18k == 0
    assert full["ge"].resources.dsp == p and full["ge"].resources.bram18k == p // 2
    assert full["rt"].resources.dsp == 0 and full["rt"].resources.bram18k == p // 2
    # LayerNorm: 4096 x 8 bits = 2 BRAM18K, read once per row (one copy)
    assert full["ln"].resources.dsp == 3 * p and full["ln"].resources.bram18k == 2
    # a 32-entry table is LUTRAM: 32 x 18 bits in 64-bit LUTs, per two lanes
    assert full["ex"].resources.bram18k == 0
    assert full["ex"].resources.lut - full["rt"].resources.lut == (p // 2) * 9


def test_requant_multiply_is_priced_in_dsps(tmp_path):
    """A Requant's acc * M0 is a W_in x 32-bit integer product (int32 accumulator by a Q31
    multiplier): DSP slices like any multiply of that width (4 DSP48E1 of 25 x 18 per product),
    one per input (the requantised Add sums two)."""
    from test_codegen_requant import quantize_static_model

    from conveyor.cost.fpga import multiplier_cost

    graph = conveyor.load(quantize_static_model(tmp_path, per_channel=True), requant="integer")
    board = catalog().board("zynq7035")
    works = [w for w in layer_work(graph, graph.model_precision.config) if w.op_type == "Requant"]
    integer = [w for w in works if w.product_bits != (0, 0)]
    assert len(integer) == len(works) - 1  # all but the input quantizer (float in, the host's)
    # W_in x Q31: int32 sums (ap_fixed<32,32>: Conv, Gemm, SumPool, ReduceSum) and, into the
    # residual Add's Requant, two requantised int8 tensors held as q - z (9 bits)
    assert {(w.product_bits, w.lane_products) for w in integer} == {((32, 32), 1), ((9, 32), 2)}
    assert multiplier_cost(board, 32, 32)[0] == 4  # ceil(32/25) * ceil(32/18) DSP48E1 tiles
    assert multiplier_cost(board, 9, 32)[0] == 2   # ceil(32/25) * ceil(9/18)
    for w in integer:
        opt = dataflow_options(w, board)[-1]
        assert opt.resources.dsp == opt.parallelism * w.lane_products * multiplier_cost(board, *w.product_bits)[0] > 0
