"""`conveyor.plan(graph, cluster, ...)`: the planner's front door, returning a Plan."""

from __future__ import annotations

from conveyor.errors import PlanError
from conveyor.numerics.config import PrecisionConfig
from conveyor.plan import LinkPlan, Plan, StagePlan
from conveyor.planner.baselines import BASELINES, run_baseline
from conveyor.planner.chain import ChainProblem, chain_problem
from conveyor.planner.joint import LINK_MODES, JointResult, _Tables, plan_joint, probe, spend_leftover

OBJECTIVES = ("throughput", "latency", "edge-cloud")
DEFAULT_PRECISION = "ap_fixed<16,6>"


def plan(graph, cluster, *, precision=DEFAULT_PRECISION, objective: str = "throughput",
         method: str = "conveyor", arch: str = "dataflow", archs: dict | None = None,
         profiles: dict | None = None, cuts: list[str] | None = None, offchip: bool = True,
         measured=None) -> Plan:
    """Plan `graph` on `cluster`'s devices, in the cluster's chain order.

    objective "throughput": the smallest pipeline interval, then the lowest latency;
    "latency": the lowest batch-1 latency over all feasible intervals;
    "edge-cloud": the cluster is (edge device, cloud device) joined by an uplink; the split
    point of least end-to-end latency, Neurosurgeon's question (either side may be empty).
    method "conveyor" (the joint planner), a baseline: "equal", "dichotomy", "greedy", or
    "manual": the stages end after the nodes named in `cuts` (as hls4ml's multi-graph split
    takes them from the user), each device then tuned on its own.
    FPGA boards run `arch` ("dataflow" or "overlay") unless `archs` names another per device;
    CPUs/GPUs use the roofline, or the measured `profiles[device]`.
    FPGA boards with DDR/HBM may stream a stage's weights from it (pinned on chip when that
    is as good); `offchip=False` forbids it. `measured` (cost.measured.MeasuredCosts, e.g.
    codegen.measured.measured_costs(DIR)): synthesized per-layer figures in place of the model's.
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"objective '{objective}'; accepted: {', '.join(OBJECTIVES)}")
    config = PrecisionConfig.coerce(precision)
    kwargs = dict(arch=arch, archs=archs, profiles=profiles, offchip=offchip, measured=measured)
    prob = chain_problem(graph, cluster, config, **kwargs)
    if cluster.topology == "switch" and objective != "edge-cloud" and method == "conveyor":
        prob = _best_order(graph, cluster, config, prob, objective, kwargs)
    if objective == "edge-cloud":
        from conveyor.planner.edge import edge_cloud

        if method != "conveyor":
            raise PlanError("the edge-cloud objective has no baselines; use method 'conveyor'")
        result = edge_cloud(graph, prob)
    elif method == "conveyor":
        try:
            result = plan_joint(prob) if objective == "throughput" else _min_latency(prob)
        except PlanError as e:
            raise PlanError(f"{e}{_what_would_fit(prob)}{_memory_that_fits(prob)}"
                            f"{_precision_that_fits(graph, cluster, config, prob, kwargs)}") from None
    elif method in BASELINES:
        result = run_baseline(prob, method)
    elif method == "manual":
        from conveyor.planner.evaluate import tune_split

        result = tune_split(prob, _manual_ranges(prob, cuts or []))
    else:
        raise PlanError(f"method '{method}'; accepted: conveyor, manual, {', '.join(BASELINES)}")
    return to_plan(graph, cluster, config, objective, method, prob, result)


#: The most boards `_what_would_fit` considers.
MAX_BOARDS = 256


def _what_would_fit(prob: ChainProblem) -> str:
    """When every device is the same kind: the smallest number of them that holds the model
    (each count checked by the planner itself, one probe at a generous interval)."""
    import dataclasses

    from conveyor.planner.joint import _upper_bound

    if len(set(prob.signatures)) != 1 or prob.links[0] is None:
        return ""

    def grown(n: int) -> ChainProblem:
        rep = lambda xs: tuple(xs[:1]) * n
        links = rep(prob.links)[:-1] + (None,)
        return dataclasses.replace(
            prob, devices=tuple(f"{prob.devices[0]}#{i}" for i in range(n)), clocks=rep(prob.clocks),
            budgets=rep(prob.budgets), options=rep(prob.options), link_seconds=rep(prob.link_seconds)[:-1]
            + (tuple(float("inf") for _ in prob.cuts),), link_names=rep(prob.link_names), archs=rep(prob.archs),
            signatures=rep(prob.signatures), specs=rep(prob.specs), links=links,
            stream_options=rep(prob.stream_options), stream_memory=rep(prob.stream_memory),
            stream_Bps=rep(prob.stream_Bps), stream_bytes=rep(prob.stream_bytes), stream_reserve=rep(prob.stream_reserve),
            spill_options=rep(prob.spill_options))

    def fits(n: int) -> bool:
        return _fits(grown(n))

    lo, hi = prob.k, prob.k + 1        # lo does not fit
    while not fits(hi):
        lo, hi = hi, hi * 2
        if hi > MAX_BOARDS:
            return f"; not even {MAX_BOARDS} such devices would hold it"
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    return f"; {hi} such devices ({prob.specs[0].name}) would hold it"


def _memory_that_fits(prob: ChainProblem) -> str:
    """When the boards' DDR/HBM capacity is what binds (the model fits with unbounded memory):
    the least capacity, in whole MiB, with which every board would hold it (each board's memory
    raised to it; each capacity checked by the planner, one probe at a generous interval;
    feasibility only grows with capacity, so bisection finds the least)."""
    import dataclasses

    kinds = {m for m in prob.stream_memory if m}
    if not kinds:
        return ""
    mib = 1 << 20

    def at(capacity: int) -> bool:
        return _fits(dataclasses.replace(prob, stream_bytes=tuple(
            max(c, capacity) if m else c for c, m in zip(prob.stream_bytes, prob.stream_memory))))

    top = sum(max((o.offchip_bytes for layer in table for o in layer), default=0)
              for table in (*prob.stream_options, *(prob.spill_options or ())) if table is not None)
    hi = -(-max(top, 1) // mib) * 2 * prob.m   # every layer's most traffic, with room to spare
    if not at(hi * mib):
        return ""   # memory is not what binds
    lo = max(prob.stream_bytes) // mib   # the boards' own memory: does not fit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if at(mid * mib) else (mid, hi)
    names = " or ".join(sorted("HBM" if k == "hbm" else "DDR" for k in kinds))
    return f"; boards with >= {hi:,} MiB of {names} would hold it"


#: Uniform formats `_precision_that_fits` tries, widest first (hls4ml's usual widths).
NARROWER = ("ap_fixed<12,4>", "ap_fixed<8,3>", "ap_fixed<6,2>", "ap_fixed<4,2>")


def _fits(prob: ChainProblem) -> bool:
    from conveyor.planner.joint import _upper_bound

    t = _Tables(prob)
    return probe(prob, t, _upper_bound(prob, t), LINK_MODES) is not None


def _precision_that_fits(graph, cluster, config: PrecisionConfig, prob: ChainProblem, kwargs) -> str:
    """The widest uniform format narrower than the model's widest weights with which these
    devices hold the model (each checked by the planner, one probe at a generous interval)."""
    widest = max((w.weight_bits for w in prob.works if w.params), default=0)
    for fmt in NARROWER:
        bits = int(fmt.split("<")[1].split(",")[0])
        if bits >= widest:
            continue
        try:
            if _fits(chain_problem(graph, cluster, PrecisionConfig.coerce(fmt), **kwargs)):
                return f"; at {fmt} these devices would hold it"
        except PlanError:
            continue
    return f"; not even at {NARROWER[-1]} would these devices hold it" if widest > 4 else ""


def _manual_ranges(prob: ChainProblem, cuts: list[str]) -> list[tuple[int, int]]:
    index = {n: i for i, n in enumerate(prob.layer_names)}
    bad = [c for c in cuts if c not in index]
    if bad:
        raise PlanError(f"cuts name nodes {bad} that the model does not have")
    ends = sorted(index[c] + 1 for c in cuts)
    if len(set(ends)) != len(ends) or (ends and ends[-1] >= prob.m):
        raise PlanError("cuts must name distinct nodes before the last one")
    if len(ends) + 1 > prob.k:
        raise PlanError(f"{len(ends)} cuts make {len(ends) + 1} stages; the cluster has {prob.k} devices")
    bounds = [0] + ends + [prob.m]
    return [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


#: Above this many distinct device orders the switch search falls back to a heuristic.
MAX_ORDERS = 720


def _best_order(graph, cluster, config, prob: ChainProblem, objective: str, kwargs) -> ChainProblem:
    """On a switch any device order is a valid chain. Try every distinct order (devices with
    the same signature are interchangeable) when there are at most MAX_ORDERS of them — exact
    up to 6 all-different devices, or 8 with two kinds; else keep the heuristic order: the
    most capable devices first (DSPs for FPGAs, peak FLOP/s for hosts)."""
    import itertools
    import math
    from collections import Counter

    counts = Counter(prob.signatures)
    n_orders = math.factorial(prob.k) // math.prod(math.factorial(c) for c in counts.values())
    if n_orders <= 1:
        return prob
    if n_orders > MAX_ORDERS:
        ranked = sorted(prob.devices, key=lambda n: -_capability(cluster.device(n)))
        return chain_problem(graph, cluster, config, order=tuple(ranked), **kwargs)
    by_sig: dict[str, list[str]] = {}
    for name, sig in zip(prob.devices, prob.signatures):
        by_sig.setdefault(sig, []).append(name)
    best_prob, best_key = prob, None
    for sig_order in set(itertools.permutations(prob.signatures)):
        pools = {sig: list(names) for sig, names in by_sig.items()}
        order = tuple(pools[sig].pop(0) for sig in sig_order)
        candidate = chain_problem(graph, cluster, config, order=order, **kwargs)
        try:
            r = plan_joint(candidate) if objective == "throughput" else _min_latency(candidate)
        except PlanError:
            continue
        key = (r.interval_s, r.latency_s) if objective == "throughput" else (r.latency_s, r.interval_s)
        if best_key is None or key < best_key:
            best_prob, best_key = candidate, key
    return best_prob


def _capability(device) -> float:
    return device.board.part.dsp if device.kind == "fpga" else device.host.peak_flops / 1e9


def _min_latency(prob: ChainProblem) -> JointResult:
    """Latency falls as engines get faster, until the boards run out of room: scan the
    feasible intervals from the throughput optimum upward and keep the lowest latency."""
    front = pareto_front(prob)
    return min(front, key=lambda r: (r.latency_s, r.interval_s))


def pareto_front(prob: ChainProblem, max_points: int = 400) -> list[JointResult]:
    """Plans no other plan beats on both interval and latency: from the throughput optimum,
    probe every distinct engine interval above it (thinned to `max_points`) and keep the
    non-dominated results, fastest interval first."""
    best = plan_joint(prob, LINK_MODES)
    t = _Tables(prob)
    candidates = sorted({x for tm in t.modes() for board in tm.secs for layer in board for x in layer
                         if x > best.interval_s})
    if len(candidates) > max_points:
        step = len(candidates) / max_points
        candidates = [candidates[int(i * step)] for i in range(max_points)] + [candidates[-1]]
    results = [best]
    for T in candidates:
        r = probe(prob, t, T, LINK_MODES)
        if r is not None:
            results.append(spend_leftover(prob, t, r))
    front: list[JointResult] = []
    for r in sorted(results, key=lambda r: (r.interval_s, r.latency_s)):
        if not front or r.latency_s < front[-1].latency_s:
            front.append(r)
    return front


def to_plan(graph, cluster, config: PrecisionConfig, objective: str, method: str,
            prob: ChainProblem, result: JointResult) -> Plan:
    stages = []
    for b in result.boards:
        device = cluster.device(prob.devices[b.board])
        arch = prob.archs[b.board]
        last = b.board + b.replicas - 1       # a replicated stage sends on from its last device
        replicas = tuple(prob.devices[b.board + 1:last + 1])
        names = prob.layer_names[b.start:b.end]
        if b.split:
            from conveyor.planner.split import split_options

            options = [split_options(prob.works[i], prob.specs[b.board], b.replicas)[k]
                       for i, k in zip(range(b.start, b.end), b.option_index)]
        else:
            table = (prob.spill_options if b.activations_in != "on_chip" else
                     prob.options if b.weights_in == "on_chip" else prob.stream_options)
            options = [table[b.board][i][k] for i, k in zip(range(b.start, b.end), b.option_index)]
        clock = prob.clocks[b.board]
        link = None
        if b.link_out_mode is not None:
            cut = prob.cuts[b.end - 1]
            link = LinkPlan(
                src=prob.devices[last], dst=prob.devices[last + 1], link=prob.link_names[last],
                tensors=cut.tensors, bytes=cut.bytes, seconds=b.link_out_s, mode=b.link_out_mode,
                buffer_bram18k=b.buffer_bram18k,
            )
        if arch == "dataflow":
            resources, budget = b.resources.as_dict(), prob.budgets[b.board].as_dict()
        else:  # sequential devices: weight bytes against on-chip (overlay) or host memory
            key = "onchip_bytes" if arch == "overlay" else "memory_bytes"
            shared_tiles = prob.stream_reserve[b.board] if b.weights_in != "on_chip" and prob.stream_reserve else 0
            resources, budget = {key: b.resources.bram18k + shared_tiles}, {key: prob.budgets[b.board].bram18k}
        acts = _activations(prob, b, options, arch)
        power = device.board.power_w if device.kind == "fpga" else device.host.tdp_w
        power = None if power is None else power * b.replicas
        stages.append(StagePlan(
            device=device.name, device_kind=device.kind, arch=arch, layers=tuple(names),
            parallelism={n: o.parallelism for n, o in zip(names, options)},
            layer_interval_s={n: o.interval_cycles / clock for n, o in zip(names, options)},
            compute_interval_s=b.compute_interval_s, stage_time_s=b.stage_time_s, latency_s=b.latency_s,
            resources=resources, budget=budget, power_w=power, link_out=link, replicas=replicas, split=b.split,
            weights_in={n: b.weights_in if o.offchip_bytes > o.act_offchip_bytes else "on_chip"
                        for n, o in zip(names, options)},
            # each device of the stage takes one item per replicas x interval
            weight_bandwidth_Bps={n: (o.offchip_bytes - o.act_offchip_bytes) / (result.interval_s * b.replicas)
                                  for n, o in zip(names, options)},
            activations_in={n: where for n, (where, _) in zip(names, acts)},
            activation_bandwidth_Bps={n: moved / (result.interval_s * b.replicas) for n, (_, moved) in zip(names, acts)},
            measured={n: o.measured for n, o in zip(names, options) if o.measured},
        ))
    n_cal = sum(v.startswith("calibrated:") for s in stages for v in s.measured.values())
    n_meas = sum(len(s.measured) for s in stages) - n_cal
    notes = (
        "modeled: every time, resource and power figure is predicted by the cost model "
        "(docs/cost-model.md), not measured on a board" if not n_meas + n_cal else
        f"measured: {n_meas} of {sum(len(s.layers) for s in stages)} layers' time and resources are "
        f"synthesis figures, {n_cal} are the model calibrated by their layer's synthesized engine "
        "(stages[].measured names each report); the rest, and power, are modeled",
        f"budgets are {int(100 * 0.85)} % of each part's resources (routing headroom)",
    )
    return Plan(
        model=graph.name, fingerprint=graph.fingerprint(), cluster=cluster.to_dict(),
        precision=config.to_dict(), objective=objective, stages=tuple(stages),
        interval_s=result.interval_s, latency_s=result.latency_s, method=method, notes=notes,
    )


def _activations(prob: ChainProblem, b, options, arch: str) -> list[tuple[str, int]]:
    """Per layer of stage b: (where its activation buffer lives, bytes it moves there per item).
    Dataflow: the spilled options' traffic; overlay: the activations too big for its on-chip
    memory (cost.fpga.overlay_activation_bytes, counted in its layer times)."""
    from conveyor.cost.fpga import overlay_activation_bytes, weight_memory

    if arch == "overlay":
        mem = weight_memory(prob.specs[b.board])
        got = [overlay_activation_bytes(prob.works[i], prob.specs[b.board]) for i in range(b.start, b.end)]
        return [(mem[0] if mem and x else "on_chip", x) for x in got]
    return [(b.activations_in if o.act_offchip_bytes else "on_chip", o.act_offchip_bytes) for o in options]
