"""Per-hop overhead of the local executor: a chain of pass-through stages.

    python -m conveyor.runtime.local_bench [--stages 4] [--n 2000] [--sizes 1024,1048576]

One request in flight at a time; the round trip through S stages crosses S+1 channels
(parent -> stage 0 -> ... -> stage S-1 -> parent). Each stage copies its input to its
output (a pass-through "Identity" run by the `passthrough` backend: no compute), so the
time is the channels' and processes' own. Reports p50/p99 of the round trip and of the
round trip per hop, next to the in-process copy of the same payload as a floor.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from conveyor.runtime.device import BACKENDS, Device
from conveyor.runtime.stages import StageSpec


class PassThroughDevice(Device):
    """Each output of the stage's Identity nodes is its input, unchanged (no copy)."""

    backend = "passthrough"

    def _load(self, spec) -> None:
        self._pairs = [(n.outputs[0], n.inputs[0]) for n in spec.graph.nodes]

    def _run(self, inputs):
        return {out: inputs[src] for out, src in self._pairs}


BACKENDS.setdefault("passthrough", PassThroughDevice)


def passthrough_specs(stages: int, nbytes: int, dtype=np.float32) -> list[StageSpec]:
    """`stages` pass-through stages carrying one `nbytes` array ("t0" -> "t1" -> ...)."""
    from conveyor.graph.ir import Graph
    from conveyor.graph.tensor import Node, Tensor

    n = max(1, nbytes // np.dtype(dtype).itemsize)
    specs = []
    for i in range(stages):
        src, dst = f"t{i}", f"t{i + 1}"
        g = Graph.build(f"pass[{i}]", [Node(f"id{i}", "Identity", (src,), (dst,))],
                        [Tensor(src, (1, n), np.dtype(dtype))], [dst], {})
        specs.append(StageSpec(index=i, device=f"host{i}", backend="passthrough", graph=g, precision=None,
                               input_formats={src: None}, needs=(src,), forwards=(dst,)))
    return specs


def measure(stages: int = 4, nbytes: int = 1024, n: int = 2000, warmup: int = 200, **options) -> dict:
    """Round trips of one request at a time through `stages` pass-through stages."""
    import threading

    from conveyor.runtime.local import LocalExecutor

    specs = passthrough_specs(stages, nbytes)
    x = np.random.default_rng(0).standard_normal((1, max(1, nbytes // 4))).astype(np.float32)
    done = threading.Event()
    box: list = []

    def deliver(rid, result):
        box[:] = [result]  # keep only the last: holding every result would time page faults
        done.set()

    ex = LocalExecutor(**options)
    ex.start(specs, deliver, False)
    try:
        times = []
        for i in range(warmup + n):
            done.clear()
            t0 = time.perf_counter()
            ex.send(i, {"t0": x})
            done.wait()
            t = time.perf_counter() - t0
            if isinstance(box[-1], BaseException):
                raise box[-1]
            if i >= warmup:
                times.append(t)
        assert np.array_equal(box[-1][f"t{stages}"], x)
    finally:
        ex.close()
    t = np.asarray(times)
    hops = stages + 1
    copy = []
    for _ in range(200):
        t0 = time.perf_counter()
        np.copyto(np.empty_like(x), x)
        copy.append(time.perf_counter() - t0)
    return {"stages": stages, "hops": hops, "bytes": int(x.nbytes), "n": n,
            "round_trip_p50_s": float(np.percentile(t, 50)), "round_trip_p99_s": float(np.percentile(t, 99)),
            "hop_p50_s": float(np.percentile(t, 50)) / hops, "hop_p99_s": float(np.percentile(t, 99)) / hops,
            "copy_p50_s": float(np.median(copy))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=4)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--sizes", default="1024,1048576")
    ap.add_argument("--start-method", default=None)
    args = ap.parse_args(argv)
    for size in (int(s) for s in args.sizes.split(",")):
        r = measure(args.stages, size, args.n, start_method=args.start_method)
        print(f"{r['bytes']:>9} B  {r['stages']} stages / {r['hops']} hops:  round trip p50 "
              f"{r['round_trip_p50_s'] * 1e3:.3f} ms  p99 {r['round_trip_p99_s'] * 1e3:.3f} ms;  per hop p50 "
              f"{r['hop_p50_s'] * 1e3:.3f} ms  p99 {r['hop_p99_s'] * 1e3:.3f} ms  (one copy: "
              f"{r['copy_p50_s'] * 1e6:.0f} us)")


if __name__ == "__main__":
    main()
