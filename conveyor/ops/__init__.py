"""Ops: one module per op family; importing this package registers them all."""

from conveyor.ops.registry import OpDef, ValueInfo, get, is_supported, register, supported_ops

# Each import registers that family's op types.
from conveyor.ops import (  # noqa: F401,E402
    conv, conv_transpose, elementwise, layernorm, linear, math_unary, norm, pool, reduce, resize, rnn, shape, shape_arith, softmax,
)
from conveyor.ops import quant  # noqa: F401,E402  (QONNX BipolarQuant)

__all__ = ["OpDef", "ValueInfo", "get", "is_supported", "register", "supported_ops"]
