"""Bit-accurate execution of a Graph under a precision config.

`Emulator(graph, precision)` resolves every node's formats once and quantizes the
weights once; `run(feeds)` then pushes float64 arrays whose values lie exactly on
their formats' grids through each op's fixed-point kernel (`OpDef.run_fixed`). The
arithmetic of each kernel is written down in docs/numerics.md; the C++ that code
generation writes follows the same rules, so that C simulation matches bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from conveyor import ops
from conveyor.errors import ModelError, PrecisionError
from conveyor.numerics.config import NodePrecision, PrecisionConfig


@dataclass
class LayerStats:
    """What one node's result cast saw over a run (or several, accumulated)."""

    node: str
    op_type: str
    result_format: str
    count: int = 0
    min: float = np.inf
    max: float = -np.inf
    overflow: int | None = 0   # values whose rounded value lay outside the result format's range
    saturated: int | None = 0  # of those, the ones clipped by a SAT mode (the rest wrapped); None: not counted
    #: a lossy accumulator's casts (ops.fixed.CastCounts): its format, and the overflow events
    #: of the bias, product and running-sum casts; the mode (SAT: saturations, else wraps)
    accum_format: str | None = None
    accum_bias_overflow: int = 0
    accum_product_overflow: int = 0
    accum_sum_overflow: int = 0
    accum_casts: int = 0       # product casts + sum casts + bias casts seen
    accum_saturating: bool = False
    #: table look-ups (sigmoid/tanh/softmax, also inside LSTM/GRU) and the ones whose input
    #: lay outside the table: a range table's index clamped, a softmax address cast overflowing
    table_lookups: int = 0
    table_clamped: int = 0
    #: a recurrent layer's state casts (h, c, GRU's r*h) and the values they overflowed
    state_casts: int = 0
    state_overflow: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class CastContext:
    """Casts kernel results to their formats and, when asked, records LayerStats.

    `param_ranges` maps id(array) -> (min, max) of the arrays that stay alive as long as
    the context (the Emulator's quantized parameters), so that kernels bound their sums
    without scanning the parameters on every run (`value_range`)."""

    def __init__(self, observe: bool, param_ranges: Mapping[int, tuple[float, float]] | None = None):
        self.observe = observe
        # the Emulator's requests to a dot kernel (fuse the following Relu / MaxPool) and its answers
        self.relu_next = self.pool_next = self.relu_done = self.pool_done = False
        self.stats: dict[str, LayerStats] = {}
        self._param_ranges = param_ranges or {}

    def value_range(self, a: np.ndarray | None) -> tuple[float, float]:
        """(min, max) of `a` ((0, 0) for None or empty): looked up for parameters, else computed."""
        if a is None or a.size == 0:
            return 0.0, 0.0
        got = self._param_ranges.get(id(a))
        return got if got is not None else (float(np.min(a)), float(np.max(a)))

    def is_param(self, a: np.ndarray | None) -> bool:
        """Whether `a` is one of the graph's quantized parameters (not a run-time value)."""
        return a is not None and id(a) in self._param_ranges

    def record_accum(self, node, fmt, counts) -> None:
        """Add one accumulate call's overflow counts (ops.fixed.CastCounts) to the node's stats."""
        st = self.stats.setdefault(node.name, LayerStats(node.name, node.op_type, "(no result cast)"))
        st.accum_format = str(fmt)
        st.accum_saturating = str(getattr(fmt, "overflow", "")).startswith("SAT")
        st.accum_bias_overflow += counts.bias
        st.accum_product_overflow += counts.products
        st.accum_sum_overflow += counts.sums
        st.accum_casts += sum(counts.casts.values())

    def _stats(self, node) -> LayerStats:
        return self.stats.setdefault(node.name, LayerStats(node.name, node.op_type, "(no result cast)"))

    def record_tables(self, node, lookups: int, clamped: int) -> None:
        st = self._stats(node)
        st.table_lookups += int(lookups)
        st.table_clamped += int(clamped)

    def cast_state(self, node, values: np.ndarray, fmt, result: bool = True) -> np.ndarray:
        """A recurrent layer's state cast, counted in `state_*`; `result`: also in the result
        statistics (h and c, which the layer's outputs are; not GRU's r*h)."""
        from conveyor.numerics.cast import cast, overflow_count

        if self.observe and values.size:
            st = self._stats(node)
            st.state_casts += int(values.size)
            st.state_overflow += overflow_count(values, fmt) or 0
        return self.cast(node, values, fmt) if result else cast(values, fmt, -1)

    def cast(self, node, values: np.ndarray, fmt, axis: int = -1, inplace: bool = False,
             relu: bool = False) -> np.ndarray:
        """`values` cast to `fmt`; `inplace`: the caller owns `values`, which may be overwritten;
        `relu`: the cast values then go through max(., 0) (a fused Relu; not in observing runs,
        whose statistics are the cast's own)."""
        if relu and self.observe:
            raise ValueError(f"{node}: a fused Relu in an observing run")
        if fmt is None:
            return np.maximum(values, 0.0) if relu else values
        from conveyor.numerics.cast import cast, overflow_count

        if self.observe and values.size:
            st = self.stats.setdefault(node.name, LayerStats(node.name, node.op_type, str(fmt)))
            st.result_format = str(fmt)
            st.count += int(values.size)
            st.min = min(st.min, float(np.min(values)))
            st.max = max(st.max, float(np.max(values)))
            over = overflow_count(values, fmt)
            if over is None:  # block formats: not counted
                st.overflow = st.saturated = None
            elif st.overflow is not None:
                st.overflow += over
                if over and str(getattr(fmt, "overflow", "")).startswith("SAT"):
                    st.saturated += over
        return cast(values, fmt, axis, inplace=inplace, relu=relu)


