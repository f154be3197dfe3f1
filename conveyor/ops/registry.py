"""The op registry: every op type conveyor understands, each defined in one module.

An op module registers an `OpDef` per ONNX op type it implements. An `OpDef` holds
everything about that op in one place: its shape rule, its float reference kernel
and its MAC counter (parameter and activation bytes are derived generically from
the tensors, see `conveyor.graph.counters`).

Signatures (kept duck-typed so that this package never imports the graph package):
- ``infer(node, ins) -> list[(shape, dtype)]``: `ins[i]` is a `ValueInfo` for input
  slot i, or None when the slot is omitted. Returns one entry per *possible* output;
  the graph keeps as many as the node names.
- ``run(node, arrays) -> tuple[np.ndarray, ...]``: float (or integer) reference kernel in
  numpy; `arrays[i]` is None for an omitted optional input.
- ``macs(node, ins, outs) -> int``: multiply-accumulates for one execution.
- ``check(node) -> None``: raises ModelError for attribute values the kernel does not
  implement, so that an unsupported feature fails at import, not deep inside a run.
- ``run_fixed(node, arrays, formats, prec, ctx) -> tuple[np.ndarray, ...]``: the
  bit-accurate kernel (see `conveyor.graph.quantized`): `arrays` hold float64 values
  exactly on their formats' grids (`formats[i]` for slot i; parameters already
  quantized to the node's weight/bias formats), `prec` is the node's `NodePrecision`,
  `ctx.cast(node, values, fmt, axis)` casts and records overflow statistics. None
  means "no fixed-point kernel" (the graph then cannot run under a precision).
- ``fixed_params(node, consts, prec) -> {slot: (values, format)}``: for ops whose fixed-point
  parameters are not a plain cast of their float ones (BatchNormalization: scale and bias
  derived from gamma, beta, mean, var; Div: the divisor's reciprocal). `consts[i]` is the
  float64 value of input slot i when it is a constant, else None. Called once per graph and
  precision; when set it replaces the default cast of `param_slots` to weight/bias.
- ``prepare(node, ins) -> callable | None``: a float kernel specialised once per graph to the
  node's static input shapes and constant inputs (`ins` as for `infer`; weights are constant):
  `Graph.run` then calls ``fn(arrays) -> outputs`` instead of `run`. It must compute what `run`
  computes (e.g. Conv lays its weights out once instead of on every call). None: use `run`.
- ``from_shapes(node, ins) -> tuple[np.ndarray, ...]``: for ops whose outputs depend only on
  their inputs' static shapes (Shape, Size): the outputs, computed at load time, so that
  shape arithmetic folds away even though the input is a run-time value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from conveyor.errors import ModelError, PrecisionError

Shape = tuple[int, ...]


@dataclass(frozen=True)
class ValueInfo:
    """What shape inference knows about one input: shape, dtype, and its value if constant."""

    shape: Shape
    dtype: np.dtype
    value: np.ndarray | None = None


def _no_macs(node: Any, ins: Sequence[ValueInfo | None], outs: Sequence[tuple]) -> int:
    return 0


def _no_check(node: Any) -> None:
    return None


@dataclass(frozen=True)
class OpDef:
    op_type: str
    infer: Callable[[Any, Sequence[ValueInfo | None]], list[tuple[Shape, np.dtype]]]
    run: Callable[[Any, Sequence[np.ndarray | None]], tuple[np.ndarray, ...]]
    macs: Callable[[Any, Sequence[ValueInfo | None], Sequence[tuple]], int] = _no_macs
    check: Callable[[Any], None] = _no_check
    #: input slots that hold parameters (weights/biases) when constant; they are
    #: quantized to the node's `weight` format, or `bias` for those in `bias_slots`.
    param_slots: tuple[int, ...] = ()
    bias_slots: tuple[int, ...] = ()
    run_fixed: Callable[..., tuple[np.ndarray, ...]] | None = None
    fixed_params: Callable[..., dict] | None = None
    from_shapes: Callable[..., tuple[np.ndarray, ...]] | None = None
    prepare: Callable[..., Callable[[Sequence[np.ndarray | None]], tuple] | None] | None = None


_REGISTRY: dict[str, OpDef] = {}


def register(opdef: OpDef) -> OpDef:
    if opdef.op_type in _REGISTRY:
        raise ValueError(f"op type {opdef.op_type!r} registered twice")
    _REGISTRY[opdef.op_type] = opdef
    return opdef


def supported_ops() -> list[str]:
    return sorted(_REGISTRY)


def is_supported(op_type: str) -> bool:
    return op_type in _REGISTRY


def get(op_type: str, node: Any = None) -> OpDef:
    try:
        return _REGISTRY[op_type]
    except KeyError:
        where = f" (node '{node.name}')" if node is not None else ""
        raise ModelError(
            f"unsupported op type '{op_type}'{where}; supported: {', '.join(supported_ops())}"
        ) from None


# ---- helpers shared by op modules -------------------------------------------------

def attr_error(node: Any, key: str, value: Any, accepted: str) -> ModelError:
    return ModelError(f"{node.op_type} node '{node.name}': attribute {key}={value!r} not supported; accepted: {accepted}")


def require_const(node: Any, ins: Sequence[ValueInfo | None], slot: int, what: str) -> np.ndarray | None:
    """The constant value of input `slot`, or None if omitted; error if it is a runtime value."""
    if slot >= len(ins) or ins[slot] is None:
        return None
    if ins[slot].value is None:
        raise ModelError(
            f"{node.op_type} node '{node.name}': input {slot} ({what}) must be a constant "
            "(an initializer or foldable expression) so that shapes are static"
        )
    return ins[slot].value


def no_fixed_kernel(what: str) -> Callable[..., tuple]:
    """`run_fixed` for an op without a bit-accurate kernel yet: refuses by node name instead
    of silently computing in float."""
    def run_fixed(node, args, fmts, prec, ctx):
        raise PrecisionError(f"{node}: no bit-accurate kernel yet ({what}); run it in float "
                             "(no precision) or replace the op")

    return run_fixed
