"""CPU and GPU cost: a roofline from the catalog, or a measured per-layer profile.

Roofline (Williams, Waterman, Patterson, CACM 2009): time = max(FLOPs / attainable
FLOP/s, bytes / memory bandwidth), plus a fixed per-layer dispatch overhead.
"""

from __future__ import annotations

from conveyor.cost.work import LayerWork
from conveyor.hardware.specs import Host

#: Share of peak FLOP/s a framework reaches on one inference at batch 1. Assumption: batch-1
#: convolutions on CPUs reach roughly a third of peak, GPUs far less (small kernels).
ATTAINABLE_SHARE = {"cpu": 0.35, "gpu": 0.15}
#: Per-layer dispatch: a framework op call on a CPU, a kernel launch on a GPU. Assumption.
DISPATCH_S = {"cpu": 5e-6, "gpu": 10e-6}


def roofline_seconds(work: LayerWork, host: Host) -> float:
    if work.is_movement:
        return 0.0
    flops = 2 * work.macs + work.elem_ops
    compute = flops / (host.peak_flops * ATTAINABLE_SHARE[host.kind])
    traffic = work.weight_bytes + work.in_bytes + work.out_bytes
    memory = traffic / host.mem_bandwidth_Bps
    return max(compute, memory) + DISPATCH_S[host.kind]
