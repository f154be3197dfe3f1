"""What hls4ml 1.3.0 computes in by default, as a conveyor precision config.

`precision="hls4ml:ap_fixed<16,6>"` stands for the types hls4ml gives a model when its
config comes from `config_from_*_model(granularity="model", default_precision=P)`:
`HLSConfig: {Model: {Precision: {default: P}}}` and nothing else. Read from hls4ml 1.3.0:

- every type attribute without a default of its own resolves through
  `HLSConfig.get_precision(layer, var)` to `Model.Precision.default` (model/graph.py): the
  input layer's result, weights, biases, results, BatchNormalization's scale and bias;
- `Layer._set_accum_t` (model/layers.py) sets `accum_t` the same way, before any attribute
  default applies, on every layer that has one (backends/fpga/fpga_backend.py `accum_layers`:
  Dense, Conv, Pooling, GlobalPooling, SimpleRNN/LSTM/GRU, MatMul, ... and Softmax, whose
  attribute default ap_fixed<18,8,AP_RND,AP_SAT> therefore never applies): accumulators are P;
- attributes with a default keep it (backends/fpga/fpga_backend.py, vivado_backend.py):
  activation and recurrent tables `table_t` ap_fixed<18,8>, `table_size` 1024; Softmax
  `implementation` stable, `exp_table_t`, `inv_table_t`, `inv_inp_t` ap_fixed<18,8,AP_RND,AP_SAT>,
  table sizes 1024.

`precision="hls4ml-name:ap_fixed<16,6>"` stands for `config_from_*_model(granularity="name",
default_precision=P)`: every type attribute without a default of its own is 'auto' and hls4ml's
InferPrecisionTypes pass (model/optimizer/passes/infer_precision.py) resolves it during
conversion. That depends on the graph, so the config only carries `infer: hls4ml_name` and
`name_types(graph, config)` derives the per-node types once the graph is known
(conveyor.graph.names.resolve_config):

- Dense / Conv (`_infer_common_precision`): weights and biases P; accumulator and result the
  same type, wide enough for every sum, from the input's type, the weight and bias types and
  n_ops (Dense: n_in; Conv: n_chan * filt_height * filt_width): width Ww + Wx + ceil(log2 n),
  integer bits Iw + Ix + ceil(log2 n), then one more integer bit and the bias fraction if wider
  (AP_TRN, AP_WRAP: it cannot overflow or round);
- BatchNormalization (`_infer_bn_precision`): result from input, scale and bias the same way;
- MaxPool: accumulator and result the input's type; AveragePool: accumulator
  <Wx + 2e, Ix + e> with e = ceil(log2 pool size), result the input's type;
- Reshape / Flatten / Transpose (and conveyor's other data-movement ops): the input's type;
- everything else (activations, Softmax's result, LSTM/GRU's accumulator and result, the graph
  input): P, through `_infer_default_type`. Softmax's accumulator keeps its attribute default
  ap_fixed<18,8,AP_RND,AP_SAT> (the name config writes it out); tables as for `hls4ml:`.

tests/data/hls4ml_name_types.json holds what hls4ml 1.3.0 resolves for two nets (written by
tests/data/hls4ml_name_types.py in hls4ml's venv); tests/test_numerics_hls4ml_name.py compares.

conveyor's own default for a bare format string differs in one place: accumulators are
exact (`accum: auto`). docs/numerics.md, "Precision config", states all three.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

PREFIX = "hls4ml:"
NAME_PREFIX = "hls4ml-name:"
#: the `infer:` value a `hls4ml-name:` string sets (numerics.config)
INFER_NAME = "hls4ml_name"
_TABLE_T = "ap_fixed<18,8>"                 # fpga_backend.py: TypeAttribute('table', default=FixedPrecisionType(18, 8))
_SOFTMAX_T = "ap_fixed<18,8,AP_RND,AP_SAT>"  # fpga_backend.py: softmax exp_table / inv_table / inv_inp defaults


def model_granularity(default: str) -> dict[str, Any]:
    """The conveyor config for hls4ml's granularity="model" config with `default` precision."""
    return {
        "default": default,
        "accum": default,
        "input": default,
        "tables": {
            "sigmoid": {"size": 1024, "min": -8, "max": 8, "format": _TABLE_T},  # nnet_activation.h: -8..8
            "tanh": {"size": 1024, "min": -4, "max": 4, "format": _TABLE_T},     # nnet_activation.h: -4..4
            "softmax": {"implementation": "stable"},
            "softmax_exp": {"size": 1024, "format": _SOFTMAX_T},
            "softmax_inv": {"size": 1024, "format": _SOFTMAX_T, "input": _SOFTMAX_T},
        },
    }


def expand(text: str) -> dict[str, Any] | None:
    """The config a `hls4ml:<format>` string stands for; None for any other string."""
    t = text.strip()
    if t.lower().startswith(NAME_PREFIX):
        base = model_granularity(t[len(NAME_PREFIX):].strip())
        del base["accum"]  # per node, from name_types (a top-level accum the user sets still wins)
        return {**base, "infer": INFER_NAME}
    if not t.lower().startswith(PREFIX):
        return None
    return model_granularity(t[len(PREFIX):].strip())


