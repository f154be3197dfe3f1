"""`conveyor.plan(graph, cluster, ...)`: the planner's front door, returning a Plan."""

from __future__ import annotations

from conveyor.errors import PlanError
from conveyor.numerics.config import PrecisionConfig
from conveyor.plan import LinkPlan, Plan, StagePlan
from conveyor.planner.baselines import BASELINES, run_baseline
from conveyor.planner.chain import ChainProblem, chain_problem
from conveyor.planner.joint import LINK_MODES, JointResult, plan_joint

OBJECTIVES = ("throughput", "latency")
DEFAULT_PRECISION = "ap_fixed<16,6>"


def plan(graph, cluster, *, precision=DEFAULT_PRECISION, objective: str = "throughput",
         method: str = "conveyor") -> Plan:
    """Plan `graph` on `cluster`'s FPGA boards (dataflow engines, chain order).

    objective "throughput": the smallest pipeline interval, then the lowest latency;
    "latency": the lowest batch-1 latency over all feasible intervals.
    method "conveyor" (the joint planner) or a baseline: "equal", "dichotomy", "greedy".
    """
    if objective not in OBJECTIVES:
        raise PlanError(f"objective '{objective}'; accepted: {', '.join(OBJECTIVES)}")
    config = PrecisionConfig.coerce(precision)
    prob = chain_problem(graph, cluster, config)
    if method == "conveyor":
        result = plan_joint(prob) if objective == "throughput" else _min_latency(prob)
    elif method in BASELINES:
        result = run_baseline(prob, method)
    else:
        raise PlanError(f"method '{method}'; accepted: conveyor, {', '.join(BASELINES)}")
    return to_plan(graph, cluster, config, objective, method, prob, result)


def _min_latency(prob: ChainProblem) -> JointResult:
    """Latency falls as engines get faster, until the boards run out of room: scan the
    feasible intervals from the throughput optimum upward and keep the lowest latency."""
    from conveyor.planner.joint import _Tables, probe

    best = plan_joint(prob, LINK_MODES)
    t = _Tables(prob)
    candidates = sorted({x for board in t.secs for layer in board for x in layer if x >= best.interval_s})
    for T in candidates[:400]:
        r = probe(prob, t, T, LINK_MODES)
        if r is not None and r.latency_s < best.latency_s:
            best = r
    return best


def to_plan(graph, cluster, config: PrecisionConfig, objective: str, method: str,
            prob: ChainProblem, result: JointResult) -> Plan:
    stages = []
    for b in result.boards:
        device = cluster.device(prob.devices[b.board])
        names = prob.layer_names[b.start:b.end]
        options = [prob.options[b.board][i][k] for i, k in zip(range(b.start, b.end), b.option_index)]
        clock = prob.clocks[b.board]
        link = None
        if b.link_out_mode is not None:
            cut = prob.cuts[b.end - 1]
            link = LinkPlan(
                src=prob.devices[b.board], dst=prob.devices[b.board + 1], link=prob.link_names[b.board],
                tensors=cut.tensors, bytes=cut.bytes, seconds=b.link_out_s, mode=b.link_out_mode,
                buffer_bram18k=b.buffer_bram18k,
            )
        stages.append(StagePlan(
            device=device.name, device_kind=device.kind, arch="dataflow", layers=tuple(names),
            parallelism={n: o.parallelism for n, o in zip(names, options)},
            layer_interval_s={n: o.interval_cycles / clock for n, o in zip(names, options)},
            compute_interval_s=b.compute_interval_s, stage_time_s=b.stage_time_s, latency_s=b.latency_s,
            resources=b.resources.as_dict(), budget=prob.budgets[b.board].as_dict(),
            power_w=device.board.power_w, link_out=link,
        ))
    notes = (
        "modeled: every time, resource and power figure is predicted by the cost model "
        "(docs/cost-model.md), not measured on a board",
        f"budgets are {int(100 * 0.85)} % of each part's resources (routing headroom)",
    )
    return Plan(
        model=graph.name, fingerprint=graph.fingerprint(), cluster=cluster.to_dict(),
        precision=config.to_dict(), objective=objective, stages=tuple(stages),
        interval_s=result.interval_s, latency_s=result.latency_s, method=method, notes=notes,
    )
