"""Matrix products: Gemm, MatMul, and conveyor's fused Dense (MatMul + Add).

`Dense` is not an ONNX op: the fuse pass turns MatMul(x, W) + B into Dense(x, W, B),
one engine with its bias, the way an FPGA layer is built (hls4ml's Dense).
"""

from __future__ import annotations

import numpy as np

from conveyor.errors import ModelError
from conveyor.errors import PrecisionError
from conveyor.ops import fixed
from conveyor.ops.registry import OpDef, register


def _gemm_dims(node, a_shape, b_shape):
    if len(a_shape) != 2 or len(b_shape) != 2:
        raise ModelError(f"{node}: Gemm needs 2-D A and B, got {a_shape} and {b_shape}")
    m, k = a_shape[::-1] if node.attr("transA", 0) else a_shape
    k2, n = b_shape[::-1] if node.attr("transB", 0) else b_shape
    if k != k2:
        raise ModelError(f"{node}: inner dimensions differ ({k} vs {k2}) for A{a_shape} B{b_shape}")
    return m, k, n


def _gemm_infer(node, ins):
    m, _, n = _gemm_dims(node, ins[0].shape, ins[1].shape)
    if len(ins) > 2 and ins[2] is not None:
        try:
            np.broadcast_shapes(ins[2].shape, (m, n))
        except ValueError:
            raise ModelError(f"{node}: C of shape {ins[2].shape} does not broadcast to ({m}, {n})") from None
    return [((m, n), ins[0].dtype)]


def _gemm_run(node, x):
    a, b = x[0], x[1]
    if node.attr("transA", 0):
        a = a.T
    if node.attr("transB", 0):
        b = b.T
    alpha = node.attr("alpha", 1.0)
    y = a @ b
    if alpha != 1.0:
        y = y * np.asarray(alpha, y.dtype)
    if len(x) > 2 and x[2] is not None:
        beta = node.attr("beta", 1.0)
        c = x[2] if beta == 1.0 else x[2] * np.asarray(beta, x[2].dtype)
        y = y + c
    return (y.astype(x[0].dtype, copy=False),)


def _gemm_macs(node, ins, outs):
    m, k, n = _gemm_dims(node, ins[0].shape, ins[1].shape)
    return m * k * n


def _gemm_operands(node, a, b):
    if node.attr("alpha", 1.0) != 1.0 or node.attr("beta", 1.0) != 1.0:
        raise PrecisionError(f"{node}: bit-accurate Gemm needs alpha=1 and beta=1 (fold the scales into the weights)")
    return (a.T if node.attr("transA", 0) else a), (b.T if node.attr("transB", 0) else b)


def _gemm_dot(node, a, b):
    a, b = _gemm_operands(node, a, b)
    return a @ b


register(OpDef(
    "Gemm", infer=_gemm_infer, run=_gemm_run, macs=_gemm_macs, param_slots=(1, 2), bias_slots=(2,),
    # The exactness bound takes max(B.shape) as K: an upper bound whatever transB says.
    run_fixed=fixed.dot(_gemm_dot, reduce_len=lambda b: max(b.shape),
                        taps=lambda node, a, b: fixed.matmul_taps(*_gemm_operands(node, a, b)),
                        matrix=lambda node, a, b: fixed.matmul_matrix(node, *_gemm_operands(node, a, b)),
                        window=lambda node, a, b: fixed.matmul_window(node, *_gemm_operands(node, a, b))),
))


