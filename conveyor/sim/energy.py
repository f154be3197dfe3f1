"""Modeled power of a plan under a simulated load: FPGA boards from the family coefficients
(conveyor/hardware/power.yaml), transceiver links from their module power, host CPUs/GPUs
from TDP x utilisation (the catalog's tdp_w). All modeled."""

from __future__ import annotations

from conveyor.hardware.power import load_power
from conveyor.plan import Plan


def _catalog(plan: Plan) -> dict:
    return plan.cluster.get("catalog", {}) if isinstance(plan.cluster, dict) else {}


def _board_of(plan: Plan, device: str) -> str | None:
    for d in plan.cluster.get("devices", ()):
        if d.get("name") == device:
            return d.get("board") or d.get("host")
    return None


BRAM18K_BYTES = 18 * 1024 // 8  # one 18 Kb block RAM


def fpga_resources(st, part: dict) -> dict:
    """The resources a stage's board runs on. A dataflow stage lists them; an overlay stage
    lists only its on-chip bytes, its engine being the whole part's multipliers (the cost
    model's `overlay_multipliers`: UTILIZATION_CAP of the DSPs) with its weights in block RAM."""
    if st.arch != "overlay":
        return st.resources
    from conveyor.cost.fpga import UTILIZATION_CAP

    return {"dsp": int(float(part.get("dsp", 0)) * UTILIZATION_CAP),
            "bram18k": -(-int(st.resources.get("onchip_bytes", 0)) // BRAM18K_BYTES)}


def power_model(plan: Plan, rows) -> dict[str, float]:
    """Modeled average power (W) per device and link of `plan`, given the simulated stage
    rows (their utilisation is each stage's activity). Devices without figures are left out."""
    families, link_w = load_power()
    cat = _catalog(plan)
    boards, parts, hosts = cat.get("boards", {}), cat.get("parts", {}), cat.get("hosts", {})
    util = {r.stage: r.utilisation for r in rows if r.kind == "compute"}
    out: dict[str, float] = {}
    for i, st in enumerate(plan.stages):
        activity = util.get(i, 0.0)
        for device in (st.device,) + tuple(st.replicas):
            name = _board_of(plan, device)
            if st.device_kind == "fpga" and name in boards:
                board = boards[name]
                part = parts.get(board.get("part"), {})
                fam = families.get(part.get("family"))
                if fam is not None:
                    clock = float(board.get("clock_hz") or part.get("clock_hz") or 0.0)
                    out[device] = fam.board_w(fpga_resources(st, part), clock, activity)
            elif name in hosts and hosts[name].get("tdp_w"):
                out[device] = float(hosts[name]["tdp_w"]) * activity
        link = st.link_out
        if link is not None and link.link in link_w:
            # two modules, busy the share of time the link carries data
            links_cat = cat.get("links", {})
            bw = float(links_cat.get(link.link, {}).get("bandwidth_Bps") or 0.0)
            busy = min(1.0, activity * (link.bytes / bw) / max(st.stage_time_s, 1e-30)) if bw else 1.0
            out[f"link {link.src}->{link.dst}"] = 2 * link_w[link.link] * busy
    return out


def assumed_figures(plan: Plan) -> list[str]:
    """'family figure' for every assumed power figure (power.yaml) a board of `plan` uses."""
    families, _ = load_power()
    cat = _catalog(plan)
    boards, parts = cat.get("boards", {}), cat.get("parts", {})
    used = set()
    for st in plan.stages:
        if st.device_kind != "fpga":
            continue
        for device in (st.device,) + tuple(st.replicas):
            board = boards.get(_board_of(plan, device), {})
            family = parts.get(board.get("part"), {}).get("family")
            if family in families:
                used.update(f"{family} {f}" for f in families[family].assumed)
    return sorted(used)