class Emulator:
    """A graph prepared to run bit-accurately under one precision config."""

    def __init__(self, graph, precision: PrecisionConfig | Mapping | str,
                 input_formats: Mapping[str, Any] | None = None):
        """`input_formats` gives the format each graph input already has (a pipeline stage's
        inputs come from earlier stages: re-casting them to the config's `input` format would
        be wrong); inputs it does not name are cast to the `input` format."""
        self.graph = graph
        self.input_formats = dict(input_formats or {})
        self.last_formats: dict[str, Any] = {}
        from conveyor.graph.names import resolve_config

        self.config = resolve_config(graph, precision)
        self.config.check_against({n.name for n in graph.nodes}, {n.op_type for n in graph.nodes}, graph.name)
        from conveyor.numerics.cast import cast

        self.node_precision: dict[str, NodePrecision] = {}
        self.params: dict[tuple[str, int], np.ndarray] = {}
        self.param_formats: dict[tuple[str, int], Any] = {}
        self.formats: dict[str, Any] = {}  # tensor -> format of its values
        missing = sorted({n.op_type for n in graph.nodes if ops.get(n.op_type, n).run_fixed is None})
        if missing:
            raise PrecisionError(
                f"graph '{graph.name}': no fixed-point kernel yet for {missing}; "
                f"ops with one: {', '.join(op for op in ops.supported_ops() if ops.get(op).run_fixed)}"
            )
        in_fmt = self.config.input_format()
        for t in graph.input_names:
            self.formats[t] = in_fmt
        for node in graph.nodes:
            opdef = ops.get(node.op_type, node)
            prec = self.config.for_node(node.name, node.op_type)
            self.node_precision[node.name] = prec
            if opdef.fixed_params is not None:
                consts = [graph.weights[t].astype(np.float64) if t and graph.is_weight(t) else None
                          for t in node.inputs]
                for slot, (values, fmt) in opdef.fixed_params(node, consts, prec).items():
                    self.params[(node.name, slot)] = values
                    self.param_formats[(node.name, slot)] = fmt
                continue
            for slot in opdef.param_slots:
                if slot < len(node.inputs) and node.inputs[slot] and graph.is_weight(node.inputs[slot]):
                    fmt = prec.bias if slot in opdef.bias_slots else prec.weight
                    w = graph.weights[node.inputs[slot]].astype(np.float64)
                    self.params[(node.name, slot)] = cast(w, fmt, _param_axis(node.op_type, slot, w.ndim))
                    self.param_formats[(node.name, slot)] = fmt
        # hls4ml io_parallel's layout: a Dense after a Flatten sums its inputs in H, W, C order
        self.input_order: dict[str, np.ndarray] = {}
        if self.config.order == "hls4ml_io_parallel":
            for node in graph.nodes:
                perm = flatten_order(graph, node)
                if perm is not None:
                    self.input_order[node.name] = perm
                    w = self.params[(node.name, 1)]
                    self.params[(node.name, 1)] = w[:, perm] if node.attr("transB", 0) else w[perm]
        # A Relu right after a dot kernel (its only consumer) whose cast is the identity: the
        # fused kernel applies it (non-observing runs; `_relu_after`: dot node -> Relu node)
        self._relu_after: dict[str, Any] = {}
        self._clip_top: dict[str, float] = {}  # a fused Clip (ReLU6) node -> its upper bound
        from conveyor.ops import fixed as _fixed

        for node in graph.nodes:
            run = ops.get(node.op_type, node).run_fixed
            spec = getattr(run, "spec", None)
            outs = [t for t in node.outputs if t]
            # dot kernels with a window layout (Conv, Dense, Gemm) and the exact-then-cast ones
            # (Add, Sub, Mul, Concat, ...) apply it
            fuses = (spec is not None and spec.window is not None) or getattr(run, "fuses_relu", False)
            if not fuses or len(outs) != 1 or outs[0] in graph.output_names:
                continue
            users = graph.consumers(outs[0])
            if len(users) != 1 or not _fixed._inside([self.node_precision[node.name].result],
                                                     self.node_precision[users[0].name].result):
                continue
            if users[0].op_type == "Relu" and len([t for t in users[0].inputs if t]) == 1:
                self._relu_after[node.name] = users[0]
            elif users[0].op_type == "Clip" and users[0].inputs[0] == outs[0]:
                hi = self._relu6_top(users[0])
                if hi is not None:  # a ReLU6: max(., 0) in the kernel, min(., hi) after it
                    self._relu_after[node.name] = users[0]
                    self._clip_top[users[0].name] = hi
        # A 2x2 MaxPool of stride 2 right after such a dot kernel (or after its fused Relu), its
        # only consumer, its cast the identity: the kernel pools too (`_pool_after`: dot node ->
        # MaxPool node)
        self._pool_after: dict[str, Any] = {}
        for node in graph.nodes:
            spec = getattr(ops.get(node.op_type, node).run_fixed, "spec", None)
            if spec is None or spec.window is None or len([t for t in node.outputs if t]) != 1:
                continue
            last = self._relu_after.get(node.name, node)
            out = last.outputs[0]
            users = graph.consumers(out) if out not in graph.output_names else []
            if (len(users) == 1 and (last is node or node.outputs[0] not in graph.output_names)
                    and _max_pool_2x2(graph, users[0])
                    and _fixed._inside([self.node_precision[last.name].result],
                                       self.node_precision[users[0].name].result)):
                self._pool_after[node.name] = users[0]
        # x * Sigmoid(x) (SiLU): a Sigmoid whose only reader is a Mul of it and of the Sigmoid's
        # own input, same shape (`_swish_after`: Sigmoid node -> Mul node; ops.fixed.swish)
        self._swish_after: dict[str, Any] = {}
        for node in graph.nodes:
            if node.op_type != "Sigmoid" or len([t for t in node.outputs if t]) != 1 or not node.inputs[0]:
                continue
            out, x = node.outputs[0], node.inputs[0]
            users = graph.consumers(out) if out not in graph.output_names else []
            if (len(users) == 1 and users[0].op_type == "Mul" and len(users[0].inputs) == 2
                    and sorted(users[0].inputs) == sorted([x, out]) and not graph.is_weight(x)
                    and x in graph.tensors and out in graph.tensors and users[0].outputs[0] in graph.tensors
                    and graph.tensors[x].shape == graph.tensors[users[0].outputs[0]].shape):
                self._swish_after[node.name] = users[0]
        # Non-parameter constants (e.g. a Reshape's shape) pass through unquantized.
        # (min, max) of every parameter, once: kernels bound their sums with it (CastContext.value_range)
        self._param_ranges = {id(v): (float(np.min(v)), float(np.max(v))) for v in self.params.values()
                              if isinstance(v, np.ndarray) and v.size and v.dtype.kind == "f"}

    def run(
        self,
        feeds: Mapping[str, np.ndarray] | np.ndarray,
        *,
        fetch: Sequence[str] | None = None,
        observe: bool = False,
    ) -> tuple[dict[str, np.ndarray], dict[str, LayerStats]]:
        from conveyor.numerics.cast import cast

        g = self.graph
        batch = g._batch_of(feeds)
        if batch is not None:  # a batch the graph was not built for (conveyor.graph.batch)
            from conveyor.graph.batch import run_batched

            return run_batched(g, batch, self.config, fetch, observe, emulator_of=self._at)
        wanted = tuple(fetch) if fetch is not None else g.output_names
        bound = g._bind_feeds(feeds, cast_floats=False)  # float64 values are exact: keep them
        ctx = CastContext(observe, self._param_ranges)
        env: dict[str, np.ndarray] = {}
        formats: dict[str, Any] = {}
        in_fmt = self.config.input_format()
        for name, value in bound.items():
            if value.dtype.kind in "iub":  # indices, lengths, masks: integers, not activations
                env[name], formats[name] = value, None
                continue
            fmt = self.input_formats[name] if name in self.input_formats else in_fmt
            env[name] = cast(value.astype(np.float64), fmt, 1 if value.ndim > 2 else -1, inplace=True)
            formats[name] = fmt
        keep = set(wanted)
        skip: set[str] = set()
        steps = self._steps()
        if not keep.intersection(self._lost):  # the plan with movement chains joined
            steps = self._joined
        for st in steps:
            node = st.node
            if skip and node.name in skip:  # a Relu, MaxPool or Mul a kernel before it applied
                for t in st.frees:
                    if t not in keep:
                        env.pop(t, None)
                continue
            fused_relu = fused_pool = None
            args, fmts = list(st.args), list(st.fmts)
            for slot, t in st.inputs:
                args[slot] = env[t]
                fmts[slot] = formats[t]
            if st.order is not None:  # the products in hls4ml's order (weights permuted once)
                args[0] = args[0][:, st.order]
            try:
                if observe:  # also count the table look-ups whose input lies outside the table
                    from conveyor.ops.lut import counting_tables

                    with counting_tables() as tally:
                        results, out_fmts = st.run(node, args, fmts, st.prec, ctx)
                    if tally[0]:
                        ctx.record_tables(node, tally[0], tally[1])
                elif st.swish is not None and node.outputs[0] not in keep and \
                        (y := _swish(args[0], fmts[0], node, st.prec, st.swish, self.node_precision[st.swish.name],
                                     ctx)) is not None:
                    mul = st.swish  # the Mul's output, in its format; the Sigmoid's output is never made
                    skip.add(mul.name)
                    env[mul.outputs[0]] = y
                    formats[mul.outputs[0]] = self.node_precision[mul.name].result
                    for t in st.frees:
                        if t not in keep:
                            env.pop(t, None)
                    continue
                elif st.relu is None and st.pool is None:
                    results, out_fmts = st.run(node, args, fmts, st.prec, ctx)
                else:
                    relu, pool = st.relu, st.pool
                    ctx.relu_next = relu is not None and node.outputs[0] not in keep
                    if pool is not None and (relu is None or ctx.relu_next) and \
                            (relu or node).outputs[0] not in keep:
                        ctx.pool_next = True
                    results, out_fmts = st.run(node, args, fmts, st.prec, ctx)
                    ctx.relu_next = ctx.pool_next = False
                    if ctx.relu_done:
                        ctx.relu_done = False
                        skip.add(relu.name)
                        fused_relu = relu
                    if ctx.pool_done:
                        ctx.pool_done = False
                        skip.add(pool.name)
                        fused_pool = pool
            except (ModelError, PrecisionError):
                raise
            except Exception as e:
                if hasattr(e, "add_note"):
                    e.add_note(f"while running {node} of graph '{g.name}' bit-accurately")
                raise
            for t, value, fmt in zip(node.outputs, results, out_fmts):
                if t:
                    env[t] = value
                    formats[t] = fmt
            if fused_relu is not None:  # the values are the Relu's output, in its format
                y = env.pop(node.outputs[0])
                if fused_relu.name in self._clip_top:  # a ReLU6: min(., hi) after the kernel's max(., 0)
                    top = self._clip_top[fused_relu.name]
                    y = _clip_top(y, top, args)
                env[fused_relu.outputs[0]] = y
                formats[fused_relu.outputs[0]] = self.node_precision[fused_relu.name].result
            if fused_pool is not None:  # the MaxPool's output, in its format
                env[fused_pool.outputs[0]] = env.pop((fused_relu or node).outputs[0])
                formats[fused_pool.outputs[0]] = self.node_precision[fused_pool.name].result
            for t in st.frees:
                if t not in keep:
                    env.pop(t, None)
        # Bit-accurate values stay float64: a float32 cannot hold every ap_fixed<32,...>.
        out = {t: env[t] if t in env else np.asarray(g.weights[t]) for t in wanted}
        self.last_formats = formats
        return out, ctx.stats


    def _relu6_top(self, clip) -> float | None:
        """For a Clip whose lower bound is exactly 0 and whose upper bound is one finite scalar
        value of its result format (a ReLU6): that upper bound. Its result cast is then the
        identity on the clipped values of a producer whose format lies inside its own (the
        values are the producer's, 0 or the bound), so the producer's kernel may compute it.
        None for any other Clip."""
        from conveyor.numerics.cast import cast, is_fixed

        def bound(slot, attr):
            if clip.opset < 11:
                return clip.attr(attr)
            if len(clip.inputs) <= slot or not clip.inputs[slot]:
                return None
            key = (clip.name, slot)  # the value the Clip's kernel sees: its quantized parameter, if any
            v = self.params.get(key, self.graph.weights.get(clip.inputs[slot]))
            return None if v is None or np.size(v) != 1 else float(np.asarray(v).reshape(()))

        lo, hi = bound(1, "min"), bound(2, "max")
        fmt = self.node_precision[clip.name].result
        if lo != 0.0 or hi is None or not np.isfinite(hi) or hi < 0 or not is_fixed(fmt):
            return None
        if float(cast(np.array([hi]), fmt)[0]) != hi:  # not a value of the result format
            return None
        return hi

    def _steps(self) -> list["_Step"]:
        """What each node's call needs that does not change between runs, worked out once (the
        graph and the config are fixed): its kernel, precision, parameters and constants in
        their slots, the slots run-time tensors fill, and the tensors it uses last."""
        steps = self.__dict__.get("_plan")
        if steps is not None:
            return steps
        from conveyor.graph.ir import _STATIC_RESHAPES
        from conveyor.ops import fixed as _fixed
        from conveyor.ops.registry import ValueInfo

        g = self.graph
        last_use = g._last_use
        steps = []
        for i, node in enumerate(g.nodes):
            args, fmts, inputs = [], [], []
            for slot, t in enumerate(node.inputs):
                if not t:
                    args.append(None)
                    fmts.append(None)
                elif (node.name, slot) in self.params:
                    args.append(self.params[(node.name, slot)])
                    fmts.append(self.param_formats[(node.name, slot)])
                elif g.is_weight(t):
                    args.append(g.weights[t])
                    fmts.append(None)
                else:
                    args.append(None)
                    fmts.append(None)
                    inputs.append((slot, t))
            frees = tuple(dict.fromkeys(t for t in node.inputs
                                        if t and last_use.get(t) == i and not g.is_weight(t)))
            opdef = ops.get(node.op_type, node)
            run = opdef.run_fixed
            if getattr(run, "movement", False):  # the float plan's layout, worked out once
                kernel = None
                if node.op_type in _STATIC_RESHAPES and node.outputs[0] in g.tensors:
                    kernel = (lambda a, _shape=g.tensors[node.outputs[0]].shape: (a[0].reshape(_shape),))
                elif opdef.prepare is not None:  # Transpose, Gather (a scalar index: a view)
                    kernel = opdef.prepare(node, [ValueInfo(g.tensors[t].shape, g.tensors[t].dtype, g.weights.get(t))
                                                  if t else None for t in node.inputs])
                if kernel is not None:
                    run = _fixed.prepared_movement(kernel)
            steps.append(_Step(node, run, self.node_precision[node.name],
                               tuple(args), tuple(fmts), tuple(inputs), self.input_order.get(node.name),
                               self._relu_after.get(node.name), self._pool_after.get(node.name), frees,
                               self._swish_after.get(node.name)))
        self._plan = steps
        self._joined, self._lost = _join_movement(g, steps)
        return steps

    def _at(self, graph) -> "Emulator":
        """This emulator's config and input formats on `graph` (the same graph at another batch)."""
        if graph is self.graph:
            return self
        if not self.input_formats:
            return emulator_for(graph, self.config)
        cache = self.__dict__.setdefault("_rebatched", {})
        if id(graph) not in cache:
            cache[id(graph)] = (graph, Emulator(graph, self.config, self.input_formats))
        return cache[id(graph)][1]


