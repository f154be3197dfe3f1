"""io_stream firmware (hls4ml's io_stream): the layers of a board connected by FIFOs of pixels.

A 4-D value [1, C, H, W] flows as H*W elements `conveyor::px<T, C>` (one position's channels
together, positions in H, W raster order); a 2-D value [1, N] as one element of N values.
Convolutions and pools run over a line buffer of k-1 padded rows + k pixels
(include/conveyor_linebuf.h) with the zero padding inserted on the fly; per-element layers
(Relu, LeakyRelu, Clip, BatchNorm, Sigmoid/Tanh tables, Requant, Add, Concat over channels) run
pixel by pixel on the io_parallel writer's kernel over one pixel ([1, C]); Dense/Gemm/Softmax
on a 2-D value read its one element. Flatten gathers the pixels into C, H, W order: the order
the emulator (and hls4ml io_stream) sums a Dense after it in. The board's ports stay the
link packing of io_parallel boards (channels first): the edge converts arrays <-> pixels.

A value read by several layers gets a `clone_stream` (at most 4 readers). Where the readers'
paths meet again (a residual Add, a fire module's Concat), the FIFO from the clone to each
faster branch is sized for the delay it carries (`skip_depths`): with A_b(k) the pixels of the
cloned value that branch b has read when it emits its pixel k (the line buffers' exact
schedule, composed along the branch), the branch's FIFO holds max_k (max_b' A_b'(k) - A_b(k))
pixels; every other FIFO holds DEFAULT_DEPTH. The other FIFOs and line buffers of a branch
only add room, so the rule is sufficient; tests/test_codegen_iostream.py checks it with the
bounded-FIFO C simulation (-DCONVEYOR_BOUNDED_FIFOS: one thread per process, every FIFO at
exactly its depth, a deadlock stops the run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from conveyor.codegen.layers import Layer, ident
from conveyor.errors import CodegenError

IO_TYPES = ("io_parallel", "io_stream")
#: the FIFO depth between two layers that no skip path couples (Vitis HLS' default)
DEFAULT_DEPTH = 2
#: readers one clone_stream serves
MAX_READERS = 4
WINDOW_OPS = ("Conv", "MaxPool", "AveragePool", "SumPool")
GLOBAL_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum")
#: ops that act on each pixel alone: their io_parallel kernel over one pixel ([1, C])
PIXEL_OPS = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "BatchNormalization", "Add", "Concat", "Requant")
SUPPORTED = (f"{', '.join(WINDOW_OPS + GLOBAL_OPS)} over a line buffer; {', '.join(PIXEL_OPS)} (Concat over "
             "channels; per-position Requant over the whole map) pixel by pixel; any other io_parallel op on a 2-D value [1, N] (Dense, Gemm, Softmax...); "
             "Flatten to 2-D, Reshape / Identity that keep the value's shape class")


def io_type_of(precision: dict, io_type: str | None) -> str:
    """The board's IO type: `io_type` when given (io_parallel | io_stream), else io_stream where
    the precision config's order is hls4ml_io_stream (an hls4ml config with IOType: io_stream)."""
    order = (precision or {}).get("order", "onnx") if isinstance(precision, dict) else "onnx"
    if io_type is None:
        return "io_stream" if order == "hls4ml_io_stream" else "io_parallel"
    if io_type not in IO_TYPES:
        raise CodegenError(f"io_type {io_type!r}; accepted: {list(IO_TYPES)}")
    if io_type == "io_stream" and order == "hls4ml_io_parallel":
        raise CodegenError("io_type io_stream with the precision's order hls4ml_io_parallel: that order sums a Dense "
                           "after a Flatten in H, W, C order (hls4ml io_parallel's permuted weights), io_stream "
                           "firmware flattens in C, H, W order; use order onnx or hls4ml_io_stream, or io_parallel")
    return io_type


@dataclass
class Process:
    name: str                       # the C++ function (or template) called in the top
    ins: list                       # stream tensors read, in argument order
    out: str | None                 # stream tensor written
    need: dict = field(default_factory=dict)   # input tensor -> pixels read when output pixel k is written
    pre: tuple = ()                 # arguments before the FIFOs (a weight port, an edge array)
    post: tuple = ()                # arguments after them (a collected array)
    node: str | None = None


