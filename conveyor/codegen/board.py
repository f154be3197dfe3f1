"""One FPGA board's HLS project: firmware/ (top function, layers, typedefs, weights), tb/,
build_csim.sh and build_prj.tcl, written from a runtime StageSpec and the plan's stage."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from conveyor.codegen.layers import WIRING, WRITERS, Layer, fixed, ident
from conveyor.codegen.single_reader import one_reader_per_array
from conveyor.codegen.stream import StreamWriter
from conveyor.codegen.weight_stream import WeightMemory, stream_memory_lines, streams
from conveyor.codegen.weights_rom import ROM_BRANCH, declarations, write_rom
from conveyor.errors import CodegenError

#: the AXI4-Stream data width of every board port (the catalog gives links' bandwidths, not
#: widths; 64 bits is the user interface of Aurora 64B/66B, PG074, and of a PYNQ AXI DMA)
STREAM_WIDTH = 64
#: weight sets larger than this (values) go to binary files read by the C simulation
HEADER_WEIGHTS_MAX = 4096
INCLUDE = Path(__file__).parent / "include"


@dataclass(frozen=True)
class Port:
    name: str
    tensors: tuple[tuple[str, str, int, int], ...]   # (tensor, element type, width bits, items per inference)
    link: str                                        # catalog link, or "host"
    m_axi: bool = False                              # an Alveo card's host side: memory, not a stream
    dest_bits: int = 1                               # TDEST width (the same on every link of the cluster)
    tdest: tuple[int, ...] = ()                      # on a switched link_out: the receiving board(s), else 0

    @property
    def beats(self) -> int:
        return sum(-(-n // (STREAM_WIDTH // w)) for _, _, w, n in self.tensors)

    def as_dict(self) -> dict:
        iface = ({"interface": "m_axi", "stream": f"ap_uint<{STREAM_WIDTH}> * (m_axi, offset via s_axilite)"}
                 if self.m_axi else {"interface": "axis",
                                     "stream": f"hls::stream<ap_axiu<{STREAM_WIDTH},0,0,{self.dest_bits}>>"})
        dest = {"switched": bool(self.tdest), "tdest": list(self.tdest) if len(self.tdest) > 1 else
                (self.tdest[0] if self.tdest else 0)}
        return {"name": self.name, **iface, "width_bits": STREAM_WIDTH, **dest,
                "link": self.link, "tensors": [{"tensor": t, "element_type": ty, "element_bits": w, "items": n}
                                               for t, ty, w, n in self.tensors],
                "beats": self.beats}


def _formats(spec):
    """Every tensor's format and shape in the stage sub-graph, and the emulator with its parameters."""
    from conveyor.graph.quantized import Emulator

    emu = Emulator(spec.graph, spec.precision, input_formats=spec.input_formats)
    zeros = {t.name: np.zeros(t.shape, t.dtype) for t in spec.graph.inputs}
    emu.run(zeros, fetch=[t for t in spec.graph.tensors if not spec.graph.is_weight(t)])
    return emu, dict(emu.last_formats)


