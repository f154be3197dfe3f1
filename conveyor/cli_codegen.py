"""`conveyor compile` and `conveyor csim`: a Plan to one HLS project per FPGA board, and the
boards' C simulation (g++) chained and compared with the emulator bit for bit."""

from __future__ import annotations

import json
from pathlib import Path

import click

from conveyor.cli_requant import requant_option
from conveyor.errors import ConveyorError
from conveyor.units import plural


@click.command("compile")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="The model the plan was made for (.onnx file or zoo name).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Write DIR/<device>/ per FPGA board, DIR/manifest.json and DIR/README.md here.")
@click.option("--synth", is_flag=True, help="Then run `vitis_hls -f build_prj.tcl` (C synthesis) in every board "
                                          "folder; `conveyor report DIR` reads the results.")
@click.option("--io-type", type=click.Choice(["io_parallel", "io_stream"]), default=None,
              help="io_parallel: arrays between layers; io_stream: FIFOs of pixels, line-buffer convolutions "
                   "(hls4ml's io_stream). Default: io_stream where the plan's precision has order "
                   "hls4ml_io_stream (--hls4ml-config with IOType: io_stream), else io_parallel.")
@requant_option
def compile_cmd(plan_path: str, model: str, out_dir: str, synth: bool, io_type: str | None) -> None:
    """Write one Vitis HLS project per FPGA board of PLAN (docs/codegen.md)."""
    import shutil

    from conveyor.cli import _resolve_model
    from conveyor.codegen import compile as compile_plan
    from conveyor.plan import Plan

    vitis = shutil.which("vitis_hls")
    if synth and vitis is None:
        raise ConveyorError("--synth runs vitis_hls, which is not on PATH (source Vitis' settings64.sh); "
                            "without it: conveyor compile, then vitis_hls -f build_prj.tcl per board")
    plan = Plan.load(plan_path)
    graph = _resolve_model(model, fingerprint=plan.fingerprint)
    manifest = compile_plan(plan, graph, out_dir, io_type=io_type)
    manifest["model_source"] = model  # csim re-reads the model from here
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for b in manifest["boards"]:
        click.echo(f"{b['device']}: {b['part']} at {b['clock_hz'] / 1e6:.0f} MHz, top {b['top']}, "
                   f"{plural(len(b['layers']), 'layer')}, {b['io_type']} -> {Path(out_dir) / b['device']}")
        if b["departs_from_plan"]:
            click.echo(f"{b['device']}: {plural(len(b['departs_from_plan']), 'layer')} the plan spills to memory "
                       "keep their activations on chip here (manifest: departs_from_plan)")
    for h in manifest["hosts"]:
        click.echo(f"{h['device']}: {h['kind']} stage, not compiled")
    click.echo(f"manifest: {Path(out_dir) / 'manifest.json'}")
    if synth:
        _synthesize(Path(out_dir), manifest, vitis)


def _synthesize(out_dir: Path, manifest: dict, vitis: str) -> None:
    """vitis_hls -f build_prj.tcl -tclargs synth=1 per board, with nnet_utils/ap_types from the wheel beside it."""
    import shutil
    import subprocess

    from conveyor.codegen.headers import vivado_headers

    ap_dir, nnet_dir, _ = vivado_headers()
    for b in manifest["boards"]:
        if b.get("replica_of"):
            continue
        d = out_dir / b["device"]
        for src, name in ((nnet_dir, "nnet_utils"), (ap_dir, "ap_types")):
            shutil.copytree(src, d / name, dirs_exist_ok=True)
        click.echo(f"{b['device']}: vitis_hls -f build_prj.tcl -tclargs synth=1 ...")
        p = subprocess.run([vitis, "-f", "build_prj.tcl", "-tclargs", "synth=1"], cwd=d, capture_output=True,
                           text=True, check=False)
        (d / "vitis_hls_synth.log").write_text(p.stdout + p.stderr)
        if p.returncode:
            raise ConveyorError(f"{b['device']}: vitis_hls exited {p.returncode}; see {d / 'vitis_hls_synth.log'}")
    click.echo(f"synthesis reports: conveyor report {out_dir}")


