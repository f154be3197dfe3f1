"""From a Plan to one Vitis HLS project per FPGA board (docs/codegen.md).

`compile(plan, graph, out_dir)` writes DIR/<device>/ per FPGA stage (a replicated stage: one
per device, the same code), DIR/manifest.json (boards in pipeline order, their ports, links
and modeled figures) and DIR/README.md. `conveyor.codegen.csim` builds and runs them.
"""

from __future__ import annotations

import json
from pathlib import Path

from conveyor.errors import CodegenError

__all__ = ["compile", "CodegenError"]


def compile(plan, graph, out_dir, io_type: str | None = None) -> dict:  # noqa: A001 (conveyor.compile)
    """Write the HLS projects of `plan`'s FPGA stages under `out_dir`; returns the manifest.
    `io_type`: io_parallel (arrays between layers) or io_stream (FIFOs, line buffers); default:
    io_stream where the plan's precision has `order: hls4ml_io_stream` (an hls4ml config with
    IOType: io_stream), else io_parallel."""
    from conveyor.codegen.board import write_board
    from conveyor.codegen.stream import io_type_of
    from conveyor.runtime.stages import build_stages

    io_type = io_type_of(plan.precision, io_type)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from conveyor.graph.names import resolve_config
    from conveyor.graph.quantized import tensor_formats

    specs = build_stages(plan, graph, backends={st.device: "emulator" for st in plan.stages})
    formats = tensor_formats(graph, resolve_config(graph, plan.precision))
    catalog = plan.cluster.get("catalog", {})
    board_of = {d["name"]: d.get("board") for d in plan.cluster.get("devices", [])}
    index = {d["name"]: k for k, d in enumerate(plan.cluster.get("devices", []))}
    dest_bits = max(1, (len(index) - 1).bit_length())   # TDEST: a device's index in the cluster
    boards, hosts = [], []
    for i, (spec, st) in enumerate(zip(specs, plan.stages)):
        if st.device_kind != "fpga":
            hosts.append({"device": st.device, "kind": st.device_kind, "stage": i, "layers": list(st.layers),
                          "runs_on": "host (not compiled; conveyor run executes it)"})
            continue
        parts = None
        if st.split:   # one board per device, each its slice of the output channels (codegen/split.py)
            from conveyor.codegen.split import split_specs

            parts = split_specs(spec, st, i, formats)
        board = catalog.get("boards", {}).get(board_of.get(st.device), {})
        part = board.get("part", "")
        part_entry = catalog.get("parts", {}).get(part, {})
        clock = float(board.get("clock_hz") or part_entry.get("clock_hz") or 200e6)
        prev = plan.stages[i - 1].link_out if i > 0 else None
        link_in = prev.link if prev is not None and plan.stages[i - 1].device_kind == "fpga" else "host"
        link_out = st.link_out.link if st.link_out is not None and i + 1 < len(plan.stages) \
            and plan.stages[i + 1].device_kind == "fpga" else "host"
        port_in = specs[i - 1].forwards if i > 0 else spec.needs   # what the incoming link carries, in order
        crossing = {t: (formats[t], graph.tensors[t].shape) for t in port_in if t not in spec.needs}
        devices = (st.device, *st.replicas)
        nxt = (plan.stages[i + 1].device, *plan.stages[i + 1].replicas) if link_out != "host" else ()
        if nxt and plan.stages[i + 1].split:   # a split stage: every device reads every item (a broadcast)
            nxt = nxt[:1]
        for r, device in enumerate(devices):
            # on a switched link the receiving board's index goes in TDEST: item j of this
            # replica is the pipeline's item r + j * len(devices), taken by next replica (that % len(nxt))
            # (a split stage's devices each send every item: item j to next replica j % len(nxt), via the gather)
            first = 0 if parts else r
            tdest = tuple(index[nxt[(first + j * (1 if parts else len(devices))) % len(nxt)]] for j in range(len(nxt))) \
                if _switched(plan.cluster, link_out) else ()
            entry = write_board(parts[r][0] if parts else spec, st, device, out / device, link_in=link_in,
                                link_out=link_out, part=part,
                                clock_hz=clock, host_interface=board.get("host_interface", "?"), port_in=port_in,
                                passthrough=crossing, tdest=tdest[:1] if len(set(tdest)) == 1 else tdest,
                                dest_in=index[device] if _switched(plan.cluster, link_in) else 0,
                                dest_bits=dest_bits, io_type=io_type)
            entry["stage"] = i
            entry["replica_of"] = st.device if device != st.device and not parts else None
            if parts:
                entry["split"] = parts[r][1]
            boards.append(entry)
    manifest = {"model": plan.model, "fingerprint": plan.fingerprint, "precision": plan.precision,
                "interval_s": plan.interval_s, "latency_s": plan.latency_s, "io_type": io_type,
                "reduction_order": "the emulator's (ONNX graph order: Dense adds inputs ii = 0 .. n_in-1)",
                "boards": boards, "hosts": hosts,
                "links": [{"src": s.link_out.src, "dst": s.link_out.dst, "link": s.link_out.link,
                           "tensors": list(s.link_out.tensors), "bytes": s.link_out.bytes}
                          for s in plan.stages if s.link_out is not None]}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "README.md").write_text(_readme(manifest))
    return manifest


