"""Running a graph on a batch it was not built for.

A graph's shapes are static (from_torch fixes them to the example's batch), but users
feed many samples. `graph.run` accepts, for every input of shape S:

- an array of shape (N,) + S: N items of the graph's own input shape ("stacked");
  the outputs come back with the same leading N;
- an array of shape (M,) + S[1:]: the leading (batch) dimension replaced by M, as
  `with_batch(M)` would take it.

Both run as ONE execution of the graph rebuilt at the larger leading dimension (every
kernel is vectorised over it), when that is the same computation as running the items
one by one. It is not when an op mixes items along axis 0 (a Softmax over axis 0, an
LSTM whose axis 0 is time, a Reshape fixed to batch 1); so the rebuilt graph must (a)
scale the leading dimension of every tensor computed from the inputs and nothing else,
and (b) agree in float with item-by-item runs on a random probe of two items. A graph
that fails either runs item by item (correct, slower). Both checks run once per graph
and batch size (cached), never per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from conveyor.errors import ModelError

_CACHE_SIZE = 4  # rebuilt graphs kept per graph (each holds its own emulators)


@dataclass(frozen=True)
class BatchedFeeds:
    """How a batch of feeds maps onto the graph: `items` executions of `unit` leading rows each."""

    feeds: Mapping[str, np.ndarray]
    items: int            # N (stacked) or M / b0 (replaced leading dimension)
    stacked: bool         # True: feeds were (N,) + S; outputs get a leading N back


def classify(graph, feeds: Mapping[str, np.ndarray]) -> BatchedFeeds | None:
    """None when `feeds` have the graph's own shapes; else how they are batched."""
    kinds, items = set(), set()
    for t in graph.inputs:
        v = np.asarray(feeds[t.name])
        if tuple(v.shape) == t.shape:
            kinds.add("exact")
        elif t.shape and v.ndim == len(t.shape) + 1 and tuple(v.shape[1:]) == t.shape:
            kinds.add("stacked")
            items.add(v.shape[0])
        elif t.shape and v.ndim == len(t.shape) and tuple(v.shape[1:]) == t.shape[1:] \
                and v.shape[0] % t.shape[0] == 0 and v.shape[0] > 0:
            kinds.add("leading")
            items.add(v.shape[0] // t.shape[0])
        else:
            raise ModelError(
                f"input '{t.name}': expected shape {t.shape}, got {tuple(v.shape)} (graph '{graph.name}' also "
                f"takes N items of that shape, (N,) + {t.shape}, or a batch (M,) + {t.shape[1:]})")
    if kinds == {"exact"}:
        return None
    if len(kinds) != 1 or len(items) != 1:
        raise ModelError(f"graph '{graph.name}': feeds mix batch sizes or layouts "
                         f"{ {k: tuple(np.shape(v)) for k, v in feeds.items()} }; give every input the same batch")
    return BatchedFeeds(feeds, items.pop(), kinds == {"stacked"})


def run_batched(graph, batch: BatchedFeeds, precision=None, fetch: Sequence[str] | None = None,
                observe: bool = False, emulator_of=None):
    """(outputs, stats or None) of running `batch` on `graph`, as N item-wise runs would give:
    in float without `precision`, else bit-accurately (`emulator_of(g)`: the Emulator to run
    graph `g` with; default `emulator_for(g, precision)`)."""
    if precision is not None and emulator_of is None:
        from conveyor.graph.quantized import emulator_for

        memo = {}  # one look-up per graph for the whole batch (the config's key costs ~1 ms)

        def emulator_of(g):
            if id(g) not in memo:
                memo[id(g)] = (g, emulator_for(g, precision))
            return memo[id(g)][1]
    wanted = tuple(fetch) if fetch is not None else graph.output_names
    if precision is not None and not observe:
        step = _fixed_chunk(graph, batch.items)
        if step < batch.items:
            return _run_chunks(graph, batch, step, precision, wanted, emulator_of), None
    big = batched_graph(graph, batch.items)
    if big is not None:
        flat = {k: _flatten_items(np.asarray(v), batch.stacked) for k, v in batch.feeds.items()}
        out, stats = _run_one(big, flat, emulator_of, wanted, observe)
        return {k: _unbatch(graph, big, k, v, batch) for k, v in out.items()}, stats
    return _run_item_by_item(graph, batch, emulator_of, wanted, observe)


def batched_graph(graph, items: int):
    """The graph rebuilt at `items` times its leading dimension, or None when that would not
    compute the items independently (see the module docstring). Cached on the graph."""
    if items == 1:
        return graph
    cache = graph.__dict__.setdefault("_batched", {})
    if items not in cache:
        if len(cache) >= _CACHE_SIZE:
            cache.pop(next(iter(cache)))
        cache[items] = _build_separable(graph, items)
    return cache[items]


# ---- helpers ---------------------------------------------------------------------------

#: a bit-accurate batch runs in chunks of items whose largest float64 tensor stays about
#: this size: in cache, and below glibc's largest mmap threshold (32 MiB), so that the
#: kernels' arrays are recycled instead of mapped and page-faulted afresh on every op
_FIXED_CHUNK_BYTES = 8 << 20


def _fixed_chunk(graph, items: int) -> int:
    """Items per chunk of a bit-accurate batched run (`items` when it needs no chunks)."""
    per_item = max((8 * int(np.prod(t.shape, dtype=np.int64)) for t in graph.tensors.values()
                    if t.shape is not None and not graph.is_weight(t.name)), default=0)
    step = max(1, _FIXED_CHUNK_BYTES // max(1, per_item))
    if step >= items:
        return items
    n = -(-items // step)
    return -(-items // n)  # chunks of (nearly) equal size: at most two batched graphs


def _run_chunks(graph, batch: BatchedFeeds, step: int, precision, wanted, emulator_of) -> dict:
    """`run_batched` on chunks of `step` items, outputs concatenated along axis 0 (items
    are independent: what `batched_graph` proves before it batches). Constant outputs (no
    batch axis) come back once."""
    units = {}
    for t in graph.inputs:
        units[t.name] = 1 if batch.stacked else t.shape[0]
    parts = []
    for i in range(0, batch.items, step):
        j = min(batch.items, i + step)
        feeds = {k: np.asarray(v)[i * units[k]:j * units[k]] for k, v in batch.feeds.items()}
        out, _ = run_batched(graph, BatchedFeeds(feeds, j - i, batch.stacked), precision, wanted,
                             emulator_of=emulator_of)
        parts.append(out)
    big = batched_graph(graph, step)
    axes = big.__dict__.get("_batch_axes", {}) if big is not None else {}
    return {k: np.concatenate([p[k] for p in parts]) if (big is None or k in axes) else parts[0][k]
            for k in wanted}


def _build_separable(graph, items: int):
    if any(not t.shape for t in graph.inputs):
        return None
    try:
        big = _with_leading(graph, items)
    except ModelError:
        return None  # a shape fixed to the graph's batch that no rule scales, or an op that mixes items
    probe = _with_leading(graph, 2) if items != 2 else big
    if not _float_probe_agrees(graph, probe):
        return None
    return big


#: recurrent ops: (slots of initial states and sequence lengths, their batch axis per layout)
_RECURRENT = {"LSTM": (4, 5, 6), "GRU": (4, 5), "RNN": (4, 5)}


def _with_leading(graph, items: int):
    """`graph` with every input's leading dimension times `items`, rebuilt node by node: each
    computed tensor must scale exactly one axis (its batch axis, recorded in the result's
    `_batch_axes`; a Transpose or a time-major LSTM moves it off axis 0). Constants that carry
    the batch are adapted to it: a Reshape's target scales the entry its input's batch axis
    maps to, and a recurrent op's constant initial states / sequence lengths repeat per item.
    A ModelError when a tensor does not scale so."""
    from conveyor.graph.ir import Graph, _infer, load_time_values
    from conveyor.graph.tensor import Tensor

    inputs = [Tensor(t.name, (t.shape[0] * items,) + t.shape[1:], t.dtype) for t in graph.inputs]
    tensors: dict = {t.name: t for t in inputs}
    weights = dict(graph.weights)
    for k, v in weights.items():
        tensors[k] = Tensor(k, tuple(int(d) for d in np.shape(v)), np.asarray(v).dtype)
    known = dict(weights)
    axes = {t.name: 0 for t in inputs}
    nodes = []
    for n in graph.nodes:
        n = _adapt(graph, n, axes, items, weights, tensors, known)
        for out, (shape, dtype) in zip(n.outputs, _infer(n, tensors, known)):
            if out:
                tensors[out] = Tensor(out, tuple(int(d) for d in shape), np.dtype(dtype))
        for out, value in zip(n.outputs, load_time_values(n, tensors, known) or ()):
            if out:
                known[out] = value
        if any(t in axes for t in n.inputs if t):
            for out in n.outputs:
                if out:
                    axes[out] = _scaled_axis(graph.tensors[out].shape, tensors[out].shape, items, n)
        nodes.append(n)
    big = Graph.build(graph.name, nodes, inputs, graph.output_names, weights)
    big.__dict__["_batch_axes"] = axes
    return big


def _scaled_axis(small: tuple, big: tuple, items: int, node) -> int:
    diff = [i for i, (a, b) in enumerate(zip(small, big)) if a != b]
    if len(small) != len(big) or len(diff) != 1 or big[diff[0]] != small[diff[0]] * items:
        raise ModelError(f"{node}: output shape {big} at {items} items is not {small} with one axis scaled")
    return diff[0]


def _adapt(graph, n, axes, items: int, weights: dict, tensors: dict, known: dict):
    """`n` with the constants that carry the batch replaced by their batched versions."""
    from dataclasses import replace

    from conveyor.graph.tensor import Tensor

    def swap(slot: int, value: np.ndarray):
        name = f"{n.inputs[slot]}::batch{items}::{n.name}"
        weights[name] = known[name] = value
        tensors[name] = Tensor(name, tuple(int(d) for d in value.shape), value.dtype)
        ins = list(n.inputs)
        ins[slot] = name
        return replace(n, inputs=tuple(ins))

    if n.op_type == "Reshape" and len(n.inputs) > 1 and n.inputs[0] in axes and graph.is_weight(n.inputs[1]):
        a = axes[n.inputs[0]]
        s_in, s_out = graph.tensors[n.inputs[0]].shape, graph.tensors[n.outputs[0]].shape
        prefix = int(np.prod(s_in[:a], dtype=np.int64))
        for j in range(len(s_out)):
            if int(np.prod(s_out[:j], dtype=np.int64)) == prefix and s_out[j] == s_in[a]:
                target = np.array(s_out, dtype=np.asarray(graph.weights[n.inputs[1]]).dtype)
                target[j] *= items
                return swap(1, target)
        return n
    if n.op_type in _RECURRENT and n.inputs and n.inputs[0] in axes:
        batch_axis = 0 if n.attr("layout", 0) else 1  # of initial_h / initial_c: [dirs, batch, hidden]
        for slot in _RECURRENT[n.op_type]:
            if slot < len(n.inputs) and n.inputs[slot] and graph.is_weight(n.inputs[slot]):
                v = np.asarray(graph.weights[n.inputs[slot]])
                ax = 0 if slot == 4 else batch_axis  # sequence_lens: [batch]
                n = swap(slot, np.tile(v, tuple(items if i == ax else 1 for i in range(v.ndim))))
        return n
    return n


def scale_reshapes(graph, items: int):
    """Exporters fold `x.view(x.size(0), -1)` into a constant shape [b0, -1]: such a Reshape
    (its target's leading entry equal to its input's leading dimension) scales with the batch.
    Whether the result computes the items independently is checked afterwards, as always."""
    from dataclasses import replace

    live, weights, nodes = _computed(graph), dict(graph.weights), []
    for n in graph.nodes:
        shape_in = n.inputs[1] if n.op_type == "Reshape" and len(n.inputs) > 1 else ""
        if shape_in and graph.is_weight(shape_in) and n.inputs[0] in live:
            target = np.asarray(graph.weights[shape_in])
            lead = graph.tensors[n.inputs[0]].shape[:1]
            if target.ndim == 1 and target.size and lead and int(target[0]) == lead[0]:
                scaled = target.copy()
                scaled[0] *= items
                name = f"{shape_in}::batch{items}::{n.name}"
                weights[name] = scaled
                n = replace(n, inputs=(n.inputs[0], name) + tuple(n.inputs[2:]))
        nodes.append(n)
    return nodes, weights


def _computed(graph) -> set[str]:
    """Tensors whose values depend on a graph input (cached on the graph)."""
    if "_computed" not in graph.__dict__:
        live = set(graph.input_names)
        for n in graph.nodes:
            if any(t in live for t in n.inputs if t):
                live.update(o for o in n.outputs if o)
        graph.__dict__["_computed"] = frozenset(live)
    return graph.__dict__["_computed"]


def _unbatch(graph, big, name: str, v: np.ndarray, batch: BatchedFeeds) -> np.ndarray:
    """A tensor of the batched graph as the item-by-item runs give it: (N,) + its shape
    (stacked), or the items' values concatenated along axis 0."""
    axes = big.__dict__.get("_batch_axes", {})
    if name not in axes:  # a constant: the same for every item
        return v
    small = graph.tensors[name].shape
    a = axes[name]
    if a:  # items along axis a (each its own slab of small[a]): move them to the front
        v = np.moveaxis(v.reshape(small[:a] + (batch.items, small[a]) + small[a + 1:]), a, 0)
        return v if batch.stacked else v.reshape((batch.items * small[0],) + small[1:])
    return v.reshape((batch.items,) + small) if batch.stacked else v


def _float_probe_agrees(graph, probe) -> bool:
    rng = np.random.default_rng(12)
    feeds = {t.name: (rng.standard_normal((2,) + t.shape).astype(t.dtype) if t.dtype.kind == "f"
                      else np.zeros((2,) + t.shape, t.dtype)) for t in graph.inputs}
    try:
        together = probe.run({k: v.reshape((-1,) + v.shape[2:]) for k, v in feeds.items()})
        together = {k: _unbatch(graph, probe, k, np.asarray(v), BatchedFeeds(feeds, 2, True))
                    for k, v in together.items()}
        alone = [graph.run({k: v[i] for k, v in feeds.items()}) for i in range(2)]
    except Exception:  # noqa: BLE001 - any failure means: do not batch, run item by item
        return False
    for name in graph.output_names:
        a = np.concatenate([np.asarray(r[name], np.float64).reshape(-1) for r in alone])
        b = np.asarray(together[name], np.float64).reshape(-1)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-5 * (1.0 + float(np.max(np.abs(a), initial=0)))):
            return False
    return True


def _flatten_items(v: np.ndarray, stacked: bool) -> np.ndarray:
    return v.reshape((-1,) + v.shape[2:]) if stacked else v


def _run_one(graph, feeds, emulator_of, wanted, observe):
    if emulator_of is None:
        return graph.run(feeds, fetch=wanted), None
    return emulator_of(graph).run(feeds, fetch=wanted, observe=observe)


def _run_item_by_item(graph, batch: BatchedFeeds, emulator_of, wanted, observe):
    from conveyor.graph.quantized import merge_stats

    per_item = {}
    for k, v in batch.feeds.items():
        v = np.asarray(v)
        per_item[k] = v if batch.stacked else v.reshape((batch.items, -1) + v.shape[1:])
    outs, stats = [], {} if observe else None
    for i in range(batch.items):
        out, st = _run_one(graph, {k: v[i] for k, v in per_item.items()}, emulator_of, wanted, observe)
        outs.append(out)
        for s in (st or {}).values():
            merge_stats(stats, s)
    if batch.stacked:
        return {k: np.stack([o[k] for o in outs]) for k in wanted}, stats
    return {k: np.concatenate([o[k] for o in outs]) for k in wanted}, stats