@dataclass(frozen=True)
class _Step:
    """One node of `Emulator.run`'s plan (`Emulator._steps`)."""

    node: Any
    run: Any                    # the op's run_fixed
    prec: NodePrecision
    args: tuple                 # parameters and constants in their slots, None elsewhere
    fmts: tuple                 # their formats
    inputs: tuple               # (slot, tensor): the run-time values
    order: np.ndarray | None    # hls4ml io_parallel's input order (Emulator.input_order)
    relu: Any                   # the Relu the dot kernel may apply (Emulator._relu_after)
    pool: Any                   # the MaxPool it may apply (Emulator._pool_after)
    frees: tuple                # tensors this node uses last (dropped unless fetched)
    swish: Any = None           # the Mul computing x * this Sigmoid(x) (Emulator._swish_after)


def _clip_top(y: np.ndarray, top: float, args) -> np.ndarray:
    """min(y, top) for y >= 0 (a fused ReLU6's upper bound): in place, compiled, where the
    array is the Emulator's own (np.minimum with a scalar does not vectorise)."""
    from conveyor.ops import act_float

    if _aliases(y, args):
        return np.minimum(y, top)
    if act_float._compiled(y):
        act_float._clip_flat(y.reshape(-1), 0.0, top)  # y >= 0 already: the values of min(y, top)
        return y
    return np.minimum(y, top, out=y)


