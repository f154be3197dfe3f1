"""The conveyor command line: thin — parse, call the library, print.

Every command takes `--json` to print the same result as data. A user error prints
one line on stderr and exits with status 1; no tracebacks.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console

from conveyor.errors import ConveyorError
from conveyor import cli_quantized, cli_requant
from conveyor.cli_requant import requant_option
from conveyor.units import plural

class _Out:
    """A rich console made at print time, so that it writes to the current stdout: a terminal's
    width (or $COLUMNS); when stdout is neither (a pipe, a file, a test) 160 columns."""

    def _console(self) -> Console:
        width = None if sys.stdout.isatty() or os.environ.get("COLUMNS", "").isdigit() else 160
        return Console(highlight=False, width=width)

    def print(self, *args, **kwargs) -> None:
        self._console().print(*args, **kwargs)

    def table(self, title, cols, rows, footer=()) -> None:
        """A table fitted to the width (conveyor.cli_tables); a line names what it left out."""
        from conveyor.cli_tables import fit_table

        console = self._console()
        table, dropped = fit_table(None, cols, rows, console.width, footer)
        if title:  # on its own line: a title over a narrow table would wrap at the table's width
            console.print(title)
        console.print(table)
        if dropped:
            console.print(f"(not shown at {console.width} columns: {', '.join(dropped)}; see --json)")


_out = _Out()


def _resolve_model(model: str, *, fingerprint: str | None = None, float_graph: bool = False):
    """A model argument is an .onnx / .keras / .h5 path or a zoo name. A quantized ONNX model loads
    with `--requant` when given; else with the library's default, or "nearest" when `float_graph`
    (a precision the user gives applies to the float model, not to the integer domain), and when
    that graph's fingerprint is not `fingerprint` (a plan's), with the mode whose graph has it."""
    from conveyor import zoo
    from conveyor.frontends.onnx import load

    if os.path.exists(model) or model.endswith((".onnx", ".keras", ".h5")):
        requant = cli_requant.chosen()
        if requant is not None:
            return load(model, requant=requant)
        graph = load(model, requant="nearest") if float_graph else load(model)
        if fingerprint and getattr(graph, "model_precision", None) is not None and graph.fingerprint() != fingerprint:
            from conveyor.frontends.qdq import REQUANT_MODES

            for mode in REQUANT_MODES:
                other = load(model, requant=mode)
                if other.fingerprint() == fingerprint:
                    return other
        return graph
    if model in zoo.names():
        return zoo.build(model)
    raise ConveyorError(f"model '{model}' is neither an existing .onnx file nor a zoo model ({', '.join(zoo.names())})")


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=_json_default))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, (tuple, set)):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="conveyor")
def cli() -> None:
    """conveyor: deploy a trained neural network across a cluster of FPGA boards."""


@cli.command()
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@requant_option
def inspect(model: str, as_json: bool) -> None:
    """Per-layer table of MODEL (an .onnx file or a zoo name): op, output shape, MACs,
    parameters and activation bytes, with totals."""
    from conveyor.graph import layer_counters

    graph = _resolve_model(model)
    rows = layer_counters(graph)
    totals = {
        "macs": sum(r.macs for r in rows),
        "params": sum(r.params for r in rows),
        "param_bytes": sum(r.param_bytes for r in rows),
        "act_out_bytes": sum(r.act_out_bytes for r in rows),
    }
    if as_json:
        _print_json({
            "model": graph.name,
            "fingerprint": graph.fingerprint(),
            "inputs": [{"name": t.name, "shape": t.shape, "dtype": str(t.dtype)} for t in graph.inputs],
            "outputs": [{"name": t.name, "shape": t.shape, "dtype": str(t.dtype)} for t in graph.outputs],
            "layers": [r.__dict__ for r in rows],
            "totals": totals,
            **({"precision": cli_quantized.as_json(graph)} if cli_quantized.model_config(graph) else {}),
        })
        return
    from conveyor.cli_tables import Col

    named = any(r.layer != r.node for r in rows)  # the node column only where a layer name differs
    cols = [Col("layer", rank=None)] + ([Col("node", rank=1)] if named else []) + [
        Col("op", rank=9), Col("output", rank=6), Col("MACs", True, 8), Col("params", True, 7),
        Col("act in", True, 2), Col("act out", True, 5)]
    body = [[r.layer] + ([r.node] if named else []) + [
        r.op_type, "x".join(map(str, r.output_shape)), _fmt_int(r.macs), _fmt_int(r.params),
        _fmt_bytes(r.act_in_bytes), _fmt_bytes(r.act_out_bytes)] for r in rows]
    total = ["total"] + ([""] if named else []) + ["", "", _fmt_int(totals["macs"]), _fmt_int(totals["params"]), "",
                                                   _fmt_bytes(totals["act_out_bytes"])]
    _out.table(f"{graph.name}: {plural(len(rows), 'layer')}", cols, body, footer=[total])
    ins = ", ".join(str(t) for t in graph.inputs)
    outs = ", ".join(str(t) for t in graph.outputs)
    _out.print(f"inputs: {ins}\noutputs: {outs}\nweights: {_fmt_bytes(totals['param_bytes'])}")
    cli_quantized.show(graph, _out)


@cli.command()
@click.argument("name", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the model to this .onnx file.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def zoo(name: str | None, output: str | None, as_json: bool) -> None:
    """List the model zoo, or write model NAME to an .onnx file with -o."""
    from conveyor import zoo as model_zoo

    if name is None:
        if output:
            raise ConveyorError("-o needs a model NAME; see `conveyor zoo` for the list")
        rows = [{"name": n, "description": model_zoo.describe(n)} for n in model_zoo.names()]
        if as_json:
            _print_json(rows)
            return
        from conveyor.cli_tables import Col

        _out.table("model zoo", [Col("name", rank=None), Col("description", rank=None)],
                   [[r["name"], r["description"].removeprefix(f"{r['name']}: ")] for r in rows])
        return
    if name not in model_zoo.names():
        raise ConveyorError(f"unknown zoo model '{name}'; known: {', '.join(model_zoo.names())}")
    if not output:
        raise ConveyorError(f"say where to write {name}: conveyor zoo {name} -o {name}.onnx")
    import onnx

    onnx.save(model_zoo.build_onnx(name), output)
    if as_json:
        _print_json({"name": name, "path": output, "bytes": os.path.getsize(output)})
    else:
        _out.print(f"wrote {name} to {output} ({_fmt_bytes(os.path.getsize(output))})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def hardware(as_json: bool) -> None:
    """The hardware catalog: FPGA parts, boards, hosts (CPU/GPU) and links."""
    from conveyor.hardware import catalog_rows

    rows = catalog_rows()
    if as_json:
        _print_json(rows)
        return
    for kind, (title, columns) in _HARDWARE_TABLES.items():
        items = [r for r in rows if r["kind"] == kind]
        if not items:
            continue
        from conveyor.cli_tables import Col

        cols = [Col(h, h not in ("name", "part", "encoding"), None if h in ("name", "part") else 0)
                for h, _, _ in columns]
        _out.table(title, cols, [[fmt(it.get(key)) if it.get(key) not in (None, 0) else "-"
                                  for _, key, fmt in columns] for it in items])
    _out.print("Datasheet figures (sources in the catalog YAML; `--json` lists them); none is measured here.")


def _eng(unit: str):
    from conveyor.units import eng

    return lambda v: eng(v, unit)


def _si(unit: str, scale: float, digits: int = 4):
    return lambda v: f"{v / scale:.{digits}g} {unit}"


_HARDWARE_TABLES = {
    "part": ("FPGA parts", [("name", "name", str), ("DSP", "dsp", _fmt_int), ("mult", "dsp_mult_width", str),
                            ("BRAM18K", "bram18k", _fmt_int), ("URAM", "uram", _fmt_int), ("M20K", "m20k", _fmt_int),
                            ("LUT", "lut", _fmt_int), ("FF", "ff", _fmt_int), ("clock", "clock_hz", _eng("Hz"))]),
    "board": ("boards", [("name", "name", str), ("part", "part", str), ("clock", "clock_hz", _eng("Hz")),
                         ("DRAM", "dram_bytes", _si("GiB", 2**30)), ("DRAM BW", "dram_bandwidth_Bps", _eng("B/s")),
                         ("HBM", "hbm_bytes", _si("GiB", 2**30)), ("HBM BW", "hbm_bandwidth_Bps", _eng("B/s")),
                         ("power", "power_w", _eng("W"))]),
    "cpu": ("host CPUs", [("name", "name", str), ("peak fp32", "peak_flops", _eng("FLOP/s")),
                          ("mem BW", "mem_bandwidth_Bps", _eng("B/s")), ("memory", "mem_bytes", _si("GiB", 2**30)),
                          ("TDP", "tdp_w", _eng("W"))]),
    "gpu": ("GPUs", [("name", "name", str), ("peak fp32", "peak_flops", _eng("FLOP/s")),
                     ("mem BW", "mem_bandwidth_Bps", _eng("B/s")), ("memory", "mem_bytes", _si("GiB", 2**30)),
                     ("TDP", "tdp_w", _eng("W"))]),
    "link": ("links", [("name", "name", str), ("lanes", "lanes", _fmt_int), ("line rate", "line_rate_bps", _eng("b/s")),
                       ("encoding", "encoding", str), ("payload BW", "bandwidth_Bps", _eng("B/s")),
                       ("latency/hop", "latency_s", _eng("s"))]),
}


def _hls4ml_precision(path: str, graph) -> dict:
    """The precision config of an hls4ml config.yml; what conveyor does not act on goes to stderr."""
    from conveyor.frontends.hls4ml_config import read_hls4ml_config

    cfg = read_hls4ml_config(path, graph)
    for line in cfg.unused:
        click.echo(f"{path}: not used: {line}", err=True)
    if cfg.part or cfg.clock_period_ns or set(cfg.reuse_factor.values()) - {1}:
        click.echo(f"{path}: Part, ClockPeriod and ReuseFactor are read but not yet pinned by the planner", err=True)
    return dict(cfg.precision)


def _check_formats(option: str, texts) -> None:
    """Each number format given on the command line parses, else one short line naming it."""
    from conveyor.errors import PrecisionError
    from conveyor.numerics.config import PrecisionConfig

    for t in texts:
        try:
            PrecisionConfig.from_dict({"default": t})  # as the commands read it ("hls4ml:..." included)
        except PrecisionError as e:
            msg, q = str(e).removeprefix("precision.default: "), repr(t.strip())
            for prefix in (f"precision {q}: ", f"precision {q} ", f"MX format {q}: ", f"MSFP format {q} is ",
                           f"{q} is "):  # the option and value are said once, in front
                msg = msg.removeprefix(prefix)
            raise ConveyorError(f"{option} {t}: {msg}") from None


def _load_samples(data: str | None, graph, n: int | None, option: str = "--data"):
    """(inputs, labels or None) for `--data`: 'digits', an .npz with x (and y), or seeded noise."""
    import numpy as np

    if data is None:
        from conveyor.cli_inputs import sample_shape

        x = np.random.default_rng(0).standard_normal((n or 32,) + sample_shape(graph.inputs[0].shape)).astype(np.float32)
        return x, None
    if data == "digits":
        from conveyor.zoo import digits_dataset

        x, y = digits_dataset("test")
    else:
        from conveyor.cli_inputs import load_array_file

        x, y = load_array_file(data, option)
    if n is not None:
        x, y = x[:n], (None if y is None else y[:n])
    return x, y


@cli.command()
@click.argument("model")
@click.option("--precision", "precisions", multiple=True,
              help='A format for every role, e.g. "ap_fixed<16,6>" or "mx:fp8_e4m3"; repeat to compare several.')
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="A precision config (YAML); each --precision replaces its default.")
@click.option("--hls4ml-config", "hls4ml_path", type=click.Path(dir_okay=False),
              help="hls4ml's config.yml: its precisions (hls4ml's meaning) instead of --config.")
@click.option("--data", help="digits (the scikit-learn test split) or an .npz with x and optional labels y; default: seeded noise.")
@click.option("-n", "samples", type=click.IntRange(min=1), help="Use the first N samples.")
@click.option("--sweep", help="LO:HI — vary the total width W of the (single) --precision from LO to HI, "
                              "integer bits and modes kept; prints accuracy per width and draws it.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Where to write the sweep's accuracy-vs-width chart (SVG; default MODEL-sweep.svg).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@requant_option
def quantize(model: str, precisions: tuple[str, ...], config_path: str | None, hls4ml_path: str | None,
             data: str | None, samples: int | None, sweep: str | None, plot_path: str | None, as_json: bool) -> None:
    """Run MODEL bit-accurately at each precision: per layer the range seen, overflow and
    saturation counts and error against float; end accuracy when labels are given."""
    from conveyor.graph.quantized import quantization_report
    from conveyor.numerics.config import PrecisionConfig

    _check_formats("--precision", precisions)
    graph = _resolve_model(model, float_graph=bool(precisions or config_path or hls4ml_path))
    base = PrecisionConfig.load(config_path).to_dict() if config_path else None
    if hls4ml_path:
        base = _hls4ml_precision(hls4ml_path, graph)
    if not precisions and base is None:  # a quantized model's own quantizers, unless overridden
        base = cli_quantized.model_config(graph)
    if not precisions and base is None:
        raise ConveyorError('say which precision: --precision "ap_fixed<16,6>" (repeatable) or --config cfg.yaml')
    if plot_path and not sweep:
        raise ConveyorError("--plot draws a sweep's chart: give --sweep LO:HI with it")
    if sweep:
        precisions = _sweep_precisions(sweep, precisions)
    configs = [base] if not precisions else [{**(base or {}), "default": p} for p in precisions]
    x, y = _load_samples(data, graph, samples)
    from conveyor.cli_inputs import check_sample_shape

    x = check_sample_shape(x, graph.inputs[0].shape, "--data", data or "noise", graph.name)
    if sweep and y is None:
        raise ConveyorError("--sweep measures accuracy: give labelled data (--data digits or an .npz with x and y)")
    from conveyor.cli_progress import progress

    batch = min(256, max(1, -(-len(x) // 20)))  # about 20 steps per bar
    with progress(f"{graph.name}: float and bit-accurate", len(x) * len(configs), quiet=as_json,
                  unit="samples") as advance:
        reports = [quantization_report(graph, c, x, y, batch=batch, on_batch=advance) for c in configs]
    if sweep:
        path = plot_path or f"{graph.name}-sweep.svg"
        _write_sweep_chart(path, graph.name, precisions, reports, sweep)
    if as_json:
        _print_json({"model": graph.name, "reports": [r.as_dict() for r in reports]})
        return
    if sweep:
        _print_accuracy(reports)
        _out.print(f"chart: {path}")
        return
    from conveyor.cli_tables import Col

    cols = [Col("layer", rank=None), Col("op", rank=8), Col("result format", rank=None), Col("range seen", rank=5),
            Col("overflow", True, 7), Col("saturated", True, 6), Col("accum sat/wrap", True, 4),
            Col("table clamp", True, 2), Col("state ovf", True, 2), Col("max |err|", True, 3), Col("rel RMS err", True, 6)]
    for r in reports:
        rows = []
        for l in r.layers:
            rng = "-" if l.min != l.min else f"[{l.min:.4g}, {l.max:.4g}]"
            rows.append([l.layer, l.op_type, l.result_format, rng,
                         "n/a" if l.overflow is None else _fmt_int(l.overflow),
                         "n/a" if l.saturated is None else _fmt_int(l.saturated),
                         "-" if not l.accum_format else
                         f"{_fmt_int(l.accum_overflow)} {'sat' if l.accum_saturating else 'wrap'}",
                         "-" if not l.table_lookups else f"{_fmt_int(l.table_clamped)}/{_fmt_int(l.table_lookups)}",
                         "-" if not l.state_casts else _fmt_int(l.state_overflow),
                         f"{l.max_abs_error:.3g}", f"{l.rms_rel_error:.3g}"])
        formats = {row[2] for row in rows} - {"(passes its input's format)"}
        title = f"{graph.name} at {r.precision} ({plural(r.samples, 'sample')})"
        # table look-ups and recurrent states: columns only for models that have them
        keep = [i for i in range(len(cols)) if i not in (7, 8) or any(row[i] != "-" for row in rows)]
        if len(formats) == 1:  # one result format everywhere: said once, not per row
            keep.remove(2)
            only = formats.pop()
            title = f"{title}; every result in {'it' if only == r.precision else only}"
        _out.table(title, [cols[i] for i in keep], [[row[i] for i in keep] for row in rows])
    if y is not None:
        _print_accuracy(reports)


def _print_accuracy(reports) -> None:
    from conveyor.cli_tables import Col

    rows = [["float32", f"{reports[0].float_accuracy:.2%}", "", ""]]
    for r in reports:
        over = [layer.overflow for layer in r.layers]
        rows.append([r.precision, f"{r.accuracy:.2%}", f"{(r.accuracy - r.float_accuracy) * 100:+.2f} pt",
                     "n/a" if None in over else _fmt_int(sum(over))])
    _out.table("accuracy", [Col("precision", rank=None), Col("top-1", True, None), Col("vs float", True, 2),
                            Col("overflows", True, 1)], rows)


def _sweep_precisions(sweep: str, precisions: tuple[str, ...]) -> tuple[str, ...]:
    from conveyor.numerics.sweep import sweep_formats

    if len(precisions) != 1:
        raise ConveyorError('--sweep varies one format: give exactly one --precision, e.g. "ap_fixed<16,6>" '
                            'or "mx:fp8_e4m3"')
    try:
        lo, hi = (int(v) for v in sweep.split(":"))
    except ValueError:
        raise ConveyorError(f"--sweep {sweep}: expected LO:HI total widths, e.g. 6:18") from None
    if not 1 <= lo <= hi <= 64:
        raise ConveyorError(f"--sweep {sweep}: widths must satisfy 1 <= LO <= HI <= 64")
    return tuple(text for _, text in sweep_formats(precisions[0], lo, hi))


def _write_sweep_chart(path: str, model: str, precisions, reports, sweep: str) -> None:
    from conveyor.numerics.sweep import series_label, sweep_formats
    from conveyor.reports.svg import Series, line_chart

    lo, hi = (int(v) for v in sweep.split(":"))
    widths = [w for w, _ in sweep_formats(precisions[0], lo, hi)]
    acc = [100 * r.accuracy for r in reports]
    flt = [100 * reports[0].float_accuracy] * len(widths)
    svg = line_chart(
        [Series(series_label(precisions[0]), widths, acc), Series("float32", widths, flt, dashed=True)],
        title=f"{model}: top-1 accuracy vs bit width", x_label="total width W (bits)", y_label="top-1 accuracy (%)",
        y_range=(0, 100),
    )
    with open(path, "w") as f:
        f.write(svg)


@cli.command()
@click.argument("model")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the profile (JSON) here.")
@click.option("--runs", default=20, show_default=True, help="Timed runs (the median is kept).")
@click.option("--threads", default=1, show_default=True, help="onnxruntime intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the profile as JSON.")
@requant_option
def profile(model: str, output: str | None, runs: int, threads: int, as_json: bool) -> None:
    """Time every layer of MODEL on this machine (onnxruntime, median of --runs): a measured
    CPU cost the planner can use instead of the roofline."""
    from dataclasses import asdict

    from conveyor.cost.profile import profile_graph

    if runs < 1:
        raise ConveyorError(f"--runs {runs}: need at least 1")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ConveyorError("conveyor profile times layers with onnxruntime, which is not installed; "
                            "install it with: pip install 'conveyor[profile]'") from None
    graph = _resolve_model(model)
    prof = profile_graph(graph, runs=runs, threads=threads)
    if output:
        prof.save(output)
    if as_json:
        _print_json(asdict(prof))
        return
    from conveyor.cli_tables import Col
    from conveyor.units import seconds

    total = prof.total_seconds or 1.0
    rows = [[n.name, n.op_type, seconds(prof.layer_seconds[n.name]), f"{100 * prof.layer_seconds[n.name] / total:.1f}%"]
            for n in graph.nodes]
    _out.table(f"{graph.name} on {prof.machine}, {plural(threads, 'thread')}, median of {runs} (measured)",
               [Col("layer", rank=None), Col("op", rank=2), Col("time", True, None), Col("share", True, 1)], rows,
               footer=[["total", "", seconds(prof.total_seconds), ""]])
    if output:
        _out.print(f"profile: {output}")


def _resolve_cluster(spec: str):
    """A cluster file (YAML), or the shorthand BOARD:K[:LINK] (e.g. zynq7035:4:srio-10g)."""
    from conveyor.hardware import Cluster

    if os.path.exists(spec) or spec.endswith((".yaml", ".yml")):
        return Cluster.load(spec)
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[1].isdigit():
        raise ConveyorError(f"--cluster {spec}: expected a cluster .yaml file or BOARD:K[:LINK] such as zynq7035:4:srio-10g")
    return Cluster.uniform(parts[0], int(parts[1]), link=parts[2] if len(parts) == 3 else "srio-10g")


@cli.command("plan")
@click.argument("model")
@click.option("--cluster", "cluster_spec", required=True,
              help="A cluster .yaml file, or BOARD:K[:LINK] (e.g. zynq7035:4:srio-10g).")
@click.option("--precision", help="Number format of every layer (default: a quantized model's own quantizers, "
                                   "else ap_fixed<16,6>).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="A precision config (YAML) instead.")
@click.option("--hls4ml-config", "hls4ml_path", type=click.Path(dir_okay=False),
              help="hls4ml's config.yml: its precisions (hls4ml's meaning) instead of --precision.")
@click.option("--objective", type=click.Choice(["throughput", "latency", "edge-cloud"]), default="throughput",
              show_default=True)
@click.option("--arch", type=click.Choice(["dataflow", "overlay"]), default="dataflow", show_default=True,
              help="FPGA architecture: an engine per layer (hls4ml/FINN) or one engine for all (Brainwave/DPU).")
@click.option("--profile", "profile_specs", multiple=True, metavar="DEVICE=FILE",
              help="Use a measured profile (conveyor profile -o FILE) for a CPU device of the cluster.")
@click.option("--pareto", is_flag=True, help="Also print the latency/throughput Pareto front.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the plan (JSON) here.")
@click.option("--report", type=click.Path(dir_okay=False), help="Write an HTML report with the stage chart here.")
@click.option("--sim-report", type=click.Path(dir_okay=False),
              help="Also simulate the plan under load (Poisson, 90% of capacity) and write that report here, "
                   "linked from --report (docs/simulate.md).")
@click.option("--measured", "measured_dir", type=click.Path(file_okay=False),
              help="A compiled, synthesized pipeline (conveyor compile -o DIR; csynth.xml per board): re-plan with "
                   "its measured per-layer latency, interval and resources (docs/codegen.md).")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
@requant_option
def plan_cmd(model: str, cluster_spec: str, precision: str, config_path: str | None, hls4ml_path: str | None,
             objective: str, arch: str,
             profile_specs: tuple[str, ...], pareto: bool, output: str | None, report: str | None,
             sim_report: str | None, as_json: bool, measured_dir: str | None = None) -> None:
    """Cut MODEL into pipeline stages over the cluster's devices, choosing every layer's
    parallelism and each link's structure; compare with the baselines."""
    from conveyor.cost.profile import Profile
    from conveyor.errors import PlanError
    from conveyor.numerics.config import PrecisionConfig
    from conveyor.planner import plan
    from conveyor.planner.baselines import BASELINES

    _check_formats("--precision", [precision] if precision else [])
    graph = _resolve_model(model, float_graph=bool(precision or config_path or hls4ml_path))
    cluster = _resolve_cluster(cluster_spec)
    prec = PrecisionConfig.load(config_path) if config_path else (
        precision or cli_quantized.model_config(graph) or "ap_fixed<16,6>")
    if config_path:  # the same check quantize makes: a node name the graph lacks is a typo, not a no-op
        from conveyor.graph.names import resolve_config

        resolve_config(graph, prec).check_against({n.name for n in graph.nodes}, {n.op_type for n in graph.nodes},
                                                   graph.name)
    if hls4ml_path:
        prec = _hls4ml_precision(hls4ml_path, graph)
    profiles = {}
    for spec in profile_specs:
        device, sep, path = spec.partition("=")
        if not sep:
            raise ConveyorError(f"--profile {spec}: expected DEVICE=FILE, e.g. host=profile.json")
        cluster.device(device)
        profiles[device] = Profile.load(path)
    opts = dict(precision=prec, objective=objective, arch=arch, profiles=profiles)
    if measured_dir:
        from conveyor.codegen.measured import measured_costs

        opts["measured"] = measured_costs(measured_dir)
    best = plan(graph, cluster, **opts)
    baselines: dict = {}
    for name in BASELINES if objective != "edge-cloud" else ():
        try:
            baselines[name] = plan(graph, cluster, method=name, **opts)
        except PlanError as e:
            baselines[name] = f"does not fit: {e}"
    if output:
        best.save(output)
    if sim_report:
        from conveyor.cli_simulate import write_sim_report

        write_sim_report(sim_report, best, plan_report=report)
    if report:
        from conveyor.reports.plan_report import render
        from conveyor.reports.sim_report import relative_link

        # rendered first: a failure leaves no empty file behind
        html = render(best, baselines, graph, sim_link=relative_link(sim_report, report) if sim_report else None)
        with open(report, "w") as f:
            f.write(html)
    if as_json:
        _print_json({"plan": best.to_dict(), "baselines": {
            k: ({"throughput": v.throughput, "interval_s": v.interval_s, "latency_s": v.latency_s,
                 "stages": [list(s.layers) for s in v.stages]} if not isinstance(v, str) else {"error": v})
            for k, v in baselines.items()}})
        return
    from conveyor.units import rate, seconds, span

    from conveyor.cli_tables import Col

    cols = [Col("stage", rank=None), Col("arch", rank=2), Col("layers", rank=None), Col("stage time", True, 9),
            Col("DSP", True, 8), Col("BRAM18K", True, 7), Col("LUT", True, 6), Col("memory", True, 4),
            Col("link out", True, 5), Col("link", rank=1)]
    rows = []
    for st in best.stages:
        pct = {r: (f"{100 * st.resources[r] / max(st.budget[r], 1):.0f}%" if r in st.budget else "-")
               for r in ("dsp", "bram18k", "lut", "memory_bytes", "onchip_bytes")}
        memory = pct["memory_bytes"] if pct["memory_bytes"] != "-" else pct["onchip_bytes"]
        link = st.link_out
        name = st.device + (f" x{1 + len(st.replicas)}" if st.replicas else "")
        rows.append([name, st.arch, span(st.layers), seconds(st.stage_time_s), pct["dsp"], pct["bram18k"], pct["lut"],
                     memory, "-" if link is None else f"{seconds(link.seconds)} {link.mode}",
                     "-" if link is None else link.link])
    _out.table(f"{graph.name} on {cluster.name}: {rate(best.throughput)} items/s, "
               f"latency {seconds(best.latency_s)} ({'modeled' if not measured_dir else 'measured / modeled'})",
               cols, rows)
    if pareto:
        from conveyor.planner.chain import chain_problem
        from conveyor.planner.make_plan import pareto_front

        prob = chain_problem(graph, cluster, PrecisionConfig.coerce(prec), arch=arch, profiles=profiles)
        _out.table("latency / throughput Pareto front",
                   [Col("items/s", True, None), Col("latency", True, None), Col("stages", True, None)],
                   [[rate(1 / r.interval_s), seconds(r.latency_s), str(len(r.boards))] for r in pareto_front(prob)])
    if not baselines:
        _out.print(f"bottleneck: {best.bottleneck()}")
        return
    rows = [["conveyor", rate(best.throughput), seconds(best.latency_s), "1.00x"]]
    refused = []
    for name, b in baselines.items():
        if isinstance(b, str):  # a sentence: said below the table, not in a number's column
            rows.append([name, "-", "-", "-"])
            refused.append(f"{name} does not fit: {b.removeprefix('does not fit: ')}")
        else:
            rows.append([name, rate(b.throughput), seconds(b.latency_s), f"{b.throughput / best.throughput:.2f}x"])
    _out.table("against the baselines (partition first, then tune each board)",
               [Col("method", rank=None), Col("items/s", True, None), Col("latency", True, None),
                Col("vs conveyor", True, None)], rows)
    for line in refused:
        _out.print(line)
    _out.print(f"bottleneck: {best.bottleneck()}; utilization is of each board's budget (85% of the part)")
    if measured_dir:
        got, marks = opts["measured"], [v for s in best.stages for v in s.measured.values()]
        cal = sum(v.startswith("calibrated:") for v in marks)
        _out.print(f"measured: {len(marks) - cal} layers, calibrated: {cal}, modeled: "
                   f"{sum(len(s.layers) for s in best.stages) - len(marks)} ({len(got.table)} synthesis figures "
                   f"read from {measured_dir}{f'; {len(got.unmatched)} layers had no module' if got.unmatched else ''})")
    if output:
        _out.print(f"plan: {output}")
    if report:
        _out.print(f"report: {report}")
    if sim_report:
        _out.print(f"simulation report: {sim_report}")