class StreamWriter:
    """Collects one board's stream processes while board.py walks the nodes; `top` writes them."""

    def __init__(self, graph, shapes, var):
        self.g, self.shapes, self.var = graph, shapes, var   # var: board.py's tensor -> C name (shared)
        self.procs: list[Process] = []
        self.alias: dict[str, str] = {}      # tensor -> the stream tensor carrying it (wiring)
        self.typedefs: list[str] = []
        self.fifos: list[dict] = []
        self.win: dict = {}                  # node -> its window geometry (line-buffer layers)
        self.inputs: tuple = ()              # the tensors the board's link_in carries

    # --- shapes
    def geometry(self, t: str, node=None) -> tuple[int, int]:
        """(pixels, values per pixel) of a stream tensor."""
        s = self.shapes[t]
        if len(s) == 4 and s[0] == 1:
            return int(s[2]) * int(s[3]), int(s[1])
        if len(s) == 2 and s[0] == 1:
            return 1, int(s[1])
        who = f"node '{node.name}' ({node.op_type})" if node is not None else f"tensor '{t}'"
        raise CodegenError(f"{who}: io_stream takes values [1, C, H, W] or [1, N], got '{t}' of shape {list(s)}; "
                           "use io_parallel")

    def px(self, t: str) -> str:
        return f"{self.var[self.src(t)]}_px"

    def src(self, t: str) -> str:
        while t in self.alias:
            t = self.alias[t]
        return t

    def declare(self, t: str) -> None:
        p, c = self.geometry(t)
        self.typedefs.append(f"typedef conveyor::px<{self.var[t]}_t, {c}> {self.var[t]}_px;  // {p} per item")

    # --- nodes
    def wiring(self, node, src: str, y: str) -> None:
        a, b = self.shapes[src], self.shapes[y]
        if len(a) == 4 and len(b) == 2 and b[0] == 1 and node.op_type in ("Flatten", "Reshape") \
                and int(np.prod(a)) == int(np.prod(b)):
            _, c, h, w = a
            self.var[y] = ident(y)
            self.typedefs.append(f"typedef {self.var[self.src(src)]}_t {self.var[y]}_t;  // {y} ({node.name})")
            self.declare(y)
            p = h * w
            self.procs.append(Process(f"conveyor::flatten_pixels<{self.var[y]}_t, {c}, {h}, {w}>", [src], y,
                                      {src: np.full(1, p)}, node=node.name))
            return
        if tuple(a) == tuple(b) or (len(a) == 2 and len(b) == 2):
            self.alias[y] = src
            self.var[y] = self.var[self.src(src)]
            return
        raise CodegenError(f"node '{node.name}' ({node.op_type}): {list(a)} -> {list(b)}; io_stream rewires a 4-D "
                           f"value only by a Flatten (or Reshape) to [1, N]; supported: {SUPPORTED}")

    def write(self, writer, layer: Layer):
        """The writer's (config, call, flat parameters) for `layer` in stream mode, and its kind."""
        node = layer.node
        op = node.op_type
        for t in [*self._data_ins(node), *[o for o in node.outputs if o][:1]]:
            self.geometry(t, node)
        four = len(layer.out_shape) == 4
        if op in WINDOW_OPS and four:
            return (*writer(layer), "window")
        if op in GLOBAL_OPS and four:
            return (*writer(layer), "global")
        if not four and all(len(s) == 2 for s in layer.in_shapes):
            return (*writer(layer), "vector")
        if op in PIXEL_OPS and four:
            if op == "Concat" and int(node.attr("axis")) % 4 != 1:
                raise CodegenError(f"node '{node.name}' (Concat): over axis {int(node.attr('axis')) % 4} of a 4-D "
                                   f"value; io_stream concatenates over channels (axis 1) only; supported: {SUPPORTED}")
            if op == "Requant" and node.attr("spatial", 0):   # a multiplier per position: the whole map
                return (*writer(layer), "map")
            if any(len(s) != 4 or tuple(s[2:]) != tuple(layer.out_shape[2:]) for s in layer.in_shapes):
                raise CodegenError(f"node '{node.name}' ({op}): inputs {list(layer.in_shapes)} -> "
                                   f"{list(layer.out_shape)}; io_stream runs it pixel by pixel on same-size values")
            view = Layer(**{**layer.__dict__, "in_shapes": tuple((1, int(s[1])) for s in layer.in_shapes),
                            "out_shape": (1, int(layer.out_shape[1]))})
            return (*writer(view), "pixel")
        raise CodegenError(f"node '{node.name}': op {op} on a {len(layer.out_shape)}-D value has no io_stream writer; "
                           f"supported: {SUPPORTED}")

    def window(self, layer: Layer) -> str:
        """The window geometry of a line-buffer layer (kept for its FIFO schedule); for a pool
        also its `<cfg>_win` struct (a Conv's config already has these fields)."""
        from conveyor.codegen.layers import _conv_geometry
        from conveyor.ops.conv import window_geometry

        node = layer.node
        _, ch, h, w = layer.in_shapes[0]
        _, _, oh, ow = layer.out_shape
        if node.op_type == "Conv":
            top, left, bot, right, sh, sw, dh, dw = _conv_geometry(layer)
            kh, kw = layer.params[1][0].shape[2:]
        else:
            kh, kw = (int(k) for k in node.attr("kernel_shape"))
            dh = dw = 1
            if node.op_type == "SumPool":   # sumpool_2d_cl's geometry: the top / left pads and the output size
                top, left = (int(q) for q in list(node.attr("pads", [0, 0, 0, 0]))[:2])
                sh, sw = (int(q) for q in node.attr("strides", [1, 1]))
                bot, right = max(0, (oh - 1) * sh + kh - h - top), max(0, (ow - 1) * sw + kw - w - left)
            elif node.op_type == "AveragePool":
                geo = window_geometry(node, (h, w), (kh, kw), ceil_mode=bool(node.attr("ceil_mode", 0)),
                                      dilations=(1, 1))
                (top, left), (bot, right), (sh, sw) = geo.begin, geo.end, geo.strides
            else:
                top, left, bot, right = (list(node.attr("pads", [0, 0, 0, 0])) + [0] * 4)[:4]
                sh, sw = node.attr("strides", [1, 1])
        win = {"in_height": h, "in_width": w, "n_chan": ch, "filt_height": kh, "filt_width": kw,
               "stride_height": sh, "stride_width": sw, "pad_top": top, "pad_bottom": bot, "pad_left": left,
               "pad_right": right, "dilation_height": dh, "dilation_width": dw, "out_height": oh, "out_width": ow}
        win = {k: int(v) for k, v in win.items()}
        self.win[node.name] = win
        if node.op_type == "Conv":
            return ""
        fields = "".join(f"    static const unsigned {k} = {v};\n" for k, v in win.items())
        return f"struct {layer.cfg}_win {{  // {node.name}: the line buffer's window\n{fields}}};\n"

    def _data_ins(self, node):
        return [t for t in node.inputs if t and not self.g.is_weight(t)]

    def layer(self, i: int, node, layer: Layer, kind: str, code: str, data_ins, y) -> tuple[str, str]:
        """A layer's process function; returns (definition, the process name)."""
        fn = f"layer{i}_{ident(node.name)[2:]}"
        v, c = self.var, layer.cfg
        for t in data_ins:
            if self.src(t) not in self._made():
                raise CodegenError(f"node '{node.name}': input '{t}' is not on a stream")
        self.declare(y)
        x = data_ins[0]
        args = ", ".join(f"conveyor::fifo<{self.px(t)}> &s{k}" for k, t in enumerate(data_ins))
        head = f"static void {fn}({args}, conveyor::fifo<{v[y]}_px> &so) {{  // {node.name}\n#pragma HLS INLINE off\n"
        need = {}
        if kind == "window":
            op = node.op_type
            if op == "Conv":
                tmpl = "conv_2d_grouped_stream" if node.attr("group", 1) != 1 else "conv_2d_stream"
                body = f"    conveyor::{tmpl}<{v[x]}_t, {v[y]}_t, {c}>(s0, so, w{i}, b{i});\n"
            elif op == "SumPool":
                body = f"    conveyor::sumpool_2d_stream<{v[x]}_t, {v[y]}_t, {c}, {c}_win>(s0, so);\n"
            elif op == "MaxPool":
                body = f"    conveyor::maxpool_2d_stream<{v[x]}_t, {v[y]}_t, {c}_win>(s0, so);\n"
            else:
                body = f"    conveyor::avgpool_2d_stream<{v[x]}_t, {v[y]}_t, {c}, {c}_win>(s0, so);\n"
            need[x] = window_need(self.win[node.name])
        elif kind == "global":
            tmpl = "global_sum_stream" if node.op_type == "ReduceSum" else "global_avgpool_stream"
            body = f"    conveyor::{tmpl}<{v[x]}_t, {v[y]}_t, {c}>(s0, so);\n"
            need[x] = np.full(1, self.geometry(x)[0])
        elif kind == "map":   # the io_parallel kernel over the whole map (channels last), then its pixels
            (px_, cx), (py, cy) = self.geometry(x), self.geometry(y)
            body = (f"    static {v[x]}_t {v[x]}[{px_ * cx}];\n    static {v[y]}_t {v[y]}[{py * cy}];\n"
                    f"    conveyor::pixels_to_hwc<{v[x]}_t, {cx}, {px_}>(s0, {v[x]});\n    {code}\n"
                    f"    conveyor::hwc_to_pixels<{v[y]}_t, {cy}, {py}>({v[y]}, so);\n")
            need[x] = np.full(py, px_)
        else:   # pixel / vector: the io_parallel kernel on each pixel's arrays
            p = self.geometry(y)[0]
            reads = "".join(
                f"        {self.px(t)} i{k} = s{k}.read();\n        {v[t]}_t {v[t]}[{self.geometry(t)[1]}];\n"
                f"        for (int j = 0; j < {self.geometry(t)[1]}; j++) {v[t]}[j] = i{k}.data[j];\n"
                if t not in data_ins[:k] else f"        s{k}.read();  // the same value again (its own FIFO)\n"
                for k, t in enumerate(data_ins))
            n_y = self.geometry(y)[1]
            body = (f"{fn}_pixels:\n    for (int p = 0; p < {p}; p++) {{\n#pragma HLS PIPELINE II = 1\n{reads}"
                    f"        {v[y]}_t {v[y]}[{n_y}];\n        {code}\n        {v[y]}_px o;\n"
                    f"        for (int j = 0; j < {n_y}; j++) o.data[j] = {v[y]}[j];\n        so.write(o);\n    }}\n")
            for t in data_ins:
                need[t] = np.arange(1, p + 1)
        self.procs.append(Process(fn, list(data_ins), y, need, node=node.name))
        return head + body + "}\n", fn

    def array_layer(self, i: int, node, fn_def: str, call: str, x: str, y: str, port: str) -> str:
        """A layer whose kernel takes whole arrays (weights streamed from DDR): its input's pixels
        gathered channels last, the kernel, its result's pixels out (a stream <-> array adapter)."""
        v = self.var
        self.declare(y)
        (px_, cx), (py, cy) = self.geometry(x, node), self.geometry(y, node)
        fn = f"layer{i}_{ident(node.name)[2:]}_stream"
        inner = call.split("(")[0]
        body = (f"static void {fn}(const ap_uint<64> *weights, conveyor::fifo<{self.px(x)}> &s0, "
                f"conveyor::fifo<{v[y]}_px> &so) {{  // {node.name}: stream <-> array around the DDR-weight kernel\n"
                f"#pragma HLS INLINE off\n    static {v[x]}_t {v[x]}[{px_ * cx}];\n    static {v[y]}_t {v[y]}[{py * cy}];\n"
                f"    conveyor::pixels_to_hwc<{v[x]}_t, {cx}, {px_}>(s0, {v[x]});\n"
                f"    {inner}(weights, {v[x]}, {v[y]});\n"
                f"    conveyor::hwc_to_pixels<{v[y]}_t, {cy}, {py}>({v[y]}, so);\n}}\n")
        self.procs.append(Process(fn, [x], y, {x: np.full(py, px_)}, pre=(port,), node=node.name))
        return fn_def + body

    def _made(self) -> set:
        made = {p.out for p in self.procs if p.out}
        return made | set(self.inputs)

    # --- the top
    def top(self, in_tensors, out_tensors, unpacked: dict) -> tuple[list[str], dict, list[dict]]:
        """The top's body between the unpacked link arrays (`unpacked`: tensor -> channels-first
        array) and the pack: FIFOs, processes (DATAFLOW), and the arrays the pack reads.
        Returns (lines, tensor -> array to pack, the FIFOs for the manifest)."""
        v = self.var
        lines, emit = [], []
        streamed_in = [t for t in in_tensors if any(self.src(i) == t for p in self.procs for i in p.ins)
                       or any(self.src(o) == t for o in out_tensors if o not in in_tensors)]
        for t in streamed_in:   # the link's arrays as pixels
            p, c = self.geometry(t)
            s = self.shapes[t]
            tmpl = (f"conveyor::chw_to_pixels<{v[t]}_t, {c}, {s[2]}, {s[3]}>" if len(s) == 4
                    else f"conveyor::hwc_to_pixels<{v[t]}_t, {c}, 1>")
            emit.append(Process(tmpl, [], t, pre=(unpacked[t],)))
        procs = emit + self.procs
        outs = {}
        collect = []
        for t in out_tensors:
            if t in in_tensors:
                outs[t] = unpacked[t]     # read from the link and passed on: packed from the unpacked array
                continue
            st = self.src(t)
            p, c = self.geometry(st)
            s = self.shapes[st]
            arr = f"{v[st]}_out"
            lines.append(f"    {v[st]}_t {arr}[{p * c}];")
            tmpl = (f"conveyor::pixels_to_chw<{v[st]}_t, {c}, {s[2]}, {s[3]}>" if len(s) == 4
                    else f"conveyor::pixels_to_hwc<{v[st]}_t, {c}, 1>")
            collect.append(Process(tmpl, [st], None, post=(arr,)))
            outs[t] = arr
        procs += collect
        for p in procs:
            p.ins = [self.src(t) for t in p.ins]
            p.need = {self.src(t): n for t, n in p.need.items()}
        # readers of each stream, in call order; several: a clone_stream, one FIFO per reader
        readers: dict[str, list] = {}
        for k, p in enumerate(procs):
            for j, t in enumerate(p.ins):
                readers.setdefault(t, []).append((k, j))
        fifo_of: dict[tuple, str] = {}
        clones: dict[str, list] = {}
        decl: dict[str, tuple] = {}   # fifo -> (px type, tensor)
        for p in procs:
            if p.out:
                decl[f"s_{v[p.out]}"] = (self.px(p.out), p.out)
        for t, rs in readers.items():
            if len(rs) == 1:
                fifo_of[rs[0]] = f"s_{v[t]}"
                continue
            if len(rs) > MAX_READERS:
                who = ", ".join(procs[k].node or procs[k].name for k, _ in rs)
                raise CodegenError(f"tensor '{t}' is read by {len(rs)} layers ({who}); io_stream clones a value to "
                                   f"at most {MAX_READERS} readers")
            names = []
            for n, r in enumerate(rs):
                fifo_of[r] = f"r{n}_{v[t]}"   # reader n of the clone (tensor names start t_: no clash)
                decl[fifo_of[r]] = (self.px(t), t)
                names.append(fifo_of[r])
            clones[t] = names
        depth = {f: DEFAULT_DEPTH for f in decl}
        why = {}
        for (fifo, d, reason) in skip_depths(self, procs, readers, fifo_of):
            if d > depth[fifo]:
                depth[fifo], why[fifo] = d, reason
        for f, (ty, t) in decl.items():
            note = f"  // skip: {why[f]}" if f in why else ""
            lines += [f"    conveyor::fifo<{ty}> {f}(\"{f}\");",
                      f"#pragma HLS STREAM variable={f} depth={depth[f]}",
                      f"    CONVEYOR_DEPTH({f}, {depth[f]});{note}"]
            self.fifos.append({"fifo": f, "tensor": t, "depth": depth[f], "element": ty,
                               **({"skip": why[f]} if f in why else {})})
        for k, p in enumerate(procs):
            args = [fifo_of[(k, j)] for j in range(len(p.ins))]
            if p.out:
                args.append(f"s_{v[p.out]}")
            args = [*p.pre, *args, *p.post]
            lines.append(f"    CONVEYOR_PROCESS({p.name}({', '.join(args)}));" + (f"  // {p.node}" if p.node else ""))
            if p.out in clones:
                pp, _ = self.geometry(p.out)
                lines.append(f"    CONVEYOR_PROCESS(conveyor::clone_stream<{self.px(p.out)}, {pp}>(s_{v[p.out]}, "
                             f"{', '.join(clones[p.out])}));  // '{p.out}' read by {len(clones[p.out])} layers")
        lines.append("    CONVEYOR_JOIN();")
        return lines, outs, self.fifos