def write_board(spec, stage, device: str, out: Path, *, link_in: str, link_out: str, part: str, clock_hz: float,
                host_interface: str, port_in: tuple[str, ...] | None = None,
                passthrough: dict | None = None, host_forwards: bool = False, tdest: tuple[int, ...] = (),
                dest_in: int = 0, dest_bits: int = 1, io_type: str = "io_parallel") -> dict:
    """Write `device`'s project under `out`; returns its manifest entry. `port_in`: the tensors
    the incoming link carries, in its order (the previous board's outputs; default the stage's
    inputs); those the stage does not read (`passthrough`: tensor -> (format, shape)) cross
    the board untouched, from link_in to link_out, in ONNX order (a skip connection).
    `host_forwards`: values the stage passes on without computing them stay with the host
    (the csim Device backend's runtime forwards them) instead of on the ports. `tdest`: on a
    switched link_out, the cluster index of the receiving board (several: the next stage's
    replicas, one item each in turn); `dest_in`: the TDEST the incoming beats carry (the tb's).
    `io_type`: io_parallel (arrays between the layers) or io_stream (FIFOs of pixels, line
    buffers; codegen/stream.py)."""
    g = spec.graph
    emu, fmts = _formats(spec)
    shapes = {name: t.shape for name, t in g.tensors.items() if not g.is_weight(name)}
    port_in = tuple(port_in) if port_in is not None else tuple(spec.needs)
    crossing = [t for t in port_in if t not in spec.needs]
    for t in crossing:
        if t not in (passthrough or {}) or t not in spec.forwards:
            raise CodegenError(f"board {device}: link_in carries '{t}', which the stage neither reads nor passes on")
        fmts[t], shapes[t] = passthrough[t]
    var = {t: ident(t) for t in shapes}          # tensor -> C array holding it
    # values per item: the whole tensor (batch 1: its shape less the leading 1; an LSTM's [seq, 1, n])
    size = {t: int(np.prod(s, dtype=np.int64)) if s else 0 for t, s in shapes.items()}
    fw = out / "firmware"
    (fw / "weights").mkdir(parents=True, exist_ok=True)
    (out / "tb").mkdir(parents=True, exist_ok=True)
    typedefs, configs, calls, weight_decls, loads, layer_fns, modules = [], [], [], [], [], [], {}
    wmem = WeightMemory()
    for t in (*g.input_names, *crossing):
        typedefs.append(f"typedef {fixed(fmts[t], f'input {t}')} {var[t]}_t;  // {t}"
                        + (" (crosses the board)" if t in crossing else ""))
    hwc_inputs = {t for t in g.input_names if len(shapes[t]) == 4}
    hwc: set[str] = set(hwc_inputs)   # tensors whose C array is channels last (4-D inputs: transposed on entry)

    sw = StreamWriter(g, shapes, var) if io_type == "io_stream" else None
    if sw is not None:
        sw.inputs = port_in

    def chw(t):  # the transpose template arguments of a 4-D tensor
        _, c, h, w = shapes[t]
        return f"{c}, {h}, {w}"

    for i, node in enumerate(g.nodes):
        outs = [o for o in node.outputs if o]
        if node.op_type in WIRING:
            src, y = node.inputs[0], outs[0]
            if fmts.get(y) != fmts.get(src):
                raise CodegenError(f"node '{node.name}' ({node.op_type}) changes its value's format")
            if sw is not None:
                sw.wiring(node, src, y)
                continue
            users = g.consumers(y)
            if src in hwc and len(shapes[y]) != 4 and users and y not in spec.forwards \
                    and all(u.name in emu.input_order for u in users):
                # order hls4ml_io_parallel: the Dense after this Flatten sums in H, W, C order (the
                # emulator permuted its weights to it), so it reads the channels-last array as it is
                var[y] = var[src]
                continue
            if src in hwc and tuple(shapes[y]) != tuple(shapes[src]):   # another shape: in ONNX order
                # back to ONNX's channels-first order, so the next Dense reads its inputs in the graph's order
                var[y] = ident(y)
                typedefs.append(f"typedef {var[src]}_t {var[y]}_t;  // {y} ({node.name})")
                calls.append(f"    {var[y]}_t {var[y]}[{size[y]}];\n"
                             f"    conveyor::hwc_to_chw<{var[y]}_t, {chw(src)}>({var[src]}, {var[y]});  // {node.name}")
                if len(shapes[y]) == 4 and shapes[y][0] == 1:   # another [1, C, H, W]: channels last again
                    calls.append(f"    {var[y]}_t {var[y]}_hwc[{size[y]}];\n    conveyor::chw_to_hwc<{var[y]}_t, "
                                 f"{chw(y)}>({var[y]}, {var[y]}_hwc);  // {node.name}")
                    var[y] = f"{var[y]}_hwc"
                    typedefs.append(f"typedef {ident(y)}_t {var[y]}_t;  // {y} ({node.name}, channels last)")
                    hwc.add(y)
            elif src not in hwc and len(shapes[y]) == 4 and shapes[y][0] == 1:
                # an ONNX-order value reshaped to one [1, C, H, W] item: channels last, as the 4-D layers read it
                var[y] = ident(y)
                typedefs.append(f"typedef {var[src]}_t {var[y]}_t;  // {y} ({node.name})")
                calls.append(f"    {var[y]}_t {var[y]}[{size[y]}];\n"
                             f"    conveyor::chw_to_hwc<{var[y]}_t, {chw(y)}>({var[src]}, {var[y]});  // {node.name}")
                hwc.add(y)
            else:
                var[y] = var[src]
                if src in hwc:
                    hwc.add(y)
            continue
        writer = WRITERS.get(node.op_type)
        if writer is None:
            raise CodegenError(f"node '{node.name}': op {node.op_type} has no HLS writer yet; supported: "
                               f"{', '.join([*WRITERS, *WIRING])}")
        used = [o for o in outs if g.consumers(o) or o in spec.forwards]   # LSTM: Y, Y_h, Y_c
        if len(used) > 1:
            raise CodegenError(f"node '{node.name}' ({node.op_type}): its outputs {used} are all read; code "
                               "generation takes one output per node")
        y = used[0] if used else outs[0]
        typedefs.append(f"typedef {fixed(fmts[y], f'node {node.name!r} result')} {var[y]}_t;  // {y} ({node.name})")
        params = {slot: (emu.params[(node.name, slot)], emu.param_formats[(node.name, slot)])
                  for slot in range(len(node.inputs)) if (node.name, slot) in emu.params}
        data_ins = [t for s, t in enumerate(node.inputs) if t and s not in params and not g.is_weight(t)]
        params.update(_zero_bias(node, params))
        layer = Layer(node=node, index=i, prec=emu.node_precision[node.name], in_fmts=tuple(fmts[t] for t in data_ins),
                      out_fmt=fmts[y], in_shapes=tuple(shapes[t] for t in data_ins), out_shape=shapes[y], params=params,
                      parallelism=int(stage.parallelism.get(node.name, 1)),
                      consts={s: np.asarray(g.weights[t]) for s, t in enumerate(node.inputs)
                              if t and s not in params and t in g.weights}, output=list(node.outputs).index(y),
                      # io_stream: 4-D values are pixel streams, channels together (channels last)
                      in_hwc=tuple(t in hwc or (sw is not None and len(shapes[t]) == 4) for t in data_ins))
        if sw is not None:
            cfg, call, flat, kind = sw.write(writer, layer)
            if kind == "window":
                cfg += sw.window(layer)
        else:
            cfg, call, flat = writer(layer)
        configs.append(cfg)
        x = data_ins[0]
        # channels last: a 4-D result (not an LSTM's Y [seq, dirs, 1, H]; layers_more's only for one item, [1, C, H, W])
        if sw is None and len(shapes[y]) == 4 and getattr(writer, "channels_last", True) and \
                (shapes[y][0] == 1 or not getattr(writer, "any_layout", False)):
            if any(t not in hwc for t in data_ins) and not getattr(writer, "any_layout", False):
                raise CodegenError(f"node '{node.name}' ({node.op_type}): its 4-D input '{x}' is not channels last")
            hwc.add(y)
        code = call.format(x=var[x], x2=var[data_ins[-1]], y=var[y], xs=[var[t] for t in data_ins],
                           xs_t=[var[t] + "_t" for t in data_ins])
        streamed = streams(layer, stage, flat)
        if streamed:   # weights from DDR/HBM over m_axi, two tiles on chip (codegen/weight_stream.py)
            tcfg, fn, code = wmem.layer(layer, flat, (var[x], size[x]), (var[y], size[y]))
            configs += [tcfg] if tcfg else []
            if sw is not None:   # the kernel takes arrays: a stream <-> array adapter around it
                fn = sw.array_layer(i, node, fn, code, x, y, wmem.layers[node.name]["port"])
                code = f"layer{i}_{ident(node.name)[2:]}_stream("
        elif sw is not None:
            fn, name = sw.layer(i, node, layer, kind, code, data_ins, y)
            code = name + "("
        else:
            fn, code = layer_function(i, node.name, code, [(var[t], size[t]) for t in (*data_ins, y)])
        layer_fns.append(fn)
        modules[node.name] = code.split("(")[0]
        if sw is None:
                calls.append(f"    {var[y]}_t {var[y]}[{size[y]}];\n#pragma HLS ARRAY_PARTITION variable={var[y]} complete\n"
                         f"    {code}  // {node.name}")
        arrays = getattr(writer, "param_arrays", {})   # slot -> (C array, config type) where not w / b
        for slot, (values, pf) in params.items():
            if streamed and slot == 1:
                continue
            prefix, tname = arrays.get(slot, ("w", "weight_t") if slot == 1 else ("b", "bias_t"))
            name = f"{prefix}{i}"
            ctype = f"{layer.cfg}::{tname}"
            raw = np.asarray(fixed(pf, f"node '{node.name}' parameter").quantize_raw(flat[slot]), dtype=np.int64)
            write_rom(fw / "weights" / f"{name}_rom.h", name, ctype, raw, pf.width, f"{node.name} slot {slot}, {pf}")
            decl = [f"static {ctype} {name}[{raw.size}];"]
            if raw.size <= HEADER_WEIGHTS_MAX:
                (fw / "weights" / f"{name}.h").write_text(
                    f"// {node.name} slot {slot}: raw integers of {pf}, {raw.size} values\n"
                    f"static const long long {name}_raw[{raw.size}] = {{{', '.join(map(str, raw.tolist()))}}};\n")
                decl.append(f'#include "weights/{name}.h"')
            weight_decls += declarations(name, ctype, decl)
            if raw.size <= HEADER_WEIGHTS_MAX:
                loads.append(f"    for (int i = 0; i < {raw.size}; i++) conveyor::from_raw({name}[i], {name}_raw[i]);")
            else:
                raw.astype("<i8").tofile(fw / "weights" / f"{name}.bin")
                loads.append(f'    conveyor::load_raw_file({name}, {raw.size}, "{name}.bin");')
    top = ident(device)[2:]
    top = f"{top}_top"
    in_tensors, out_tensors = list(port_in), list(spec.forwards)
    if host_forwards:
        made = {o for n in g.nodes for o in n.outputs if o}
        out_tensors = [t for t in out_tensors if t in made]
    passed = [t for t in out_tensors if t not in var]
    if passed:
        raise CodegenError(f"board {device}: values {passed} cross it untouched (a skip connection over the board); "
                           "code generation does not route skip connections through a board yet")
    stream_lines, stream_out, fifos = [], {}, []
    if sw is not None:
        for t in in_tensors:
            if any(t in p.ins for p in sw.procs) or t in out_tensors:
                if len(shapes[t]) in (2, 4):
                    sw.declare(t)
        stream_lines, stream_out, fifos = sw.top(in_tensors, out_tensors, {t: var[t] for t in in_tensors})
        typedefs += sw.typedefs
    widths = {t: fixed(fmts[t], t).width for t in set(in_tensors + out_tensors)}
    for t, w in widths.items():
        if w > STREAM_WIDTH:
            raise CodegenError(f"tensor '{t}' has {w}-bit values, wider than the {STREAM_WIDTH}-bit stream")
    alveo = host_interface.startswith("pcie")   # a PCIe card: the host reaches it through its memory
    ports = [Port("link_in", tuple((t, str(fmts[t]), widths[t], size[t]) for t in in_tensors), link_in,
                  m_axi=alveo and link_in == "host", dest_bits=dest_bits),
             Port("link_out", tuple((t, str(fmts[t]), widths[t], size[t]) for t in out_tensors), link_out,
                  m_axi=alveo and link_out == "host", dest_bits=dest_bits, tdest=tuple(tdest))]
    p_in = (f"const ap_uint<{STREAM_WIDTH}> *host_in" if ports[0].m_axi else "hls::stream<link_t> &link_in")
    p_out = (f"ap_uint<{STREAM_WIDTH}> *host_out" if ports[1].m_axi else "hls::stream<link_t> &link_out")
    sig = f"void {top}({p_in}, {p_out}{wmem.signature()})"
    pragmas = wmem.pragmas()
    if wmem.layers:
        wmem.image().astype("<u8").tofile(fw / "weights" / "stream.bin")
    for port, name, bundle in ((ports[0], "host_in", "gmem_in"), (ports[1], "host_out", "gmem_out")):
        if port.m_axi:
            pragmas += [f"#pragma HLS INTERFACE m_axi port={name} offset=slave bundle={bundle} depth={port.beats}",
                        f"#pragma HLS INTERFACE s_axilite port={name} bundle=control"]
        else:
            pragmas.append(f"#pragma HLS INTERFACE axis port={port.name}")
    defines = ["#ifndef CONVEYOR_DEFINES_H_", "#define CONVEYOR_DEFINES_H_", '#include "conveyor_link.h"',
               *(['#include "conveyor_linebuf.h"  // io_stream: FIFOs of pixels, line buffers'] if sw else []),
               f"typedef ap_axiu<{STREAM_WIDTH}, 0, 0, {dest_bits}> link_t;", *typedefs]
    for t in dict.fromkeys(in_tensors + out_tensors):   # in port order: the same text, the same cached build
        defines.append(f"#define N_{var[t]} {size[t]}")
    defines += ["#endif", ""]
    (fw / "defines.h").write_text("\n".join(defines))
    (fw / "parameters.h").write_text("\n".join([
        "#ifndef CONVEYOR_PARAMETERS_H_", "#define CONVEYOR_PARAMETERS_H_",
        '#include "defines.h"', '#include "nnet_common.h"', '#include "nnet_mult.h"', '#include "nnet_dense.h"',
        '#include "nnet_dense_latency.h"', '#include "nnet_activation.h"', '#include "nnet_conv2d.h"',
        '#include "nnet_pooling.h"', '#include "nnet_merge.h"', '#include "nnet_batchnorm.h"',
        '#include "conveyor_im2col.h"', '#include "conveyor_layers.h"', '#include "conveyor_weights.h"',
        '#include "conveyor_stream.h"', "",
        *configs, *weight_decls, "", "#endif", ""]))
    (fw / f"{top}.h").write_text(f'#pragma once\n#include "defines.h"\n{sig};\n')
    middle = link_in != "host" and link_out != "host"
    control = ("#pragma HLS INTERFACE ap_ctrl_none port=return" if middle
               else "#pragma HLS INTERFACE s_axilite port=return bundle=control")
    body = [f"// {device}: layers {', '.join(n.name for n in g.nodes)}",
            "// generated by conveyor (conveyor/codegen); numerics: hls4ml nnet_utils, checked against the emulator",
            f'#include "{top}.h"', '#include "parameters.h"', "",
            "static void load_weights() {  // C simulation: from raw integers; synthesis: ROMs (weights/*_rom.h)",
            ROM_BRANCH.replace("#if ", "#if !(") + ")", "    static bool loaded = false;",
            "    if (loaded) return;", "    loaded = true;", *loads, "#endif", "}", "", *layer_fns,
            sig + " {", *pragmas, control, "#pragma HLS DATAFLOW", "    load_weights();"]
    if ports[0].m_axi:
        body += ["    hls::stream<link_t> link_in(\"link_in\");",
                 f"    conveyor::mem_to_stream<{STREAM_WIDTH}, {ports[0].beats}>(host_in, link_in);"]
    if ports[1].m_axi:
        body.append("    hls::stream<link_t> link_out(\"link_out\");")
    for t in in_tensors:
        body.append(f"    {var[t]}_t {var[t]}[{size[t]}];\n#pragma HLS ARRAY_PARTITION variable={var[t]} complete")
        if sw is not None:   # io_stream: the link's channels-first array, streamed as pixels below
            body.append(f"    conveyor::unpack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>(link_in, {var[t]});")
        elif t in hwc_inputs:
            body.append(f"    {var[t]}_t {var[t]}_chw[{size[t]}];")
            body.append(f"    conveyor::unpack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>(link_in, {var[t]}_chw);")
            body.append(f"    conveyor::chw_to_hwc<{var[t]}_t, {chw(t)}>({var[t]}_chw, {var[t]});")
        else:
            body.append(f"    conveyor::unpack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>(link_in, {var[t]});")
    body += calls + stream_lines
    if len(tdest) == 1:
        body.append(f"    const int tdest = {tdest[0]};  // the receiving board on the switched link")
    elif tdest:   # the next stage's replicas take one item each in turn
        body += [f"    static const int tdest_of[{len(tdest)}] = {{{', '.join(map(str, tdest))}}};",
                 "    static int tdest_next = 0;", "    const int tdest = tdest_of[tdest_next];",
                 f"    tdest_next = tdest_next + 1 == {len(tdest)} ? 0 : tdest_next + 1;"]
    for k, t in enumerate(out_tensors):
        src = var[t]
        if sw is not None:
            src = stream_out[t]
        elif t in hwc_inputs and t in in_tensors:   # read and passed on: its channels-first copy is at hand
            src = f"{var[t]}_chw"
        elif t in hwc:
            body.append(f"    {var[t]}_t {var[t]}_chw[{size[t]}];")
            body.append(f"    conveyor::hwc_to_chw<{var[t]}_t, {chw(t)}>({var[t]}, {var[t]}_chw);")
            src = f"{var[t]}_chw"
        body.append(f"    conveyor::pack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>({src}, link_out, "
                    f"{'true' if k == len(out_tensors) - 1 else 'false'}{', tdest' if tdest else ''});")
    if ports[1].m_axi:
        body.append(f"    conveyor::stream_to_mem<{STREAM_WIDTH}, {ports[1].beats}>(link_out, host_out);")
    if sw is None:   # DATAFLOW: a value read by several processes gets one copy per reader
        start = body.index(sig + " {")
        at = body.index("    load_weights();", start) + 1
        statements, clones = one_reader_per_array(body[at:])
        body = body[:start] + clones + body[start:at] + statements
    body += ["}", ""]
    (fw / f"{top}.cpp").write_text("\n".join(body))
    for h in INCLUDE.iterdir():
        if sw is not None or h.name != "conveyor_linebuf.h":
            shutil.copy(h, fw / h.name)
    _write_tb(out, top, in_tensors, out_tensors, var, size, ports, wmem, dest_in)
    _write_scripts(out, top, part, clock_hz)
    return {"device": device, "part": part, "clock_hz": clock_hz, "top": top, "layers": [n.name for n in g.nodes],
            "control": "ap_ctrl_none" if middle else "s_axilite", "host_interface": host_interface,
            "io_type": io_type, **({"fifos": fifos} if sw is not None else {}),
            "modules": modules,
            "weights_in": {n: ("on_chip" if n not in wmem.layers else stage.weights_in[n])
                           for n in modules if n in stage.weights_in},
            "weight_memory": wmem.manifest(),
            # the plan may spill activation buffers to DDR/HBM (planner: activations_in); the
            # generated code keeps every buffer on chip, so say where it departs from the plan
            "activations_in": {n: "on_chip" for n in modules},
            "departs_from_plan": [f"{n}: the plan spills its activations to {v}; the generated code keeps them "
                                  "on chip (activation spilling is not generated yet)"
                                  for n, v in stage.activations_in.items() if n in modules and v != "on_chip"],
            "ports": [p.as_dict() for p in ports],
            "modeled": {"latency_s": stage.latency_s, "interval_s": stage.compute_interval_s,
                        "stage_time_s": stage.stage_time_s, "resources": dict(stage.resources),
                        "parallelism": dict(stage.parallelism)}}