def _aliases(y: np.ndarray, args) -> bool:
    """Whether a kernel's result may share memory with one of its arguments (then it is not
    the Emulator's to change in place). An array that owns its data shares it with none but
    itself."""
    if y.flags.owndata:
        return any(a is y for a in args)
    return any(isinstance(a, np.ndarray) and np.may_share_memory(y, a) for a in args)


def _join_movement(g, steps: list[_Step]) -> tuple[list[_Step], frozenset]:
    """The plan with each chain of data-movement steps run as one step (a transformer's
    Reshape -> Unsqueeze -> Transpose -> Squeeze -> Gather -> Reshape ...: 22 steps a layer, 7
    joined), and the tensors that plan never makes. A movement step with a prepared kernel
    (`fixed.prepared_movement`: a reshape, a transpose or a basic index, each a view) whose
    only run-time input is its first joins the step that makes that input when it is the same
    kind of step, its output is no graph output and it is its only reader. The values are the
    same views; the formats pass through each, as they do step by step."""
    outputs = set(g.output_names)
    readers: dict[str, int] = {}
    for st in steps:
        for t in dict.fromkeys(t for _, t in st.inputs):
            readers[t] = readers.get(t, 0) + 1

    def chainable(st):
        return getattr(st.run, "kernel", None) is not None and len(st.inputs) == 1 and st.inputs[0][0] == 0 \
            and len([t for t in st.node.outputs if t]) == 1

    joined: list[_Step] = []
    made_by: dict[str, int] = {}  # tensor -> index in `joined` of the chainable step making it
    lost = set()
    for st in steps:
        t = st.inputs[0][1] if st.inputs else None
        i = made_by.get(t)
        if chainable(st) and i is not None and t not in outputs and readers.get(t) == 1:
            first = joined[i]
            k1, k2, rest = first.run.kernel, st.run.kernel, st.args

            def kernel(args, _k1=k1, _k2=k2, _rest=tuple(rest[1:])):
                return _k2((_k1(args)[0],) + _rest)

            from conveyor.ops import fixed as _fixed

            joined[i] = _Step(st.node, _fixed.prepared_movement(kernel), st.prec, first.args, first.fmts,
                              first.inputs, None, None, None, first.frees)
            lost.add(t)
            del made_by[t]
            made_by[st.node.outputs[0]] = i
            continue
        if chainable(st):
            made_by[st.node.outputs[0]] = len(joined)
        joined.append(st)
    return joined, frozenset(lost)


