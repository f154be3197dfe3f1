"""`conveyor compile` and `conveyor csim`: a Plan to one HLS project per FPGA board, and the
boards' C simulation (g++) chained and compared with the emulator bit for bit."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from conveyor.errors import ConveyorError


@click.command("compile")
@click.argument("plan_path", metavar="PLAN", type=click.Path(dir_okay=False))
@click.option("--model", required=True, help="The model the plan was made for (.onnx file or zoo name).")
@click.option("-o", "--output", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Write DIR/<device>/ per FPGA board, DIR/manifest.json and DIR/README.md here.")
def compile_cmd(plan_path: str, model: str, out_dir: str) -> None:
    """Write one Vitis HLS project per FPGA board of PLAN (docs/codegen.md)."""
    from conveyor.cli import _resolve_model
    from conveyor.codegen import compile as compile_plan
    from conveyor.plan import Plan

    plan = Plan.load(plan_path)
    graph = _resolve_model(model)
    manifest = compile_plan(plan, graph, out_dir)
    manifest["model_source"] = model  # csim re-reads the model from here
    (Path(out_dir) / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for b in manifest["boards"]:
        click.echo(f"{b['device']}: {b['part']} at {b['clock_hz'] / 1e6:.0f} MHz, top {b['top']}, "
                   f"{len(b['layers'])} layers -> {Path(out_dir) / b['device']}")
    for h in manifest["hosts"]:
        click.echo(f"{h['device']}: {h['kind']} stage, not compiled")
    click.echo(f"manifest: {Path(out_dir) / 'manifest.json'}")


@click.command("csim")
@click.argument("out_dir", metavar="DIR", type=click.Path(file_okay=False, exists=True))
@click.option("--inputs", "inputs_spec", required=True, help="digits, a .npy of samples (axis 0), or an .npz with x.")
@click.option("--model", default=None, help="The model (default: the one `conveyor compile` recorded).")
@click.option("-n", "count", type=int, default=None, help="Simulate the first N samples.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the model's outputs (.npz) here.")
def csim_cmd(out_dir: str, inputs_spec: str, model: str | None, count: int | None, output: str | None) -> None:
    """Build every board's C simulation with g++, run them in pipeline order on the inputs
    and check each board's outputs against the emulator bit for bit."""
    import numpy as np

    from conveyor.cli import _load_samples, _resolve_model
    from conveyor.codegen.csim import compare, run_chain

    manifest = json.loads((Path(out_dir) / "manifest.json").read_text())
    model = model or manifest.get("model_source")
    if not model:
        raise ConveyorError(f"{out_dir}/manifest.json names no model; pass --model")
    graph = _resolve_model(model)
    if inputs_spec.endswith(".npy"):
        if not os.path.exists(inputs_spec):
            raise ConveyorError(f"--inputs {inputs_spec}: no such file")
        x = np.load(inputs_spec)
    else:
        x, _ = _load_samples(inputs_spec, graph, count)
    if count is not None:
        x = x[:count]
    per_item = tuple(graph.inputs[0].shape[1:])
    if tuple(np.shape(x)[1:]) != per_item and int(np.prod(np.shape(x)[1:])) != int(np.prod(per_item)):
        raise ConveyorError(f"--inputs {inputs_spec}: samples of shape {tuple(np.shape(x)[1:])}; model "
                            f"'{graph.name}' takes {per_item}")
    feeds = {graph.input_names[0]: np.asarray(x, dtype=np.float64)}
    env, runs = run_chain(out_dir, feeds)
    bad = compare(graph, manifest["precision"], feeds, runs)
    for r in runs:
        where = "cached" if r.cached else f"built in {r.build_s:.1f} s"
        same = "differs" if bad is not None and bad.board == r.device else "equal to the emulator"
        click.echo(f"{r.device}: {r.items} items, {r.items_per_s:,.0f} items/s ({where}); outputs {same}")
    if output:
        n = len(x)
        np.savez(output, **{t: env[t].reshape((n, *graph.tensors[t].shape[1:])) for t in graph.output_names})
        click.echo(f"outputs: {output}")
    if bad is not None:
        raise ConveyorError(f"C simulation differs from the emulator: {bad}")


def parse_backends(specs: tuple[str, ...], plan) -> dict[str, str]:
    """`run --backend`: NAME for every FPGA stage's devices, or DEVICE=NAME for one device."""
    from conveyor.runtime.device import BACKENDS

    devices = {d for st in plan.stages for d in (st.device, *st.replicas)}
    fpga = [d for st in plan.stages if st.device_kind == "fpga" for d in (st.device, *st.replicas)]
    out: dict[str, str] = {}
    for spec in specs:
        device, _, name = spec.rpartition("=")
        if name not in BACKENDS:
            raise ConveyorError(f"--backend {spec}: unknown backend '{name}'; accepted: {', '.join(BACKENDS)}, "
                                "as NAME (every FPGA stage) or DEVICE=NAME")
        if device and device not in devices:
            raise ConveyorError(f"--backend {spec}: the plan has no device '{device}'; its devices: "
                                f"{', '.join(sorted(devices))}")
        for d in ([device] if device else fpga):
            out[d] = name
    return out
