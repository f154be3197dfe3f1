"""The multi-FPGA AlexNet paper's optimisation steps, modeled: alexnet-conv over 4 Zynq-7035
boards joined by Serial RapidIO, each step planned by conveyor and simulated at saturation
(`conveyor.simulate`), next to the paper's measured figures. Everything conveyor prints
here is MODELED (cost model + conveyor/hardware/power.yaml); the paper's design was a
hand-written accelerator, not an hls4ml/FINN-style dataflow design, so compare the ratios
between steps rather than the absolute figures.

    PYTHONPATH=$PWD python benchmarks/paper_table.py
"""

from __future__ import annotations

import dataclasses

from conveyor import zoo
from conveyor.hardware import Cluster
from conveyor.planner import plan as make_plan
from conveyor.sim import simulate

# 8-bit: at 16 bits the equal and dichotomy splits do not fit the boards' BRAM (README)
PRECISION = "ap_fixed<8,3>"

# The paper's measured figures per step (as quoted in issue 14): img/s, latency ms, W, img/J.
# None: not quoted for that step.
PAPER = {
    "traditional split": (7.73, 517.7, 8.57, 0.90),
    "dichotomy split": (9.09, None, None, None),
    "link as own stage": (9.48, None, None, None),
    "parallel engines": (24.4, 328.0, 13.18, 1.85),
}


def link_as_stage(plan):
    """The same split with every board-to-board link as a pipeline stage of its own."""
    stages = []
    for st in plan.stages:
        if st.link_out is not None and st.link_out.mode == "merged":
            st = dataclasses.replace(st, stage_time_s=st.compute_interval_s / (1 + len(st.replicas)),
                                     link_out=dataclasses.replace(st.link_out, mode="stage"))
        stages.append(st)
    interval = max([s.stage_time_s for s in stages] + [s.link_out.seconds for s in stages
                                                         if s.link_out is not None and s.link_out.mode == "stage"])
    return dataclasses.replace(plan, stages=tuple(stages), interval_s=interval, method=plan.method + "+link-stage")


def steps():
    g = zoo.build("alexnet-conv")
    cluster = Cluster.uniform("zynq7035", 4, link="srio-10g")
    eq = make_plan(g, cluster, precision=PRECISION, method="equal")
    di = make_plan(g, cluster, precision=PRECISION, method="dichotomy")
    joint = make_plan(g, cluster, precision=PRECISION)
    return [("traditional split", eq), ("dichotomy split", di), ("link as own stage", link_as_stage(di)),
            ("parallel engines", None), ("conveyor joint", joint)]


def _f(x, fmt="{:.3g}"):
    return "-" if x is None else fmt.format(x)


def main() -> None:
    print(f"alexnet-conv on 4 x Zynq-7035 (srio-10g), {PRECISION}; conveyor columns MODELED, paper columns measured")
    head = f"{'step':<20} {'img/s':>9} {'x':>6} {'lat ms':>8} {'W':>7} {'img/J':>7} {'x':>6} | paper {'img/s':>6} {'x':>6} {'lat ms':>7} {'W':>6} {'img/J':>6}"
    print(head)
    print("-" * len(head))
    prev = prev_p = prev_e = None
    for name, plan in steps():
        paper = PAPER.get(name, (None,) * 4)
        xp = paper[0] / prev_p if paper[0] and prev_p else None
        if plan is None:
            print(f"{name:<20} {'(in every row: each board tuned, see below)':>53} | {_f(paper[0]):>11} {_f(xp, '{:.2f}'):>6} "
                  f"{_f(paper[1]):>7} {_f(paper[2]):>6} {_f(paper[3]):>6}")
            prev_p = paper[0] or prev_p
            continue
        r = simulate(plan, rate=2 / plan.interval_s, requests=20_000)   # saturated: 2x what it can take
        lat = simulate(plan, rate=0.1 / plan.interval_s, requests=200)  # batch-1 latency: light load
        x = r.throughput_per_s / prev if prev else None
        xe = r.inferences_per_j / prev_e if prev_e else None
        print(f"{name:<20} {r.throughput_per_s:>9.1f} {_f(x, '{:.2f}'):>6} {lat.latency_p50_s * 1e3:>8.2f} "
              f"{r.average_power_w:>7.2f} {r.inferences_per_j:>7.1f} {_f(xe, '{:.2f}'):>6} | {_f(paper[0]):>11} "
              f"{_f(xp, '{:.2f}'):>6} {_f(paper[1]):>7} {_f(paper[2]):>6} {_f(paper[3]):>6}")
        prev, prev_e, prev_p = r.throughput_per_s, r.inferences_per_j, paper[0] or prev_p
    print("conveyor's baselines already unroll each board's loops (planner/baselines.py, tune_split): the paper's"
          " 'parallel engines' step is inside every conveyor row, so it has no row of its own.")


if __name__ == "__main__":
    main()
