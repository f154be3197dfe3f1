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

conveyor's own default for a bare format string differs in one place: accumulators are
exact (`accum: auto`). docs/numerics.md, "Precision config", states both.
"""

from __future__ import annotations

from typing import Any

PREFIX = "hls4ml:"
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
    if not t.lower().startswith(PREFIX):
        return None
    return model_granularity(t[len(PREFIX):].strip())
