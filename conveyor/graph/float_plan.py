"""The float reference's execution plan: `Graph.run` without a precision.

The unfused plan runs every node's float kernel (its `prepare`d one where the op has one) and
drops each run-time tensor after its last reader. The fused plan computes the same values with
fewer passes, arrays and dispatches:

- x * act(x) as one step, for act Sigmoid (SiLU, as the exporters write it: Sigmoid, then Mul
  by the same tensor) or HardSigmoid, the activation's output never made;
- a unary elementwise step (Relu, Clip with constant bounds, Sigmoid, HardSigmoid, HardSwish,
  the x * act(x) steps, BatchNormalization with constant parameters) that is the only reader
  of a step's fresh output runs inside that step, in place on the array it just made (a Relu
  after a Conv costs no array and no dispatch);
- an elementwise step (Add, Sub, Mul, Div, including the SE block's Mul by a (N, C, 1, 1)
  scale, and the unary ones) writes its result into an input the plan owns: a fresh array that
  no later step reads and that no view shares;
- Concats whose inputs extend an earlier Concat's (DenseNet's: each layer concatenates every
  earlier feature map of its block, so np.concatenate copies them again and again) share one
  buffer (`_chain_concats`): the first allocates it, each copies in only the inputs the one
  before it lacked, and each output is the buffer's leading slice (a view; the slices are
  contiguous because every dimension before the axis is 1). Those outputs are not fresh: no
  step writes into them.

A fresh array is one a kernel made and no one else holds: the outputs of the ops in `FRESH`
(their float kernels return new arrays), never a weight, a feed or a view (Reshape, Transpose,
Split, Slice...). The values are the unfused plan's: the same numpy operations on the same
float32 values (x * act(x) computes act(x) as the unfused kernel does, or, for Sigmoid, as
x / (1 + exp(-x)): the same quotient within float32 rounding), written to another array.
`Plan.lost` names the tensors the fused plan never makes or overwrites; a run that fetches one
of them runs the unfused plan.

Entries are (node, kernel, inputs, outputs, frees), as `Graph.run` and the profilers read them:
`kernel(list of input arrays) -> outputs`; `frees` the run-time tensors last read there.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from conveyor.graph.tensor import Node
from conveyor.ops import act_float

#: ops whose float kernels return arrays no one else holds (a following step may overwrite
#: them). Clip only with both bounds (without, its kernel returns its input).
FRESH = frozenset({
    "Conv", "Gemm", "MatMul", "Dense", "BatchNormalization",
    "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "Sigmoid", "Tanh", "Clip",
    "HardSigmoid", "HardSwish", "Exp", "Sqrt", "Erf", "Gelu",
    "Concat", "MaxPool", "AveragePool", "GlobalAveragePool", "ReduceMean", "ReduceSum",
    "Softmax",
})

_BINARY_UFUNC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}


class _Step:
    __slots__ = ("node", "kernel", "inputs", "outputs", "nodes", "fresh", "in_place")

    def __init__(self, node, kernel, inputs, outputs, nodes, fresh, in_place=None):
        self.node = node          # the node errors name (the last of a fused group)
        self.kernel = kernel      # list of input arrays -> tuple of outputs
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.nodes = tuple(nodes)  # the graph nodes this step computes
        self.fresh = fresh        # its outputs are arrays no one else holds
        #: y -> f(y) written into y (an elementwise step of one run-time input), or None
        self.in_place = in_place


def build(graph, unfused: list[tuple]) -> tuple[list[tuple], frozenset]:
    """The fused plan of `graph` from its unfused one: (entries, tensors it loses)."""
    outputs = set(graph.output_names)
    steps, lost = _fuse_x_times_act(graph, unfused, outputs)
    _chain_concats(graph, steps)
    for s in steps:
        s.in_place = _in_place_of(s, graph)
    # in place first: an Add that writes into its input may then take the Relu after it
    lost |= _write_into_owned_inputs(graph, steps, outputs)
    steps, merged = _merge_into_producers(graph, steps, outputs)
    lost |= merged
    return _entries(graph, steps, outputs), frozenset(lost)


# ---- x * act(x) ------------------------------------------------------------------------

def _silu(x, out=None):
    """x * sigmoid(x) as x / (1 + exp(-x)), four passes and one array (the unfused Sigmoid
    then Mul: eight and three). exp(-x) is +inf below x = -88.7 and the quotient then -0.0
    (the product is below 1e-36 in magnitude): that overflow is intended."""
    r = np.negative(x)
    with np.errstate(over="ignore"):
        np.exp(r, out=r)
    r += np.ones((), r.dtype)
    return np.divide(x, r, out=r if out is None else out)


def _x_hard_sigmoid(alpha, beta):
    """x * clip(alpha * x + beta, 0, 1), HardSigmoid's float kernel times x."""
    def f(x, out=None):
        r = np.multiply(x, np.asarray(alpha, x.dtype))
        r += np.asarray(beta, x.dtype)
        np.clip(r, np.zeros((), x.dtype), np.ones((), x.dtype), out=r)
        return np.multiply(r, x, out=r if out is None else out)
    return f