def window_need(win: dict) -> np.ndarray:
    """For each output pixel (raster order) of a line-buffer layer: the input pixels it has read
    when it writes it (the window is due when its last tap arrives; conveyor_linebuf.h)."""
    h, w, kh, kw = win["in_height"], win["in_width"], win["filt_height"], win["filt_width"]
    pt, pl = win["pad_top"], win["pad_left"]
    sh, sw, dh, dw = win["stride_height"], win["stride_width"], win["dilation_height"], win["dilation_width"]
    oh, ow = win["out_height"], win["out_width"]
    r = np.arange(oh)[:, None] * sh + (kh - 1) * dh          # padded row of the last tap
    c = np.arange(ow)[None, :] * sw + (kw - 1) * dw
    rows_before = np.clip(r - pt, 0, h)
    in_row = np.where((r >= pt) & (r < pt + h), np.clip(c - pl + 1, 0, w), 0)
    return (rows_before * w + in_row).reshape(-1)


def skip_depths(sw: StreamWriter, procs, readers, fifo_of):
    """(fifo, depth, reason) for each FIFO out of a clone whose branch meets another branch of
    the same value again: max_k (A_slowest(k) - A_branch(k)) pixels (module docstring)."""
    out = []
    producer = {p.out: k for k, p in enumerate(procs) if p.out}
    for s, rs in readers.items():
        if len(rs) < 2:
            continue
        pix = sw.geometry(s)[0]
        sched = {s: np.arange(1, pix + 1)}          # tensor -> A(k): pixels of s read for its pixel k
        via = {s: set()}                            # tensor -> the clone outputs (reader index) it depends through
        for k, p in enumerate(procs):
            if k <= producer.get(s, -1) or p.out is None:
                continue
            got = []
            for j, t in enumerate(p.ins):
                if t not in sched:
                    continue
                need = p.need.get(t)
                if need is None or len(need) == 0:
                    continue
                a = sched[t]
                got.append((j, t, np.where(need > 0, a[np.clip(need - 1, 0, len(a) - 1)], 0)))
            if not got:
                continue
            branches = [(j, t, a) for j, t, a in got]
            sched[p.out] = np.max(np.stack([a for _, _, a in branches]), axis=0)
            via[p.out] = set().union(*[{rs.index((k, j))} if t == s else via[t] for j, t, _ in branches])
            if len(branches) > 1:   # a join of branches of s
                slow = sched[p.out]
                edges = [{rs.index((k, j))} if t == s else via[t] for j, t, _ in branches]
                common = set.intersection(*edges)   # shared: the branches parted at a later clone
                for (j, t, a), e in zip(branches, edges):
                    lag = int(np.max(slow - a))
                    if lag <= 0:
                        continue
                    for r in sorted(e - common):
                        out.append((fifo_of[rs[r]], lag, f"'{s}' to {procs[k].node}: waits up to {lag} pixels "
                                                         f"for the slower branch"))
    return out