def _zero_bias(node, params: dict) -> dict:
    """A Conv / Gemm without a bias (torch's bias=False before a BatchNorm, or a folded BN with
    zero shift) gets an explicit zero bias in its weight's format: nnet's kernels start each sum
    from the bias, and a sum that starts from 0 is the emulator's bias-free sum exactly."""
    if node.op_type not in ("Conv", "Gemm") or 1 not in params or 2 in params \
            or (len(node.inputs) > 2 and node.inputs[2]):
        return {}
    w, fw = params[1]
    n_out = w.shape[0] if node.op_type == "Conv" or node.attr("transB", 0) else w.shape[1]
    return {2: (np.zeros(n_out), fw)}


def layer_function(index: int, name: str, code: str, arrays) -> tuple[str, str]:
    """A layer's call wrapped in its own function, `layer<index>_<name>` (INLINE off), so that
    synthesis reports one module per layer (codegen/measured.py maps it back); `arrays`: the
    (C array, size) the call reads and writes. Returns (definition, the call of it)."""
    fn = f"layer{index}_{ident(name)[2:]}"
    seen = list(dict.fromkeys(arrays))
    params = ", ".join(f"{a}_t {a}[{n}]" for a, n in seen)
    return (f"static void {fn}({params}) {{  // {name}\n#pragma HLS INLINE off\n    {code}\n}}\n",
            f"{fn}({', '.join(a for a, _ in seen)});")