@click.command("csim")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--inputs", "inputs_spec", required=True, help="digits, a .npy of samples (axis 0), or an .npz with x.")
@click.option("--model", default=None, help="The model (default: the one `conveyor compile` recorded).")
@click.option("-n", "count", type=click.IntRange(min=1), default=None, help="Simulate the first N samples.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the model's outputs (.npz) here.")
@requant_option
def csim_cmd(out_dir: str, inputs_spec: str, model: str | None, count: int | None, output: str | None) -> None:
    """Build every board's C simulation with g++, run them in pipeline order on the inputs
    and check each board's outputs against the emulator bit for bit."""
    import numpy as np

    from conveyor.cli import _load_samples, _resolve_model
    from conveyor.codegen.csim import compare, run_chain

    if not (Path(out_dir) / "manifest.json").exists():
        raise ConveyorError(f"{out_dir}: no manifest.json; DIR is what `conveyor compile PLAN -o DIR` wrote")
    manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    model = model or manifest.get("model_source")
    if not model:
        raise ConveyorError(f"{out_dir}/manifest.json names no model; pass --model")
    graph = _resolve_model(model, fingerprint=manifest.get("fingerprint"))
    if inputs_spec.endswith(".npy"):
        from conveyor.cli_inputs import load_array_file  # allow_pickle off, each bad file one line

        x, _ = load_array_file(inputs_spec, "--inputs")
    else:
        x, _ = _load_samples(inputs_spec, graph, count)
    if count is not None:
        x = x[:count]
    from conveyor.cli_inputs import sample_shape

    per_item = sample_shape(graph.inputs[0].shape)   # [1, 16] -> (16,); a sequence [16, 1, 32]: all of it
    if tuple(np.shape(x)[1:]) != per_item and int(np.prod(np.shape(x)[1:])) != int(np.prod(per_item)):
        raise ConveyorError(f"--inputs {inputs_spec}: samples of shape {tuple(np.shape(x)[1:])}; model "
                            f"'{graph.name}' takes {per_item}")
    feeds = {graph.input_names[0]: np.asarray(x, dtype=np.float64)}
    env, runs = run_chain(out_dir, feeds)
    bad = compare(graph, manifest["precision"], feeds, runs)
    for r in runs:
        where = "cached" if r.cached else f"built in {r.build_s:.1f} s"
        same = "differs" if bad is not None and bad.board == r.device else "equal to the emulator"
        click.echo(f"{r.device}: {r.items} items, {r.items_per_s:,.0f} items/s ({where}); outputs {same}"
                   + (f" (split stage: the slices of {', '.join(q.device for q in r.parts)} gathered)" if r.parts else ""))
    if output:
        n = len(x)
        np.savez(output, **{t: env[t].reshape((n, *sample_shape(graph.tensors[t].shape))) for t in graph.output_names})
        click.echo(f"outputs: {output}")
    if bad is not None:
        raise ConveyorError(f"C simulation differs from the emulator: {bad}")


@click.command("report")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def report_cmd(out_dir: str, as_json: bool) -> None:
    """Read each board's Vitis HLS csynth.xml under DIR (from `conveyor compile` and
    `vitis_hls -f build_prj.tcl`) and print it beside the plan's modeled figures."""
    from rich.console import Console
    from rich.table import Table

    from conveyor.codegen.synth_report import compare_board, find_report, read_csynth

    manifest_path = Path(out_dir) / "manifest.json"
    if not manifest_path.is_file():
        raise ConveyorError(f"{out_dir}: no manifest.json; give the folder `conveyor compile -o DIR` wrote")
    try:
        manifest = json.loads(manifest_path.read_text())
        boards = manifest["boards"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConveyorError(f"{manifest_path}: not a conveyor compile manifest ({e}); "
                            "give the folder `conveyor compile -o DIR` wrote") from None
    result, missing = [], []
    for b in boards:
        path = find_report(Path(out_dir) / b["device"], b["top"])
        if path is None:
            missing.append(b["device"])
            continue
        rep = read_csynth(path)
        result.append({"device": b["device"], "report": rep.as_dict(), "rows": compare_board(b, rep)})
    if not result:
        raise ConveyorError(f"{out_dir}: no board has a csynth.xml (looked for <device>/<top>_prj/solution1/syn/"
                            f"report/csynth.xml for {', '.join(missing)}); run `vitis_hls -f build_prj.tcl` "
                            "in each board folder, or `conveyor compile --synth`")
    if as_json:
        click.echo(json.dumps({"boards": result, "missing": missing}, indent=2))
        return
    from conveyor.units import eng

    out = Console()
    for r in result:
        rep = r["report"]
        t = Table(title=f"{r['device']}: {rep['top']} on {rep['part']} (HLS {rep['version']})", title_justify="left",
                  caption=rep["path"], caption_justify="left")
        for col in ("", "synthesized", "plan", "ratio"):
            t.add_column(col, justify="left" if not col else "right")
        for row in r["rows"]:
            fmt = (lambda v, u=row["unit"]: eng(v, u)) if row["unit"] else (lambda v: f"{v:,}")
            t.add_row(row["quantity"], "-" if row["synthesized"] is None else fmt(row["synthesized"]),
                      "-" if row["modeled"] is None else fmt(row["modeled"]),
                      "-" if row["ratio"] is None else f"{row['ratio']:.2f}x")
        out.print(t)
    for d in missing:
        out.print(f"{d}: no csynth.xml yet")
