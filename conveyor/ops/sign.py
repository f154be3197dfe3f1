"""Neg and Abs: exact on any grid (integers too, for shape arithmetic such as Keras' crops).

Fixed point: the exact value, cast to the node's `result` format (``-min`` of a signed format is
one LSB above its max: the cast overflows it by the format's mode, as ap_fixed's unary minus
assigned back to the same type does).
"""

from __future__ import annotations

import numpy as np

from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register


def _infer(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


_FNS = {"Neg": np.negative, "Abs": np.abs}

for _op, _fn in _FNS.items():
    def _run(node, x, fn=_fn):
        return (fn(x[0]),)

    register(OpDef(_op, infer=_infer, run=_run, run_fixed=fixed.exact_then_cast(_run)))
