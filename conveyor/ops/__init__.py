"""Ops: one module per op family; importing this package registers them all."""

from conveyor.ops.registry import OpDef, ValueInfo, get, is_supported, register, supported_ops

# Each import registers that family's op types.
from conveyor.ops import (  # noqa: F401,E402
    conv, elementwise, layernorm, linear, math_unary, norm, pool, reduce, rnn, shape, shape_arith, softmax,
)
from conveyor.ops import quant  # noqa: F401,E402  (QONNX BipolarQuant)
from conveyor.ops import conv_transpose, resize, sign  # noqa: F401,E402  (ConvTranspose, Resize/Upsample, Neg/Abs)

__all__ = ["OpDef", "ValueInfo", "get", "is_supported", "register", "supported_ops"]
