"""The multi-FPGA AlexNet paper's optimisation steps, modeled: alexnet-conv over 4 Zynq-7035
boards joined by Serial RapidIO, each step planned by conveyor and simulated at saturation
(`conveyor.simulate`), next to the paper's measured figures. Everything conveyor prints
here is MODELED (cost model + conveyor/hardware/power.yaml); the paper's design was a
hand-written accelerator, not an hls4ml/FINN-style dataflow design, so compare the ratios
between steps rather than the absolute figures.

    PYTHONPATH=$PWD python benchmarks/paper_table.py
"""

from __future__ import annotations

from conveyor import zoo
from conveyor.hardware import Cluster
from conveyor.numerics.config import PrecisionConfig
from conveyor.planner.baselines import dichotomy_split, equal_split
from conveyor.planner.chain import chain_problem
from conveyor.planner.evaluate import tune_split
from conveyor.planner.joint import plan_joint
from conveyor.planner.make_plan import to_plan
from conveyor.sim import simulate

# 8-bit: at 16 bits the boards' on-chip memory cannot hold these splits' weights
PRECISION = "ap_fixed<8,3>"

# The paper's measured figures per step (as quoted in issue 14): img/s, latency ms, W, img/J.
# None: not quoted for that step.
PAPER = {
    "traditional split": (7.73, 517.7, 8.57, 0.90),
    "dichotomy split": (9.09, None, None, None),
    "link as own stage": (9.48, None, None, None),
    "parallel engines": (24.4, 328.0, 13.18, 1.85),
}


def steps():
    """(step, plan) for each of the paper's steps and conveyor's joint plan. Read from the
    last step's name, "parallel engines inside each board": before it each board ran one
    engine over its layers in turn, conveyor's "overlay" architecture (one engine of the
    whole part's multipliers). "Parallel engines"
    gives every layer of the same split its own engine (conveyor's "dataflow"), each tuned
    on its own; conveyor's joint plan then chooses split and engines together."""
    g = zoo.build("alexnet-conv")
    cluster = Cluster.uniform("zynq7035", 4, link="srio-10g")
    config = PrecisionConfig.coerce(PRECISION)
    one_engine = chain_problem(g, cluster, config, arch="overlay")
    engines = chain_problem(g, cluster, config, arch="dataflow")

    def as_plan(prob, result, method):
        return to_plan(g, cluster, config, "throughput", method, prob, result)
    ranges = dichotomy_split(one_engine)
    return [
        ("traditional split", as_plan(one_engine, tune_split(one_engine, equal_split(one_engine), "merged"),
                                      "equal, one engine a board, links merged")),
        ("dichotomy split", as_plan(one_engine, tune_split(one_engine, ranges, "merged"),
                                    "dichotomy, one engine a board, links merged")),
        ("link as own stage", as_plan(one_engine, tune_split(one_engine, ranges, "stage"),
                                      "dichotomy, one engine a board, links as stages")),
        ("parallel engines", as_plan(engines, tune_split(engines, ranges, "stage"),
                                     "dichotomy, an engine a layer, links as stages")),
        ("conveyor joint", as_plan(engines, plan_joint(engines), "conveyor")),
    ]


def _f(x, fmt="{:.3g}"):
    return "-" if x is None else fmt.format(x)


def main() -> None:
    print(f"alexnet-conv on 4 x Zynq-7035 (srio-10g), {PRECISION}; conveyor columns MODELED, paper columns measured")
    head = (f"{'step':<18} {'img/s':>8} {'x':>5} {'lat ms':>7} {'W':>6} {'img/J':>6} {'x':>5} | paper "
            f"{'img/s':>6} {'x':>5} {'lat ms':>7} {'W':>6} {'img/J':>5}")
    print(head)
    print("-" * len(head))
    prev = prev_p = prev_e = None
    first = first_p = None
    for name, plan in steps():
        paper = PAPER.get(name, (None,) * 4)
        r = simulate(plan, rate=2 / plan.interval_s, requests=20_000)   # saturated: 2x what it can take
        lat = simulate(plan, rate=0.1 / plan.interval_s, requests=200)  # batch-1 latency: light load
        x = r.throughput_per_s / prev if prev else None
        xe = r.inferences_per_j / prev_e if prev_e else None
        xp = paper[0] / prev_p if paper[0] and prev_p else None
        print(f"{name:<18} {r.throughput_per_s:>8.1f} {_f(x, '{:.2f}'):>5} {lat.latency_p50_s * 1e3:>7.2f} "
              f"{r.average_power_w:>6.2f} {r.inferences_per_j:>6.1f} {_f(xe, '{:.2f}'):>5} | {_f(paper[0]):>11} "
              f"{_f(xp, '{:.2f}'):>5} {_f(paper[1], '{:.0f}'):>7} {_f(paper[2]):>6} {_f(paper[3]):>5}")
        if name in PAPER:
            first = first or r
            first_p = first_p or paper
            last, last_p = r, paper
        prev, prev_e, prev_p = r.throughput_per_s, r.inferences_per_j, paper[0]
    print(f"first -> last paper step: conveyor x{last.throughput_per_s / first.throughput_per_s:.2f} img/s, "
          f"x{last.inferences_per_j / first.inferences_per_j:.2f} img/J, x{last.average_power_w / first.average_power_w:.2f} W; "
          f"paper x{last_p[0] / first_p[0]:.2f} img/s, x{last_p[3] / first_p[3]:.2f} img/J, x{last_p[2] / first_p[2]:.2f} W")


if __name__ == "__main__":
    main()
