"""A plan as the simulator sees it: servers in series, each (interval, latency) seconds,
served by n replicas round robin — the same timing the paced runtime gives the plan
(`conveyor.runtime.stages.stage_timing`, `replica_specs`, `route`), so that the two agree."""

from __future__ import annotations

from dataclasses import dataclass

from conveyor.plan import Plan
from conveyor.runtime.stages import stage_timing


@dataclass(frozen=True)
class Server:
    """One timed step of an item's path. A replica takes a new item every `interval_s`
    (items overlap inside it when `latency_s` exceeds that) and hands each one on
    `latency_s` after it started. With n replicas, item k goes to replica k % n, and each
    replica's interval is n times the stage's effective one (as in the runtime)."""

    name: str
    stage: int            # plan stage index; -1 for the host's ingress / egress
    kind: str             # compute | link | host
    interval_s: float     # per replica
    latency_s: float
    replicas: int = 1


def servers(plan: Plan, ingress_s: float = 0.0, egress_s: float = 0.0) -> tuple[Server, ...]:
    """The servers of `plan` in path order, host ingress first and egress last when given."""
    out = []
    if ingress_s > 0:
        out.append(Server("host ingress", -1, "host", ingress_s, ingress_s))
    for i, st in enumerate(plan.stages):
        n = 1 + len(st.replicas)
        timing = stage_timing(st)
        (interval, latency), *rest = timing
        out.append(Server(st.device, i, "compute", interval * n, latency, n))
        for li, ll in rest:  # the outgoing link as a pipeline stage of its own (per replica, as the runtime)
            link = st.link_out
            out.append(Server(f"link {link.src}->{link.dst}", i, "link", li, ll, n))
    if egress_s > 0:
        out.append(Server("host egress", -1, "host", egress_s, egress_s))
    return tuple(out)