def _swish(x, fx, sig, sig_prec, mul, mul_prec, ctx):
    from conveyor.ops.fixed import swish

    return swish(x, fx, sig, sig_prec, mul, mul_prec, ctx)


def _max_pool_2x2(graph, node) -> bool:
    """Whether `node` is a MaxPool the fused dot kernel computes: a 4-D input, 2x2 windows
    of stride 2, no padding, no dilation, floor mode, no Indices output."""
    from conveyor.ops.conv import auto_pad_of, int_list

    if node.op_type != "MaxPool" or len([t for t in node.outputs if t]) != 1 or node.outputs[0] != \
            next(t for t in node.outputs if t):
        return False
    shape = graph.tensors[node.inputs[0]].shape if node.inputs[0] in graph.tensors else None
    return (shape is not None and len(shape) == 4 and int_list(node, "kernel_shape") == [2, 2]
            and int_list(node, "strides") == [2, 2] and not any(int_list(node, "pads") or [])
            and (int_list(node, "dilations") or [1, 1]) == [1, 1] and not node.attr("ceil_mode", 0)
            and auto_pad_of(node) in ("NOTSET", "VALID"))


def flatten_order(graph, node) -> np.ndarray | None:
    """For a Dense/Gemm (weights constant, A not transposed) fed by a Flatten (or Reshape) of
    a [N, C, *spatial] tensor: the input indices in hls4ml io_parallel's order (spatial
    positions outer, channels inner); None for any other node."""
    if node.op_type not in ("Dense", "Gemm") or node.attr("transA", 0) or not graph.is_weight(node.inputs[1]):
        return None
    src = graph.producer(node.inputs[0])
    if src is None or src.op_type not in ("Flatten", "Reshape"):
        return None
    shape = graph.tensors[src.inputs[0]].shape
    out = graph.tensors[node.inputs[0]].shape
    if len(shape) < 3 or len(out) != 2 or out[0] != shape[0] or src.attr("axis", 1) != 1:
        return None
    c, spatial = shape[1], shape[2:]
    idx = np.arange(int(np.prod(shape[1:]))).reshape((c,) + tuple(spatial))
    return np.moveaxis(idx, 0, -1).reshape(-1)


