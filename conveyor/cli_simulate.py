"""`conveyor simulate PLAN`: a plan under load, modeled (conveyor.sim)."""

from __future__ import annotations

import json

import click

from conveyor.errors import ConveyorError

JSON_KEYS = ("throughput_per_s", "latency_p50_s", "latency_p99_s", "latency_p999_s", "energy_per_inference_j",
             "inferences_per_j", "average_power_w")


@click.command("simulate")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--rate", type=float, help="offered load, requests/s (open loop)")
@click.option("--closed", type=int, help="requests kept in flight (closed loop)")
@click.option("--requests", type=int, default=10_000, show_default=True)
@click.option("--arrivals", default="constant", show_default=True, help="constant | poisson | FILE.csv of times (s)")
@click.option("--seed", type=int, default=None)
@click.option("--fifo-depth", type=int, default=None, help="FIFO depth between stages (default: unbounded)")
@click.option("--json", "as_json", is_flag=True, help="print the result as JSON")
@click.option("--report", type=click.Path(dir_okay=False), help="write an HTML report")
def simulate(plan_file, rate, closed, requests, arrivals, seed, fifo_depth, as_json, report):
    """Simulate PLAN under load: throughput, latency percentiles, queues, energy (all modeled)."""
    from conveyor.plan import Plan
    from conveyor.sim import simulate as run

    plan = Plan.load(plan_file)
    if rate is None and closed is None and arrivals in ("constant", "poisson"):
        raise ConveyorError("say how requests arrive: --rate R (requests/s), --closed N, or --arrivals FILE.csv")
    result = run(plan, rate=rate, closed=closed, requests=requests, arrivals=arrivals, seed=seed,
                 fifo_depth=fifo_depth)
    if report:
        from conveyor.reports.sim_report import write_report

        write_report(report, plan, result)
    data = result.to_dict()
    if as_json:
        out = {k: data[k] for k in JSON_KEYS}
        out.update({k: v for k, v in data.items() if k not in out})
        click.echo(json.dumps(out, indent=2))
        return
    _print(plan, result)


def _fmt(x, fmt) -> str:
    return "-" if x is None else fmt(x)


def _print(plan, r) -> None:
    from conveyor.cli import _out
    from conveyor.cli_tables import Col
    from conveyor.units import eng, plural, rate, seconds

    _out.print(f"[bold]{plan.model}[/] ({plan.method}, {plural(len(plan.stages), 'stage')}): "
               f"{plural(r.requests, 'request')}, {r.engine} engine; everything below is MODELED")
    _out.print(f"throughput {_fmt(r.throughput_per_s, rate)}/s   latency p50 {_fmt(r.latency_p50_s, seconds)}  "
               f"p99 {_fmt(r.latency_p99_s, seconds)}  p99.9 {_fmt(r.latency_p999_s, seconds)}")
    _out.print(f"power {_fmt(r.average_power_w, lambda w: eng(w, 'W'))}   energy "
               f"{_fmt(r.energy_per_inference_j, lambda j: eng(j, 'J'))}/inference   "
               f"{_fmt(r.inferences_per_j, lambda v: eng(v, ''))} inferences/J")
    cols = [Col("server", rank=None), Col("kind", rank=3), Col("replicas", right=True, rank=2),
            Col("interval", right=True, rank=8), Col("latency", right=True, rank=7), Col("util", right=True, rank=9),
            Col("wait", right=True, rank=5), Col("stall", right=True, rank=4), Col("queue max", right=True, rank=6)]
    rows = [[s.name, s.kind, str(s.replicas), _fmt(s.interval_s, seconds), _fmt(s.latency_s, seconds),
             f"{s.utilisation:.0%}", _fmt(s.wait_s, seconds), _fmt(s.stall_s, seconds), str(s.queue_max)]
            for s in r.stages]
    _out.table(None, cols, rows)
    for note in r.notes[2:]:  # after "modeled" and the FIFOs: which power figures are assumed
        _out.print(note)


#: the load `conveyor plan --sim-report` simulates: Poisson arrivals at this share of the plan's capacity
PLAN_REPORT_LOAD = 0.9
PLAN_REPORT_REQUESTS = 10_000


def write_sim_report(path: str, plan, plan_report: str | None = None) -> None:
    """`conveyor plan --sim-report PATH`: simulate the plan under Poisson arrivals at 90 % of
    its capacity and write the simulation report, linked back to `plan_report`."""
    from conveyor.reports.sim_report import write_report
    from conveyor.sim import simulate as run

    result = run(plan, rate=PLAN_REPORT_LOAD / plan.interval_s, requests=PLAN_REPORT_REQUESTS, arrivals="poisson", seed=0)
    write_report(path, plan, result, plan_report=plan_report)
