"""QONNX's BipolarQuant, the one quantizer that is not a cast (frontends/qdq.py reads the others
into formats): y = scale where x / scale >= 0, else -scale
(qonnx.custom_op.general.bipolar_quant.binary_quant). Its fixed kernel selects among exact
values and casts them to the node's result format, which the frontend sets from the scale."""

from __future__ import annotations

import numpy as np

from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register


def _infer(node, ins):
    return [(ins[0].shape, ins[0].dtype)]


def _run(node, args):
    x, scale = args[0], np.asarray(args[1], dtype=args[0].dtype)
    return (np.where(x / scale >= 0, scale, -scale).astype(x.dtype),)


register(OpDef("BipolarQuant", infer=_infer, run=_run, run_fixed=fixed.exact_then_cast(_run)))