def _param_axis(op_type: str, slot: int, ndim: int) -> int:
    """The axis a block format groups a parameter along: the dot-product (reduction) axis."""
    if op_type == "Conv" and slot == 1:
        return 1          # W [M, C/g, *k]: block over input channels
    if op_type in ("Dense", "MatMul") and slot == 1:
        return 0          # W [K, N]
    return -1


def tensor_formats(graph, precision) -> dict[str, Any]:
    """The number format every tensor of `graph` carries under `precision` (None: exact or
    integer), found by one run on zeros: formats depend on the ops and the config only."""
    emu = emulator_for(graph, precision)
    zeros = {t.name: np.zeros(t.shape, t.dtype) for t in graph.inputs}
    emu.run(zeros, fetch=[t for t in graph.tensors if not graph.is_weight(t)])
    return dict(emu.last_formats)


def emulator_for(graph, precision) -> Emulator:
    """The graph's cached Emulator for this config (graphs are immutable, configs are values).
    A format string is looked up as given first: parsing it and keying its config cost 10 us
    ("hls4ml:..." 57) on every `Graph.run(x, precision="...")`, a twentieth of a batch-1 LSTM."""
    by_text = graph.__dict__.setdefault("_emulators_by_text", {}) if isinstance(precision, str) else None
    if by_text is not None and precision in by_text:
        return by_text[precision]
    config = PrecisionConfig.coerce(precision)
    key = repr(sorted(_flatten(config.to_dict())))
    cache = graph.__dict__.setdefault("_emulators", {})
    if key not in cache:
        cache[key] = Emulator(graph, config)
    if by_text is not None:
        by_text[precision] = cache[key]
    return cache[key]


