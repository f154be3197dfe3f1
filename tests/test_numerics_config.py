"""Precision config: resolution order, round trip, and errors that name the field."""

from __future__ import annotations

import pytest

from conveyor import PrecisionError
from conveyor.numerics.config import PrecisionConfig


def test_resolution_order_nodes_over_op_types_over_roles_over_default():
    cfg = PrecisionConfig.from_dict({
        "default": "ap_fixed<16,6>",
        "weight": "ap_fixed<8,3>",
        "op_types": {"Conv": {"result": "ap_fixed<12,4>"}},
        "nodes": {"conv1": {"result": "ap_fixed<10,4,AP_RND,AP_SAT>", "accum": "ap_fixed<32,12>"}},
    })
    p1 = cfg.for_node("conv1", "Conv")
    p2 = cfg.for_node("conv2", "Conv")
    p3 = cfg.for_node("fc", "Gemm")
    assert str(p1.result) == "ap_fixed<10,4,AP_RND,AP_SAT>" and str(p1.accum) == "ap_fixed<32,12>"
    assert str(p2.result) == "ap_fixed<12,4>" and p2.accum is None  # auto
    assert str(p3.result) == "ap_fixed<16,6>" and str(p3.weight) == "ap_fixed<8,3>" and str(p3.bias) == "ap_fixed<16,6>"
    assert str(cfg.input_format()) == "ap_fixed<16,6>"


def test_round_trip_and_coerce():
    d = {"default": "fixed<16,6>", "accum": "auto", "input": "ap_fixed<8,1>",
         "nodes": {"fc1": {"weight": "mx:fp8_e4m3"}}, "tables": {"sigmoid": {"size": 512, "min": -4.0, "max": 4.0}}}
    cfg = PrecisionConfig.from_dict(d)
    assert PrecisionConfig.from_dict(cfg.to_dict()) == cfg
    assert PrecisionConfig.coerce("ap_fixed<8,3>").default == "ap_fixed<8,3>"
    assert PrecisionConfig.coerce(cfg) is cfg
    assert cfg.table("sigmoid", {"size": 1024, "min": -8.0, "max": 8.0}) == {"size": 512, "min": -4.0, "max": 4.0}


def test_yaml_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text('default: "ap_fixed<16,6>"\nop_types:\n  Relu: "ap_ufixed<8,4>"\n')
    cfg = PrecisionConfig.load(path)
    assert str(cfg.for_node("r", "Relu").result) == "ap_ufixed<8,4>"
    assert cfg.for_node("r", "Relu").accum is None  # the string shorthand sets every role but accum


@pytest.mark.parametrize("data, needle", [
    ({"weight": "ap_fixed<8,3>"}, "'default' is required"),
    ({"default": "ap_fixed<16,6>", "bogus": 1}, r"unknown keys \['bogus'\]"),
    ({"default": "auto"}, "'auto' is accepted only for the accum role"),
    ({"default": "ap_fixed<16,6>", "nodes": {"c1": {"wieght": "ap_fixed<8,3>"}}}, r"nodes.c1: unknown roles \['wieght'\]"),
    ({"default": "ap_fixed<16,6>", "nodes": {"c1": {"weight": "ap_fixd<8,3>"}}}, "nodes.c1.weight"),
    ({"default": 16}, "expected a format string"),
    ({"default": "ap_fixed<16,6>", "tables": {"sigmoid": {"size": 1}}}, "tables.sigmoid.size"),
])
def test_errors_name_the_field(data, needle):
    with pytest.raises(PrecisionError, match=needle):
        PrecisionConfig.from_dict(data)


def test_check_against_graph_catches_typos():
    cfg = PrecisionConfig.from_dict({"default": "ap_fixed<16,6>", "nodes": {"conv9": {"result": "ap_fixed<8,3>"}}})
    with pytest.raises(PrecisionError, match=r"\['conv9'\]"):
        cfg.check_against({"conv1"}, {"Conv"}, "g")