def _fuse_x_times_act(graph, unfused, outputs):
    """Sigmoid(x) -> Mul(x, s) (either order) as one step reading x, when s has no other reader
    and is no graph output."""
    by_name = {e[0].name: e for e in unfused}
    fused_act, lost = {}, set()
    for node, *_ in unfused:
        if node.op_type != "Mul" or len(node.inputs) != 2 or not node.outputs[0]:
            continue
        for s, x in (node.inputs, node.inputs[::-1]):
            act = graph.producer(s)
            if (act is None or act.op_type not in ("Sigmoid", "HardSigmoid") or act.inputs[0] != x
                    or s in outputs or len(graph.consumers(s)) != 1 or s == x
                    or graph.tensors[x].dtype.kind != "f" or graph.tensors[x].shape != graph.tensors[s].shape):
                continue
            if act.op_type == "Sigmoid":
                fn = _silu
            else:
                fn = _x_hard_sigmoid(float(act.attr("alpha", 0.2)), float(act.attr("beta", 0.5)))
            fused_act[node.name] = (act, fn)
            lost.add(s)
            break
    dropped = {act.name for act, _ in fused_act.values()}
    steps = []
    for node, kernel, inputs, outs, _ in unfused:
        if node.name in dropped:
            continue
        if node.name in fused_act:
            act, fn = fused_act[node.name]
            op = Node(node.name, f"{act.op_type}*Mul", (act.inputs[0],), node.outputs, {}, node.opset)
            steps.append(_Step(op, (lambda args, _f=fn: (_f(args[0]),)), (act.inputs[0],), outs,
                               (by_name[act.name][0], node), True, None))
            steps[-1].in_place = (lambda y, _f=fn: _f(y, out=y))
            continue
        fresh = node.op_type in FRESH and (node.op_type != "Clip" or _clip_bounds(node, graph) is not None)
        steps.append(_Step(node, kernel, inputs, outs, (node,), fresh))
    return steps, lost


# ---- Concats that extend one another ------------------------------------------------------

def _concat_of(step, graph):
    """(axis, output shape) of a Concat step that can share a buffer: one output, every input a
    tensor of the output's float dtype, every dimension before the axis 1; else None."""
    node = step.node
    if node.op_type != "Concat" or len(step.nodes) != 1 or not node.inputs or any(not t for t in node.inputs):
        return None
    if len([o for o in node.outputs if o]) != 1 or not node.outputs[0]:
        return None
    y = graph.tensors[node.outputs[0]]
    if y.dtype.kind != "f" or any(graph.tensors[t].dtype != y.dtype for t in node.inputs):
        return None
    rank = len(y.shape)
    axis = node.attr("axis", 1 if node.opset < 4 else None)
    if axis is None or not -rank <= int(axis) < rank:
        return None
    axis = int(axis) % rank
    if any(int(d) != 1 for d in y.shape[:axis]):
        return None
    return axis, tuple(int(d) for d in y.shape)