def _flatten(d: Mapping, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield (f"{prefix}{k}", v)


__all__ = ["Emulator", "LayerStats", "CastContext", "emulator_for"]


# ---- accuracy and overflow report ---------------------------------------------------------

@dataclass
class LayerReport:
    node: str
    op_type: str
    layer: str             # the short layer name (conveyor.graph.names)
    result_format: str
    min: float
    max: float
    overflow: int | None
    saturated: int | None
    accum_format: str | None   # a lossy accumulator's format (None: exact or none)
    accum_overflow: int        # its overflow events: bias, product and running-sum casts
    accum_saturating: bool     # True: those events saturated (SAT modes), else they wrapped
    accum_casts: int           # casts the accumulator made
    table_lookups: int         # table look-ups (activation / softmax tables)
    table_clamped: int         # of those, inputs outside the table (index clamped, address cast overflowed)
    state_casts: int           # a recurrent layer's state casts
    state_overflow: int        # of those, values outside the state's format
    max_abs_error: float   # against the float reference, same inputs
    rms_rel_error: float   # RMS error / RMS of the float values


@dataclass
class QuantReport:
    precision: str
    samples: int
    layers: list[LayerReport]
    accuracy: float | None
    float_accuracy: float | None

    def as_dict(self) -> dict:
        return {
            "precision": self.precision, "samples": self.samples, "accuracy": self.accuracy,
            "float_accuracy": self.float_accuracy, "layers": [dict(layer.__dict__) for layer in self.layers],
        }


def quantization_report(graph, precision, inputs: np.ndarray, labels: np.ndarray | None = None,
                        batch: int = 256, on_batch=None) -> QuantReport:
    """Run `inputs` (one array, samples along axis 0, each of the graph's input shape) in
    float and under `precision`; per layer the range the result cast saw, overflows,
    saturations and error against float; top-1 accuracy when `labels` are given.
    `on_batch(n)` is called after every batch of n samples (a progress bar)."""
    if len(graph.inputs) != 1:
        raise ModelError(f"graph '{graph.name}': the report takes single-input graphs, this one has {graph.input_names}")
    inputs = np.asarray(inputs)
    shape = graph.inputs[0].shape
    # samples along axis 0: each a slice of the graph's leading (batch) axis, or, for a graph whose
    # leading axis is not a batch of 1 (a sequence [T, 1, F]), whole inputs stacked
    if inputs.shape[1:] != shape[1:] and not (len(shape) and shape[0] != 1 and inputs.shape[1:] == shape):
        raise ModelError(f"inputs have sample shape {inputs.shape[1:]}, graph '{graph.name}' expects {shape[1:]}")
    config = PrecisionConfig.coerce(precision)
    layer_nodes = [n for n in graph.nodes]
    first_out = {n.name: next(o for o in n.outputs if o) for n in layer_nodes}
    err_max = {n.name: 0.0 for n in layer_nodes}
    err_sq = {n.name: 0.0 for n in layer_nodes}
    ref_sq = {n.name: 0.0 for n in layer_nodes}
    stats: dict[str, LayerStats] = {}
    correct = correct_float = 0
    out_name = graph.output_names[0]
    for start in range(0, len(inputs), batch):
        chunk = inputs[start:start + batch]
        fetch = list(first_out.values())
        ref = graph.run(chunk.astype(graph.inputs[0].dtype), fetch=fetch)  # batched: conveyor.graph.batch
        got, st = emulator_for(graph, config).run(chunk, fetch=fetch, observe=True)
        for name, s in st.items():
            merge_stats(stats, s)
        for n in layer_nodes:
            t = first_out[n.name]
            r, q = ref[t].astype(np.float64), got[t].astype(np.float64)
            if r.size:
                err_max[n.name] = max(err_max[n.name], float(np.max(np.abs(q - r))))
                err_sq[n.name] += float(np.sum((q - r) ** 2))
                ref_sq[n.name] += float(np.sum(r ** 2))
        if labels is not None:
            lab = np.asarray(labels[start:start + batch])
            correct += int(np.sum(np.argmax(got[out_name].reshape(len(chunk), -1), axis=1) == lab))
            correct_float += int(np.sum(np.argmax(ref[out_name].reshape(len(chunk), -1), axis=1) == lab))
        if on_batch is not None:
            on_batch(len(chunk))
    layers = []
    for n in layer_nodes:
        s = stats.get(n.name)
        layers.append(LayerReport(
            node=n.name, op_type=n.op_type, layer=graph.layer_names[n.name],
            result_format=s.result_format if s else "(passes its input's format)",
            min=s.min if s else float("nan"), max=s.max if s else float("nan"),
            overflow=s.overflow if s else 0, saturated=s.saturated if s else 0,
            accum_format=s.accum_format if s else None,
            accum_overflow=(s.accum_bias_overflow + s.accum_product_overflow + s.accum_sum_overflow) if s else 0,
            accum_saturating=bool(s and s.accum_saturating),
            accum_casts=s.accum_casts if s else 0,
            table_lookups=s.table_lookups if s else 0, table_clamped=s.table_clamped if s else 0,
            state_casts=s.state_casts if s else 0, state_overflow=s.state_overflow if s else 0,
            max_abs_error=err_max[n.name],
            rms_rel_error=float(np.sqrt(err_sq[n.name] / ref_sq[n.name])) if ref_sq[n.name] > 0 else 0.0,
        ))
    n_samples = len(inputs)
    return QuantReport(
        precision=precision if isinstance(precision, str) else str(config.default) if not (config.roles or config.op_types or config.nodes) else repr(config.to_dict()),
        samples=n_samples, layers=layers,
        accuracy=correct / n_samples if labels is not None else None,
        float_accuracy=correct_float / n_samples if labels is not None else None,
    )


def merge_stats(stats: dict[str, LayerStats], s: LayerStats) -> None:
    if s.node not in stats:
        stats[s.node] = LayerStats(**s.as_dict())
        return
    t = stats[s.node]
    t.count += s.count
    for k in ("accum_bias_overflow", "accum_product_overflow", "accum_sum_overflow", "accum_casts",
              "table_lookups", "table_clamped", "state_casts", "state_overflow"):
        setattr(t, k, getattr(t, k) + getattr(s, k))
    t.accum_format = t.accum_format or s.accum_format
    t.accum_saturating = t.accum_saturating or s.accum_saturating
    t.min, t.max = min(t.min, s.min), max(t.max, s.max)
    if t.overflow is None or s.overflow is None:
        t.overflow = t.saturated = None
    else:
        t.overflow += s.overflow
        t.saturated += s.saturated