def _write_tb(out: Path, top: str, ins, outs, var, size, ports, wmem: WeightMemory | None = None,
              dest_in: int = 0) -> None:
    """A testbench: raw int64 values per item in, raw bit patterns (uint64) per item out; with a
    third file name, each output beat's TDEST (uint64) there; `wmem` with streamed layers: their
    weight memory, read from $CONVEYOR_WEIGHTS/stream.bin."""
    n_in = sum(size[t] for t in ins)
    lines = [f'#include "{top}.h"', "#include <cstdio>", "#include <cstdlib>", "#include <string>", "#include <vector>", "",
             "// usage: tb INPUT.raw OUTPUT.raw  (little-endian int64 per value, items one after another)",
             "int main(int argc, char **argv) {",
             '    if (argc < 3) { std::fprintf(stderr, "usage: %s INPUT.raw OUTPUT.raw\\n", argv[0]); return 2; }',
             '    FILE *fi = std::fopen(argv[1], "rb"), *fo = std::fopen(argv[2], "wb");',
             '    if (!fi || !fo) { std::fprintf(stderr, "tb: cannot open the data files\\n"); return 2; }',
             '    FILE *fd = argc > 3 ? std::fopen(argv[3], "wb") : 0;',
             f"    std::vector<long long> raw({n_in});", "    long items = 0;",
             *(stream_memory_lines(wmem.at) if wmem is not None and wmem.layers else []),
             f"    while (std::fread(raw.data(), sizeof(long long), {n_in}, fi) == {n_in}) {{",
             "        hls::stream<link_t> link_in, link_out;", "        size_t at = 0;"]
    for k, t in enumerate(ins):
        lines += [f"        static {var[t]}_t {var[t]}[{size[t]}];",
                  f"        for (int i = 0; i < {size[t]}; i++) conveyor::from_raw({var[t]}[i], raw[at++]);",
                  f"        conveyor::pack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>({var[t]}, link_in, "
                  f"{'true' if k == len(ins) - 1 else 'false'}, {dest_in});"]
    args = ["link_in", "link_out"]
    if ports[0].m_axi:   # the host's DMA: the input beats in card memory
        lines += [f"        static ap_uint<{STREAM_WIDTH}> mem_in[{ports[0].beats}];",
                  f"        for (int i = 0; i < {ports[0].beats}; i++) mem_in[i] = link_in.read().data;"]
        args[0] = "mem_in"
    if ports[1].m_axi:
        lines.append(f"        static ap_uint<{STREAM_WIDTH}> mem_out[{ports[1].beats}];")
        args[1] = "mem_out"
    if wmem is not None:
        args += wmem.tb_args()
    lines.append(f"        {top}({', '.join(args)});")
    if ports[1].m_axi:
        lines.append(f"        conveyor::mem_to_stream<{STREAM_WIDTH}, {ports[1].beats}>(mem_out, link_out);")
    lines += ["        if (fd) {   // each output beat's TDEST, the beats put back in order",
              "            hls::stream<link_t> beats;",
              f"            for (int i = 0; i < {ports[1].beats}; i++) {{ link_t b = link_out.read(); "
              "unsigned long long d = b.dest.to_uint64(); std::fwrite(&d, sizeof d, 1, fd); beats.write(b); }",
              f"            for (int i = 0; i < {ports[1].beats}; i++) link_out.write(beats.read());", "        }"]
    for t in outs:
        lines += [f"        static {var[t]}_t o_{var[t]}[{size[t]}];",
                  f"        conveyor::unpack<{STREAM_WIDTH}, {var[t]}_t, {size[t]}>(link_out, o_{var[t]});",
                  f"        for (int i = 0; i < {size[t]}; i++) {{ unsigned long long b = conveyor::to_bits(o_{var[t]}[i]); "
                  "std::fwrite(&b, sizeof b, 1, fo); }"]
    lines += ["        items++;", "    }", "    std::fclose(fi);", "    std::fclose(fo);", "    if (fd) std::fclose(fd);",
              '    std::fprintf(stderr, "tb: %ld items\\n", items);', "    return 0;", "}", ""]
    (out / "tb" / "tb.cpp").write_text("\n".join(lines))