def _chain_concats(graph, steps):
    """Concat B whose inputs start with all of an earlier Concat A's (same axis) takes A's
    output (a leading slice of the buffer they share) instead of those inputs and copies in
    only the rest: every input is copied once per chain instead of once per Concat."""
    info = {id(s): _concat_of(s, graph) for s in steps}
    last_of: dict[tuple, _Step] = {}   # a Concat's inputs -> its step (the latest, if repeated)
    prefix, extended = {}, set()
    for s in steps:
        if info[id(s)] is None:
            continue
        ins = s.node.inputs
        for k in range(len(ins) - 1, 0, -1):  # the longest earlier prefix not yet extended
            a = last_of.get(ins[:k])
            if a is not None and id(a) not in extended and info[id(a)][0] == info[id(s)][0]:
                prefix[id(s)] = a
                extended.add(id(a))
                break
        last_of[ins] = s
    if not prefix:
        return
    final = {}  # chain member -> the shape of the chain's last (largest) output
    for s in reversed(steps):
        if id(s) in prefix or id(s) in extended:
            shape = final.setdefault(id(s), info[id(s)][1])
            if id(s) in prefix:
                final[id(prefix[id(s)])] = shape
    for s in steps:
        if id(s) not in final:
            continue
        axis, shape = info[id(s)]
        sizes = [int(graph.tensors[t].shape[axis]) for t in s.node.inputs]
        a = prefix.get(id(s))
        start = len(a.node.inputs) if a is not None else 0
        s.kernel = _concat_into(axis, final[id(s)], shape[axis], sum(sizes[:start]), sizes[start:],
                                a is None)
        s.inputs = ((a.outputs[0],) if a is not None else ()) + tuple(s.node.inputs[start:])
        s.fresh = False  # a view of the shared buffer: never written into


def _concat_into(axis, buffer_shape, size, offset, sizes, head):
    """The kernel of a chained Concat: (the buffer's leading `size` along `axis`,) after copying
    its own inputs in at `offset`. The head allocates the buffer; the others find it as the base
    of the previous Concat's output (their first argument)."""
    lead = (slice(None),) * axis
    cuts, at = [], offset
    for n in sizes:
        cuts.append(lead + (slice(at, at + n),))
        at += n
    out = lead + (slice(0, size),)

    def run(args):
        if head:
            buf = np.empty(buffer_shape, dtype=args[0].dtype)
            own = args
        else:
            buf = args[0].base
            own = args[1:]
        for cut, arr in zip(cuts, own):
            buf[cut] = arr
        return (buf[out],)
    return run


# ---- in-place variants of elementwise steps ---------------------------------------------

def _clip_bounds(node, graph):
    """Clip's constant (lo, hi) with lo <= hi, else None."""
    if node.opset < 11:
        lo, hi = node.attr("min"), node.attr("max")
    else:
        ins = list(node.inputs) + ["", ""]
        if any(t and t not in graph.weights for t in ins[1:3]):
            return None
        lo, hi = (graph.weights[t] if t else None for t in ins[1:3])
    if lo is None or hi is None or not bool(np.all(np.asarray(lo) <= np.asarray(hi))):
        return None
    return lo, hi


def _in_place_of(step: _Step, graph) -> Callable | None:
    """y -> the step's output written into y, for a step whose only run-time input is y and whose
    output has y's shape and dtype; the values of its kernel. None when it has no such form."""
    if step.in_place is not None:
        return step.in_place
    node = step.node
    if not node.inputs or not node.inputs[0] or not node.outputs or not node.outputs[0] \
            or any(node.outputs[1:]):
        return None
    if any(t and t not in graph.weights for t in node.inputs[1:]):
        return None
    x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
    if x.shape != y.shape or x.dtype != y.dtype or x.dtype.kind != "f":
        return None
    op = node.op_type
    if op == "Relu":  # np.maximum(v, 0, out=v), compiled (conveyor.ops.act_float)
        return act_float.relu_into
    if op == "Clip":
        bounds = _clip_bounds(node, graph)
        if bounds is None:
            return None
        return act_float.clip_into(*bounds)  # np.clip(v, lo, hi, out=v), compiled
    if op == "HardSigmoid":
        alpha, beta = float(node.attr("alpha", 0.2)), float(node.attr("beta", 0.5))
        return lambda v: _hard_sigmoid_into(v, alpha, beta)
    if op == "HardSwish":
        return _hard_swish_into
    # a prepared kernel that can write into its input (BatchNormalization's)
    return getattr(step.kernel, "into", None)


def _hard_sigmoid_into(v, alpha, beta):
    """HardSigmoid's float kernel, np.clip(alpha * x + beta, 0, 1), written into x."""
    np.multiply(v, np.asarray(alpha, v.dtype), out=v)
    v += np.asarray(beta, v.dtype)
    return np.clip(v, np.zeros((), v.dtype), np.ones((), v.dtype), out=v)


def _hard_swish_into(v):
    """HardSwish's float kernel, x * clip(x / 6 + 0.5, 0, 1), written into x."""
    r = np.divide(v, np.asarray(6.0, v.dtype))
    r += np.asarray(0.5, v.dtype)
    np.clip(r, np.zeros((), v.dtype), np.ones((), v.dtype), out=r)
    return np.multiply(v, r, out=v)