@cli.command()
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="The model the plan was made for (.onnx file or zoo name).")
@click.option("--inputs", "inputs_spec", default=None,
              help="digits, a .npy of samples (axis 0), or an .npz with x (and labels y); default: seeded noise.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True)
@click.option("--paced", is_flag=True, help="Time each emulated FPGA stage as the plan models it (interval and latency).")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="With --paced: stretch every modeled time by this factor (a slow-motion run, for when this "
                   "machine emulates a stage slower than the modeled board).")
@click.option("--in-flight", type=click.IntRange(min=1), default=None,
              help="Requests in the pipeline at once (default: twice the stages); 1 measures batch-1 latency.")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Run the first N samples (default: all, or 100 of noise).")
@click.option("--backend", "backend_specs", multiple=True, metavar="[DEVICE=]BACKEND",
              help="Run DEVICE's stage on BACKEND (emulator, cpu, gpu, csim: the generated HLS C++ built with g++). "
                   "A bare BACKEND applies to every stage it can run: cpu/gpu to the host stages (--backend cpu "
                   "dry-runs a GPU-host plan on a machine without a GPU), emulator/csim to the FPGA stages. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@requant_option
def run(plan_path: str, model: str, inputs_spec: str | None, executor: str, paced: bool, time_scale: float,
        in_flight: int | None, count: int | None, backend_specs: tuple[str, ...], as_json: bool) -> None:
    """Run PLAN on a distributed pipeline: per-stage busy time and queue depth, throughput,
    latency p50/p99 (measured), against the plan's prediction; accuracy when labels are given."""
    import numpy as np

    from conveyor.cli_inputs import check_sample_shape, parse_backends
    from conveyor.cli_progress import progress
    from conveyor.plan import Plan
    from conveyor.runtime import Pipeline
    from conveyor.runtime.calibrate import calibrated_time_scale, measured_compute_s

    if time_scale != 1.0 and not paced:
        raise ConveyorError(f"--time-scale {time_scale:g} stretches paced stages only: add --paced, or drop it")
    plan_obj = Plan.load(plan_path)
    backends = parse_backends(backend_specs, plan_obj)
    graph = _resolve_model(model, fingerprint=plan_obj.fingerprint)
    x, y = _load_samples(inputs_spec, graph, count or (None if inputs_spec else 100), option="--inputs")
    shape = graph.inputs[0].shape
    x = check_sample_shape(x, shape, "--inputs", inputs_spec or "noise", graph.name)
    samples = [np.asarray(s, dtype=graph.inputs[0].dtype).reshape(shape) for s in x]
    outputs = []
    with Pipeline(plan_obj, graph, executor=executor, paced=paced, time_scale=time_scale,
                  max_in_flight=in_flight, backends=backends or None) as pipe:
        with progress(f"{executor} pipeline, {plural(len(plan_obj.stages), 'stage')}", len(samples), quiet=as_json,
                      unit="requests") as advance:
            for out in pipe.map(samples):
                outputs.append(out[graph.output_names[0]])
                advance(1)
        stats = pipe.stats()
        stats["max_in_flight"] = pipe.max_in_flight
    if y is not None:
        pred = np.array([np.argmax(o) for o in outputs])
        stats["accuracy"] = float(np.mean(pred == np.asarray(y)))
    compute = measured_compute_s(stats["stages"])
    overruns = sum(st.get("overruns") or 0 for st in stats["stages"]) if paced else 0
    if paced:  # what benchmarks/runtime.py would run this plan at on this machine
        stats["calibrated_time_scale"] = calibrated_time_scale(compute, plan_obj)
    if as_json:
        _print_json(stats)
        return
    _print_run(graph, plan_obj, stats, executor, paced, time_scale, compute, overruns, len(outputs))


def _print_run(graph, plan_obj, stats, executor, paced, time_scale, compute, overruns, n_outputs) -> None:
    from conveyor.units import rate, seconds

    from conveyor.cli_tables import Col

    cols = [Col("stage", True, None), Col("device", rank=None), Col("backend", rank=8), Col("items", True, 7),
            Col("busy", True, 3), Col("per item", True, 9), Col("queue", True, 4), Col("restarts", True, 2)] + (
        [Col("overruns", True, 6)] if paced else [])
    rows = [[str(st.get("index")), str(st.get("device")), str(st.get("backend")), _fmt_int(st.get("items") or 0),
             seconds(st.get("busy_s") or 0.0), seconds(c), str(st.get("queue_depth", "-")),
             str(st.get("restarts", 0))] + ([str(st.get("overruns", "-"))] if paced else [])
            for st, c in zip(stats["stages"], compute)]
    _out.table(f"{graph.name}: {stats['completed']} requests on the {executor} executor"
               f"{f' (paced, time scale {time_scale:g})' if paced else ''} (measured)", cols, rows)
    thr, p50, p99 = stats["throughput_per_s"], stats["latency_p50_s"], stats["latency_p99_s"]
    interval, latency = stats["predicted_interval_s"], stats["predicted_latency_s"]
    pred_thr = 1 / interval if interval else float("inf")
    scaled = f" at time scale {time_scale:g}" if time_scale != 1 else ""
    why = ""
    if not paced and compute:
        k = max(range(len(compute)), key=compute.__getitem__)
        st = plan_obj.stages[k]
        why = (f"; unpaced, so this machine's speed, not the boards': stage {k} ({st.device}, "
               f"{stats['stages'][k].get('backend')}) takes {seconds(compute[k])} per item here, "
               f"the plan models {seconds(st.stage_time_s)}; --paced times stages as planned")
    _out.print(f"throughput {rate(thr)}/s (plan predicts {rate(pred_thr)}/s{scaled}: ratio {thr / pred_thr:.3g}){why}")
    if paced and overruns:
        scale = stats["calibrated_time_scale"]
        k = max(range(len(compute)), key=lambda i: compute[i] / max(plan_obj.stages[i].stage_time_s, 1e-30))
        _out.print(f"{overruns} items overran their modeled time: stage {k} emulates in {seconds(compute[k])} per item "
                   f"what the plan times at {seconds(plan_obj.stages[k].stage_time_s * time_scale)}{scaled}; "
                   f"run in slow motion with --time-scale {scale:g} (calibrated on this run as "
                   "benchmarks/runtime.py does)")
    if p50 is not None:
        queued = (f"; with up to {stats['max_in_flight']} requests in flight they queue — "
                  "--in-flight 1 measures batch 1" if stats["max_in_flight"] > 1 else "")
        _out.print(f"latency p50 {seconds(p50)}, p99 {seconds(p99)} (plan predicts {seconds(latency)} "
                   f"at batch 1{scaled}{queued})")
    if "accuracy" in stats:
        _out.print(f"accuracy {stats['accuracy']:.2%} on {n_outputs} labelled samples")


from conveyor.cli_serve import serve  # noqa: E402

cli.add_command(serve)

from conveyor.cli_simulate import simulate as _simulate  # noqa: E402

cli.add_command(_simulate)

from conveyor.cli_codegen import compile_cmd, csim_cmd, report_cmd  # noqa: E402

cli.add_command(compile_cmd)
cli.add_command(csim_cmd)
cli.add_command(report_cmd)


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="conveyor", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # one line, as every user error: what is wrong, and where the help is
        ctx = e.ctx.command_path if e.ctx is not None else "conveyor"
        click.echo(f"error: {' '.join(e.format_message().split())} (see {ctx} --help)", err=True)
        sys.exit(1)
    except click.ClickException as e:
        click.echo(f"error: {' '.join(e.format_message().split())}", err=True)
        sys.exit(1)
    except ConveyorError as e:
        click.echo(f"error: {' '.join(str(e).split()) or type(e).__name__}", err=True)
        sys.exit(1)
    except OSError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