def _matmul_shape(node, a, b):
    """numpy.matmul's shape rule, including 1-D promotion."""
    if len(a) == 0 or len(b) == 0:
        raise ModelError(f"{node}: MatMul does not take scalars, got {a} and {b}")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ModelError(f"{node}: inner dimensions differ ({a2[-1]} vs {b2[-2]}) for {a} @ {b}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise ModelError(f"{node}: batch dimensions of {a} and {b} do not broadcast") from None
    out = tuple(batch) + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return tuple(int(d) for d in out), a2[-1]


def _matmul_infer(node, ins):
    shape, _ = _matmul_shape(node, ins[0].shape, ins[1].shape)
    return [(shape, ins[0].dtype)]


def _matmul_macs(node, ins, outs):
    out, k = _matmul_shape(node, ins[0].shape, ins[1].shape)
    return int(np.prod(out, dtype=np.int64)) * k


_MATMUL_ARGS = dict(float_dot=lambda node, x, w: np.matmul(x, w),
                    reduce_len=lambda w: w.shape[-2] if w.ndim > 1 else w.shape[0], b_slot=None,
                    matrix=fixed.matmul_matrix)
#: MatMul by constant weights: hls4ml's Dense (each product cast to accum_t, then added)
_matmul_dense = fixed.dot(**_MATMUL_ARGS, window=fixed.matmul_window)
#: MatMul of two run-time tensors (attention's Q K^T, A V): hls4ml's einsum (nnet_einsum.h), which
#: adds the exact products and casts only the running sums
_matmul_einsum = fixed.dot(**_MATMUL_ARGS, cast_products=False)


def _matmul_fixed(node, args, fmts, prec, ctx):
    weights = getattr(ctx, "is_param", lambda a: True)(args[1])
    return (_matmul_dense if weights else _matmul_einsum)(node, args, fmts, prec, ctx)


_matmul_fixed.spec = _matmul_dense.spec
_matmul_fixed.einsum_spec = _matmul_einsum.spec


register(OpDef(
    "MatMul",
    infer=_matmul_infer,
    run=lambda node, x: (np.matmul(x[0], x[1]).astype(x[0].dtype, copy=False),),
    macs=_matmul_macs,
    param_slots=(1,),
    run_fixed=_matmul_fixed,
))


def _dense(x, w, b):
    y = np.matmul(x, w)
    if y.dtype != x.dtype or np.result_type(y, b) != y.dtype:
        return (y + b).astype(x.dtype, copy=False)
    y += b  # in place: the same sum, no second array
    return y


def _dense_infer(node, ins):
    shape, _ = _matmul_shape(node, ins[0].shape, ins[1].shape)
    if len(ins[1].shape) != 2 or ins[2].shape not in ((ins[1].shape[1],), (1, ins[1].shape[1])):
        raise ModelError(f"{node}: Dense needs W [in, out] and B [out], got {ins[1].shape} and {ins[2].shape}")
    return [(shape, ins[0].dtype)]


def _dense_prepare(node, ins):
    """`OpDef.prepare`: a Dense over a 3-D or deeper x ([T, 1, K] or [1, T, K] tokens) as one 2-D
    product of its rows: numpy's matmul of a stack against 2-D weights runs one GEMV per matrix
    of the stack (32 x 1 x 64 @ 64 x 192 float32: 32 of them, 11 us against 3 for the GEMM). The
    same products and sums per output; BLAS may block them differently (float32 rounding)."""
    x, w = ins[0], ins[1]
    if len(x.shape) < 3 or len(w.shape) != 2 or x.shape[-1] != w.shape[0]:
        return None
    k = x.shape[-1]

    def run(a):
        xa, wa, ba = a[0], a[1], a[2]
        if xa.ndim < 3:  # (a batch the plan was not made for)
            return (_dense(xa, wa, ba),)
        y = np.matmul(xa.reshape(-1, k), wa)
        if y.dtype != xa.dtype or np.result_type(y, ba) != y.dtype:
            return ((y + ba).astype(xa.dtype, copy=False).reshape(xa.shape[:-1] + (wa.shape[1],)),)
        y += ba
        return (y.reshape(xa.shape[:-1] + (wa.shape[1],)),)

    return run


register(OpDef(
    "Dense",
    infer=_dense_infer,
    run=lambda node, x: (_dense(x[0], x[1], x[2]),),
    prepare=_dense_prepare,
    macs=_matmul_macs,
    param_slots=(1, 2),
    bias_slots=(2,),
    run_fixed=fixed.dot(lambda node, x, w: np.matmul(x, w), reduce_len=lambda w: w.shape[0], rows=True,
                        matrix=fixed.matmul_matrix, window=fixed.matmul_window),
))