def _merge_into_producers(graph, steps, outputs):
    """A step with an in-place form that is the only reader of a fresh single output of an
    earlier step runs inside it (same values, no array, one dispatch less)."""
    readers = _readers(steps)
    made_by = {t: s for s in steps for t in s.outputs if t}
    lost = set()
    keep = []
    for s in steps:
        t = s.inputs[0] if s.inputs else ""
        p = made_by.get(t)
        if (s.in_place is not None and p is not None and p.fresh and t not in outputs
                and len([o for o in p.outputs if o]) == 1 and p.outputs[0] == t
                and len(readers.get(t, ())) == 1):
            host = p
            fused = _conv_with_act(host, s, graph)
            host.kernel = fused if fused is not None else (
                lambda args, _k=host.kernel, _f=s.in_place: (_f(_k(args)[0]),))
            host.outputs = s.outputs
            host.nodes = host.nodes + s.nodes
            host.in_place = None
            made_by[s.outputs[0]] = host
            lost.add(t)
            continue
        keep.append(s)
    return keep, lost


def _conv_with_act(host, s, graph):
    """A Conv step's prepared kernel with the Relu or scalar Clip step `s` merged into its bias
    pass (`ConvPlan.call_act`: the values of the Conv then `s`'s in-place form), or None."""
    with_act = getattr(host.kernel, "with_act", None)
    if with_act is None or len(host.nodes) != 1 or host.node.op_type != "Conv" or len(s.nodes) != 1:
        return None
    if s.node.op_type == "Relu":
        return with_act(1)
    if s.node.op_type == "Clip":
        bounds = _clip_bounds(s.node, graph)
        if bounds is None or any(np.asarray(v).size != 1 for v in bounds):
            return None
        return with_act(2, float(np.asarray(bounds[0]).reshape(())), float(np.asarray(bounds[1]).reshape(())))
    return None


def _readers(steps):
    readers: dict[str, list[_Step]] = {}
    for s in steps:
        for t in dict.fromkeys(t for t in s.inputs if t):
            readers.setdefault(t, []).append(s)
    return readers


def _write_into_owned_inputs(graph, steps, outputs):
    """Elementwise steps write into an input the plan owns: made fresh by a step, no graph
    output, read by no later step and by no step that may return a view of it."""
    readers = _readers(steps)
    made_by = {t: s for s in steps for t in s.outputs if t}
    lost = set()

    def owned(t, s):
        p = made_by.get(t)
        if p is None or not p.fresh or t in outputs or t in graph.weights:
            return False
        rs = readers.get(t, ())
        return bool(rs) and rs[-1] is s and all(r.fresh for r in rs)

    for s in steps:
        node = s.node
        if len(s.nodes) != 1 or not s.fresh:
            if s.in_place is not None and s.inputs and owned(s.inputs[0], s):
                s.kernel = (lambda args, _f=s.in_place: (_f(args[0]),))
                lost.add(s.inputs[0])
            continue
        if node.op_type in _BINARY_UFUNC and len(node.inputs) == 2 and node.outputs[0]:
            y = graph.tensors[node.outputs[0]]
            if y.dtype.kind != "f":
                continue
            for slot, t in enumerate(node.inputs):
                a = graph.tensors[t]
                other = graph.tensors[node.inputs[1 - slot]]
                if a.shape == y.shape and a.dtype == y.dtype == other.dtype and owned(t, s):
                    s.kernel = _binary_into(_BINARY_UFUNC[node.op_type], slot)
                    lost.add(t)
                    break
        elif s.in_place is not None and owned(s.inputs[0], s):
            s.kernel = (lambda args, _f=s.in_place: (_f(args[0]),))
            lost.add(s.inputs[0])
    return lost


def _binary_into(ufunc, slot):
    if slot == 0:
        return lambda args: (ufunc(args[0], args[1], out=args[0]),)
    return lambda args: (ufunc(args[0], args[1], out=args[1]),)


# ---- entries ----------------------------------------------------------------------------

def _entries(graph, steps, outputs):
    last: dict[str, int] = {}
    for i, s in enumerate(steps):
        for t in s.inputs:
            if t:
                last[t] = i
    entries = []
    for i, s in enumerate(steps):
        frees = tuple(dict.fromkeys(t for t in s.inputs
                                    if t and last.get(t) == i and t not in graph.weights and t not in outputs))
        entries.append((s.node, s.kernel, s.inputs, s.outputs, frees))
    return entries
