"""The graph IR: a typed, shaped, topologically ordered DAG of Nodes.

A `Graph` is immutable: passes and cuts build a new one with `Graph.build`, which
sorts the nodes, checks that every tensor is defined once, and infers every
tensor's static shape and dtype from the op shape rules in `conveyor.ops`.
"""

from __future__ import annotations

import hashlib
import heapq
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from conveyor import ops
from conveyor.errors import ModelError
from conveyor.graph.tensor import Node, Tensor
from conveyor.ops.registry import ValueInfo


@dataclass(frozen=True, eq=False)
class Graph:
    name: str
    nodes: tuple[Node, ...]
    #: every named value: inputs, weights, intermediates, outputs
    tensors: Mapping[str, Tensor]
    #: constant values (initializers, folded constants), by tensor name
    weights: Mapping[str, np.ndarray]
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    #: what a quantized model's own quantizers say (frontends.qdq.ModelPrecision), else None
    model_precision: Any = None

    # ---- construction ----------------------------------------------------------------

    @classmethod
    def build(
        cls,
        name: str,
        nodes: Iterable[Node],
        inputs: Sequence[Tensor],
        outputs: Sequence[str],
        weights: Mapping[str, np.ndarray],
    ) -> "Graph":
        """Validate, sort and shape a graph. Weights no node uses are dropped."""
        nodes = list(nodes)
        _check_unique([n.name for n in nodes], "node name")
        _check_unique([i.name for i in inputs], "graph input")
        ordered = _topological_order(nodes, {i.name for i in inputs} | set(weights))
        used = {t for n in ordered for t in n.inputs if t}
        weights = {k: np.asarray(v) for k, v in weights.items() if k in used or k in outputs}
        tensors: dict[str, Tensor] = {i.name: i for i in inputs}
        for k, v in weights.items():
            tensors[k] = Tensor(k, tuple(int(d) for d in v.shape), v.dtype)
        known = dict(weights)  # weights plus the values of shape arithmetic on them
        for node in ordered:
            for out, (shape, dtype) in zip(node.outputs, _infer(node, tensors, known)):
                if out:
                    tensors[out] = Tensor(out, tuple(int(d) for d in shape), np.dtype(dtype))
            for out, value in zip(node.outputs, load_time_values(node, tensors, known) or ()):
                if out:
                    known[out] = value
        missing = [o for o in outputs if o not in tensors]
        if missing:
            raise ModelError(f"graph '{name}': outputs {missing} are produced by no node, input or weight")
        return cls(name, tuple(ordered), tensors, weights, tuple(i.name for i in inputs), tuple(outputs))

    # ---- views -----------------------------------------------------------------------

    @property
    def inputs(self) -> list[Tensor]:
        return [self.tensors[n] for n in self.input_names]

    @property
    def outputs(self) -> list[Tensor]:
        return [self.tensors[n] for n in self.output_names]

    @cached_property
    def _node_by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    @cached_property
    def _consumers(self) -> dict[str, list[Node]]:
        out: dict[str, list[Node]] = {}
        for n in self.nodes:
            for t in dict.fromkeys(t for t in n.inputs if t):
                out.setdefault(t, []).append(n)
        return out

    def node(self, name: str) -> Node:
        """The node with this node name or layer name (`fc1` for `/fc1/Gemm`)."""
        from conveyor.graph.names import resolve

        found = resolve(self, name)
        if found is None:
            raise ModelError(f"graph '{self.name}' has no node '{name}' (by node name or layer name)") from None
        return self._node_by_name[found]

    @property
    def layer_names(self) -> dict[str, str]:
        """node name -> the short, unique layer name users see (conveyor.graph.names)."""
        from conveyor.graph.names import layer_names

        return layer_names(self)

    def producer(self, tensor: str) -> Node | None:
        return self._producers.get(tensor)

    def consumers(self, tensor: str) -> list[Node]:
        return list(self._consumers.get(tensor, ()))

    def is_weight(self, tensor: str) -> bool:
        return tensor in self.weights

    def fingerprint(self) -> str:
        """sha256 of structure and weights: names the exact model a Plan was made for."""
        h = hashlib.sha256()
        for t in self.inputs:
            h.update(repr((t.name, t.shape, str(t.dtype))).encode())
        for n in self.nodes:
            h.update(repr((n.op_type, n.inputs, n.outputs, sorted((k, _attr_repr(v)) for k, v in n.attrs.items()), n.opset)).encode())
        for k in sorted(self.weights):
            w = np.ascontiguousarray(self.weights[k])
            h.update(k.encode() + str(w.dtype).encode() + repr(w.shape).encode() + w.tobytes())
        h.update(repr(self.output_names).encode())
        return h.hexdigest()

    def with_batch(self, n: int) -> "Graph":
        """The same graph with every input's leading (batch) dimension set to `n`."""
        if n < 1:
            raise ModelError(f"batch size must be >= 1, got {n}")
        inputs = [Tensor(t.name, (n,) + t.shape[1:], t.dtype) if t.shape else t for t in self.inputs]
        try:
            return Graph.build(self.name, self.nodes, inputs, self.output_names, self.weights)
        except ModelError as e:
            leads = {t.shape[0] for t in self.inputs if t.shape}
            lead = leads.pop() if len(leads) == 1 else 0
            if lead and n % lead == 0:  # a Reshape the exporter fixed to the batch (x.view(x.size(0), -1))
                from conveyor.graph.batch import scale_reshapes

                nodes, weights = scale_reshapes(self, n // lead)
                try:
                    return Graph.build(self.name, nodes, inputs, self.output_names, weights)
                except ModelError:
                    pass
            raise ModelError(f"graph '{self.name}' cannot run at batch {n} (a shape is fixed to batch 1?): {e}") from None

    def subgraph(self, nodes: Iterable[Node | str], name: str | None = None) -> "Graph":
        from conveyor.graph.cut import subgraph

        return subgraph(self, nodes, name)

    def __repr__(self) -> str:
        ins = ", ".join(str(t) for t in self.inputs)
        outs = ", ".join(str(t) for t in self.outputs)
        return f"Graph('{self.name}', {len(self.nodes)} nodes, inputs [{ins}], outputs [{outs}])"

    # ---- execution -------------------------------------------------------------------

    @cached_property
    def _last_use(self) -> dict[str, int]:
        last: dict[str, int] = {}
        for i, n in enumerate(self.nodes):
            for t in n.inputs:
                if t:
                    last[t] = i
        return last

    def run(
        self,
        feeds: Mapping[str, np.ndarray] | np.ndarray,
        precision=None,
        *,
        fetch: Sequence[str] | None = None,
    ) -> dict[str, np.ndarray]:
        """Execute the graph; returns the graph outputs (or the tensors named in `fetch`).

        `feeds` is a dict by input name, or one array for a single-input graph. Each input
        may also carry a batch: N items of its shape, (N,) + shape (outputs then lead with N),
        or its leading dimension replaced, (M,) + shape[1:] (conveyor.graph.batch). Without
        `precision` this is the float reference; with one (a format string such as
        "ap_fixed<16,6>", a config dict or a `PrecisionConfig`) every node computes
        bit-accurately in its formats and the values come back as float64, exactly.
        """
        batch = self._batch_of(feeds)
        if batch is not None:
            from conveyor.graph.batch import run_batched

            return run_batched(self, batch, precision, fetch)[0]
        if precision is not None:
            from conveyor.graph.quantized import emulator_for

            return emulator_for(self, precision).run(feeds, fetch=fetch)[0]
        wanted = tuple(fetch) if fetch is not None else self.output_names
        unknown = [t for t in wanted if t not in self.tensors]
        if unknown:
            raise ModelError(f"graph '{self.name}' has no tensors {unknown} to fetch")
        env: dict[str, np.ndarray | None] = dict(self.weights)
        env.update(self._bind_feeds(feeds))
        env[""] = None  # an omitted optional input
        plan, lost = self._float_plan
        keep = set(wanted).difference(self.output_names)  # graph outputs are never freed
        if keep and not lost.isdisjoint(keep):  # a tensor the fused plan never makes or overwrites
            plan = self._float_plan_unfused
        for node, kernel, inputs, outputs, frees in plan:
            try:
                results = kernel([env[t] for t in inputs])
            except ModelError:
                raise
            except Exception as e:  # a kernel bug: keep its type, say where it happened
                if hasattr(e, "add_note"):  # Python >= 3.11
                    e.add_note(f"while running {node} of graph '{self.name}'")
                raise
            for t, value in zip(outputs, results):
                if t:
                    env[t] = value
            for t in frees:
                if t not in keep:
                    del env[t]
        return {t: env[t] for t in wanted}

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_float_plan", "_float_plan_unfused"):  # closures over prepared weights: rebuilt on the first run
            state.pop(key, None)
        return state

    @cached_property
    def _float_plan_unfused(self) -> list[tuple]:
        """Per node: (node, kernel, inputs, outputs, run-time tensors last used here, graph
        outputs aside). The kernel
        is the op's `prepare`d one (weights laid out once; the graph is immutable) or its `run`."""
        plan = []
        last_use = self._last_use
        kept = set(self.weights).union(self.output_names)  # never freed
        for i, node in enumerate(self.nodes):
            opdef = ops.get(node.op_type, node)
            kernel = None
            if opdef.prepare is not None:
                ins = [ValueInfo(self.tensors[t].shape, self.tensors[t].dtype, self.weights.get(t)) if t else None
                       for t in node.inputs]
                kernel = opdef.prepare(node, ins)
            if kernel is None and node.op_type in _STATIC_RESHAPES and node.outputs[0]:
                # the output's shape is static: a reshape (a view), whatever the op's shape inputs say
                kernel = (lambda args, _shape=self.tensors[node.outputs[0]].shape: (args[0].reshape(_shape),))
            if kernel is None:
                kernel = (lambda args, _run=opdef.run, _node=node: _run(_node, args))
            frees = tuple(dict.fromkeys(t for t in node.inputs if t and last_use.get(t) == i and t not in kept))
            plan.append((node, kernel, node.inputs, node.outputs, frees))
        return plan

    @cached_property
    def _float_plan(self) -> tuple[list[tuple], frozenset]:
        """The unfused plan with fusions and in-place steps (conveyor.graph.float_plan), the
        same values. Returns (plan, the tensors it never makes or overwrites): a run that
        fetches one of those uses the unfused plan."""
        from conveyor.graph import float_plan

        return float_plan.build(self, self._float_plan_unfused)

    def _batch_of(self, feeds):
        """None when `feeds` have the inputs' own shapes, else how they are batched."""
        from conveyor.graph.batch import classify

        return classify(self, self._feed_dict(feeds))

    def _feed_dict(self, feeds) -> Mapping[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            if len(self.input_names) != 1:
                raise ModelError(
                    f"graph '{self.name}' has {len(self.input_names)} inputs {list(self.input_names)}; "
                    "pass a dict by input name"
                )
            feeds = {self.input_names[0]: feeds}
        missing = [n for n in self.input_names if n not in feeds]
        extra = [n for n in feeds if n not in self.input_names]
        if missing or extra:
            raise ModelError(
                f"graph '{self.name}': feeds {sorted(feeds)} do not match inputs {list(self.input_names)}"
                + (f" (missing {missing})" if missing else "") + (f" (unknown {extra})" if extra else "")
            )
        return feeds

    def _bind_feeds(self, feeds, cast_floats: bool = True) -> dict[str, np.ndarray]:
        feeds = self._feed_dict(feeds)
        bound = {}
        for t in self.inputs:
            value = np.asarray(feeds[t.name])
            if tuple(value.shape) != t.shape:
                raise ModelError(f"input '{t.name}': expected shape {t.shape}, got {tuple(value.shape)}")
            if value.dtype != t.dtype:
                # Only within a kind (float64 -> float32): never silently turn ints into floats.
                if value.dtype.kind != t.dtype.kind:
                    raise ModelError(f"input '{t.name}': expected dtype {t.dtype}, got {value.dtype}")
                if cast_floats or value.dtype.kind != "f":
                    value = value.astype(t.dtype)
            bound[t.name] = value
        return bound


# ---- helpers ---------------------------------------------------------------------------

#: ops that only reshape their first input (its values in order) to the static output shape
_STATIC_RESHAPES = frozenset({"Reshape", "Squeeze", "Unsqueeze", "Flatten"})

def _attr_repr(v) -> str:
    if isinstance(v, np.ndarray):
        return f"array({v.dtype},{v.shape},{hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()})"
    return repr(v)


def _check_unique(names: list[str], what: str) -> None:
    seen = set()
    for n in names:
        if n in seen:
            raise ModelError(f"duplicate {what} '{n}'; every {what} must be unique")
        seen.add(n)


def _topological_order(nodes: list[Node], available: set[str]) -> list[Node]:
    """Kahn's algorithm, stable in the given order; rejects cycles and undefined tensors."""
    producer: dict[str, Node] = {}
    for n in nodes:
        for o in n.outputs:
            if not o:
                continue
            if o in producer or o in available:
                raise ModelError(f"tensor '{o}' is defined twice (by {n} and before); tensors are single-assignment")
            producer[o] = n
    for n in nodes:
        for t in n.inputs:
            if t and t not in producer and t not in available:
                raise ModelError(f"{n} reads tensor '{t}', which no node, graph input or weight defines")
    pending = {n.name: sum(1 for t in set(n.inputs) if t in producer) for n in nodes}
    readers: dict[str, list[Node]] = {}
    for n in nodes:
        for t in set(n.inputs):
            if t in producer:
                readers.setdefault(t, []).append(n)
    position = {n.name: i for i, n in enumerate(nodes)}
    ready = [(position[n.name], n.name) for n in nodes if pending[n.name] == 0]
    heapq.heapify(ready)
    by_name = {n.name: n for n in nodes}
    order: list[Node] = []
    while ready:
        _, name = heapq.heappop(ready)
        n = by_name[name]
        order.append(n)
        for o in n.outputs:
            for r in readers.get(o, ()):
                pending[r.name] -= 1
                if pending[r.name] == 0:
                    heapq.heappush(ready, (position[r.name], r.name))
    if len(order) != len(nodes):
        stuck = [n.name for n in nodes if pending[n.name] > 0]
        raise ModelError(f"graph has a cycle through nodes {stuck[:10]}")
    return order


#: constant inputs up to this many elements are evaluated while shapes are inferred (shape
#: arithmetic is tiny; larger constant expressions are left to `passes.fold_constants`)
_PROPAGATE_ELEMENTS = 1 << 16


def load_time_values(node: Node, tensors: Mapping[str, Tensor], known: Mapping[str, np.ndarray],
                     limit: int | None = _PROPAGATE_ELEMENTS) -> tuple[np.ndarray, ...] | None:
    """`node`'s outputs when they are known before run time: from its inputs' static shapes
    (Shape, Size), or from constant inputs (up to `limit` elements in all; None: any size)."""
    opdef = ops.get(node.op_type, node)
    if opdef.from_shapes is not None:
        ins = [ValueInfo(tensors[t].shape, tensors[t].dtype, known.get(t)) if t else None for t in node.inputs]
        return tuple(np.asarray(v) for v in opdef.from_shapes(node, ins))
    if not all(not t or t in known for t in node.inputs):
        return None
    if limit is not None and sum(known[t].size for t in node.inputs if t) > limit:
        return None
    return tuple(np.asarray(v) for v in opdef.run(node, [known[t] if t else None for t in node.inputs]))


def _infer(node: Node, tensors: dict[str, Tensor], weights: Mapping[str, np.ndarray]):
    opdef = ops.get(node.op_type, node)
    opdef.check(node)
    ins = [
        ValueInfo(tensors[t].shape, tensors[t].dtype, weights.get(t)) if t else None
        for t in node.inputs
    ]
    try:
        outs = opdef.infer(node, ins)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{node}: cannot infer output shapes from inputs "
                         f"{[None if i is None else i.shape for i in ins]}: {type(e).__name__}: {e}") from e
    named = [o for o in node.outputs]
    if len(named) > len(outs):
        raise ModelError(f"{node} names {len(named)} outputs; {node.op_type} has at most {len(outs)}")
    return outs[: len(named)]