def _switched(cluster: dict, link: str) -> bool:
    """Whether frames on `link` cross a switch that routes them by destination: the cluster's
    topology is `switch`, or the link's catalog entry says `switched: true` (Ethernet)."""
    if link == "host":
        return False
    return cluster.get("topology") == "switch" or bool(cluster.get("catalog", {}).get("links", {})
                                                        .get(link, {}).get("switched", False))


def _split_note(m: dict) -> str:
    split = [b for b in m["boards"] if b.get("split")]
    if not split:
        return ""
    rows = "\n".join(f"- {b['device']}: stage {b['split']['stage']}, channels {b['split']['channels'][0]}.."
                     f"{b['split']['channels'][1] - 1} of {b['split']['of']} of '{b['split']['tensor']}'" for b in split)
    return f"""## Split stages (one layer's output channels over several boards)
{rows}

Not generated, to be provided around these boards: the fan-out (every device of a split stage reads
every item: an AXI4-Stream broadcaster or the host) and the gather (the slices' values one after
another in device order: an AXI4-Stream combiner before the next board, or the host; see each
board's `split` entry in manifest.json). `conveyor csim` does both in software.

"""


def _readme(m: dict) -> str:
    rows = "\n".join(f"| {b['device']} | {b['part']} | {b['clock_hz'] / 1e6:.0f} MHz | `{b['top']}` | "
                     f"{len(b['layers'])} | {b['ports'][0]['link']} -> {b['ports'][1]['link']} |" for b in m["boards"])
    return f"""# HLS projects for {m['model']} (generated by `conveyor compile`)

IO type: {m.get('io_type', 'io_parallel')} (io_stream: FIFOs of pixels and line buffers; each FIFO's depth is in
manifest.json, `boards[].fifos`).

| board | part | clock | top | layers | link in -> out |
|---|---|---|---|---|---|
{rows}

Each board folder holds `firmware/` (the top function, one nnet_utils call per layer, typedefs
per tensor, weights as raw integers), `tb/tb.cpp` (raw int64 values in, raw bit patterns out),
`build_csim.sh` (g++) and `build_prj.tcl` (Vitis HLS).

{_split_note(m)}## To a bitstream
1. Copy hls4ml {__import__('conveyor.codegen.headers', fromlist=['x']).HLS4ML_VERSION}'s `templates/vivado/nnet_utils` into each board folder.
2. `vitis_hls -f build_prj.tcl -tclargs synth=1 export=1` per board, then place the IP with the
   link IP (Aurora / SRIO) or an AXI DMA for the first and last board (see manifest.json).

## What was checked here and what was not
Checked: `conveyor csim DIR --inputs X` builds every board with g++ against the real ap_types
and nnet_utils headers, chains them in pipeline order and compares with the emulator bit for bit.
Not checked: synthesis, timing, co-simulation, the link IP, and the weights as ROMs (they are
loaded from raw integers on the first call: a C-simulation path, see docs/codegen.md).
"""