# ---- granularity="name": hls4ml's InferPrecisionTypes, on a conveyor graph -----------------

#: ops whose output hls4ml gives the input's type (_infer_output_matching_precision; MaxPool:
#: _infer_pooling_precision); conveyor's data-movement ops keep their input's format anyway
_MATCHING = {"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Gather",
             "Slice", "Pad", "MaxPool", "GlobalMaxPool"}
_DOT_OPS = {"Gemm", "MatMul", "Conv"}
_AVG_POOLS = {"AveragePool", "GlobalAveragePool"}


def _fixed_text(width: int, integer: int, signed: bool) -> str:
    """hls4ml's FixedPrecisionType(width, integer, signed) (AP_TRN, AP_WRAP) as a format string."""
    return f"ap_{'' if signed else 'u'}fixed<{width},{integer}>"


def _common(x, w, b, n_ops: int) -> str:
    """infer_precision.py `_infer_common_precision` (bias present: infer_no_bias is False)."""
    lg = math.ceil(math.log2(n_ops))
    bitwidth = w.width + x.width + lg
    integers = w.integer + x.integer + lg
    signed = w.signed or x.signed
    frac = bitwidth - integers
    integers = max(integers + (b.signed and not signed), b.integer + (signed and not b.signed)) + 1
    bitwidth = integers + max(frac, b.width - b.integer)
    return _fixed_text(bitwidth, integers, signed or b.signed)


def _bn(x, s, b) -> str:
    """infer_precision.py `_infer_bn_precision`."""
    signed = s.signed or x.signed
    width, integer = x.width + s.width, x.integer + s.integer
    out_signed = signed or b.signed
    out_int = max(integer + (b.signed and not signed), b.integer + (signed and not b.signed)) + 1
    return _fixed_text(out_int + max(width - integer, b.width - b.integer), out_int, out_signed)


def _dot_n_ops(graph, node) -> int | None:
    """Dense: n_in; Conv: n_chan * filt_height * filt_width (None: no constant weight)."""
    if len(node.inputs) < 2 or not graph.is_weight(node.inputs[1]):
        return None
    shape = graph.weights[node.inputs[1]].shape
    if node.op_type == "Conv":
        return int(math.prod(shape[1:]))
    if node.op_type == "Gemm" and node.attr("transB", 0):
        return int(shape[1])
    return int(shape[0])


def name_types(graph, config) -> dict[str, dict[str, str]]:
    """{node name: {role: format}} that hls4ml's granularity="name" config resolves to on this
    graph, for every role `config` does not set itself (its nodes:, op_types: or top-level roles),
    with `config.default` as hls4ml's model precision P."""
    from conveyor.numerics.config import parse_format

    P = config.default
    fmt_of: dict[str, str] = {t: config.input or P for t in graph.input_names}
    out: dict[str, dict[str, str]] = {}
    for node in graph.nodes:
        x_text = next((fmt_of[t] for t in node.inputs if t in fmt_of), P)
        role = lambda r, _n=node: config.role_text(_n.name, _n.op_type, r)  # noqa: E731
        op = node.op_type
        types = {"weight": P, "bias": P, "accum": P, "result": P}
        if op in _DOT_OPS and (n := _dot_n_ops(graph, node)):
            x, w, b = parse_format(x_text), parse_format(role("weight")), parse_format(role("bias"))
            try:
                wide = _common(x, w, b, n)
            except AttributeError:  # a block format somewhere: hls4ml falls back to the default
                wide = P
            types["accum"] = types["result"] = wide
        elif op == "BatchNormalization":
            try:
                types["result"] = _bn(parse_format(x_text), parse_format(role("weight")), parse_format(role("bias")))
            except AttributeError:
                pass
        elif op in _MATCHING:
            types["accum"] = types["result"] = x_text
        elif op in _AVG_POOLS:
            x = parse_format(x_text)
            if node.attr("kernel_shape", None) is not None:
                size = int(math.prod(node.attr("kernel_shape")))
            else:
                size = int(math.prod(graph.tensors[node.inputs[0]].shape[2:]))
            e = math.ceil(math.log2(size)) if size > 1 else 0
            if hasattr(x, "width"):
                types["accum"] = _fixed_text(x.width + 2 * e, x.integer + e, x.signed)
            types["result"] = x_text
        elif op == "Softmax":
            types["accum"] = _SOFTMAX_T  # Softmax's accum_t attribute default, written out by the name config
        own = {r: t for r, t in types.items() if not _set_by(config, node, r)}
        if own:
            out[node.name] = own
        res = own.get("result") or role("result")
        for t in node.outputs[:1]:
            fmt_of[t] = res
    return out


def _set_by(config, node, role: str) -> bool:
    return (role in config.nodes.get(node.name, {}) or role in config.op_types.get(node.op_type, {})
            or role in config.roles)


def with_name_types(graph, config):
    """`config` (infer: hls4ml_name) with name_types filled into its nodes:, infer cleared."""
    from dataclasses import replace

    nodes = {k: dict(v) for k, v in config.nodes.items()}
    for name, roles in name_types(graph, config).items():
        nodes.setdefault(name, {}).update(roles)
    return replace(config, nodes=nodes, infer=None)
