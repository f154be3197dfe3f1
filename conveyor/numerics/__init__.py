"""Number formats FPGAs compute in, and precision for a whole graph.

- `FixedType`: Xilinx ap_fixed / ap_ufixed / ap_int / ap_uint, bit-exact with the headers;
- `MXType`, `MSFPType`: block floating point (OCP Microscaling v1.0; Brainwave's MSFP);
- `PrecisionConfig`: formats per op type, node and role (weight, bias, accum, result).
"""

from conveyor.numerics.config import NodePrecision, PrecisionConfig, parse_format
from conveyor.numerics.fixed import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    add_type,
    div_type,
    mul_type,
    sub_type,
)
from conveyor.numerics.mx import MSFPType, MXType, parse_block_format

__all__ = [
    "FixedType", "ROUNDING_MODES", "OVERFLOW_MODES", "add_type", "sub_type", "mul_type", "div_type",
    "MXType", "MSFPType", "parse_block_format",
    "PrecisionConfig", "NodePrecision", "parse_format",
]