def _write_scripts(out: Path, top: str, part: str, clock_hz: float) -> None:
    (out / "build_csim.sh").write_text(f"""#!/bin/sh
# C simulation with g++: AP_TYPES and NNET_UTILS point at hls4ml {__import__('conveyor.codegen.headers', fromlist=['x']).HLS4ML_VERSION}'s
# templates/vivado/ap_types and templates/vivado/nnet_utils (conveyor csim sets them from the wheel).
# Large boards keep tens of MB of arrays on the stack: run ./csim after `ulimit -s unlimited`.
set -e
cd "$(dirname "$0")"
: "${{AP_TYPES:?set AP_TYPES to hls4ml's templates/vivado/ap_types}}"
: "${{NNET_UTILS:?set NNET_UTILS to hls4ml's templates/vivado/nnet_utils}}"
${{CXX:-g++}} -std=c++14 -O1 -w -isystem "$AP_TYPES" -I "$NNET_UTILS" -I firmware \\
    firmware/{top}.cpp tb/tb.cpp -o ${{OUT:-csim}}
""")
    (out / "build_csim.sh").chmod(0o755)
    period_ns = 1e9 / clock_hz
    (out / "build_prj.tcl").write_text(f"""# Vitis HLS project for {top}: vitis_hls -f build_prj.tcl [-tclargs csim=1 synth=1 cosim=0 export=0]
array set opt {{csim 0 synth 1 cosim 0 export 0}}
foreach arg $::argv {{ foreach {{k v}} [split $arg =] {{ set opt($k) $v }} }}
open_project -reset {top}_prj
set_top {top}
add_files firmware/{top}.cpp -cflags "-std=c++14 -I firmware -I nnet_utils"
add_files -tb tb/tb.cpp -cflags "-std=c++14 -I firmware -I nnet_utils"
open_solution -reset solution1
set_part {{{part}}}
create_clock -period {period_ns:.4f} -name default
if {{$opt(csim)}} {{ csim_design -argv "tb_data/input.raw tb_data/output.raw" }}
if {{$opt(synth)}} {{ csynth_design }}
if {{$opt(cosim)}} {{ cosim_design -argv "tb_data/input.raw tb_data/cosim_output.raw" }}
if {{$opt(export)}} {{ export_design -format ip_catalog }}
exit
""")
