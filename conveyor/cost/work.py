"""What each layer asks of any device: the device-independent side of the cost model.

`layer_work(graph, precision)` turns every node into a `LayerWork`: its MACs, other
element operations, parameters, the bit widths it computes in (from the precision
config), the bytes it reads and writes, and how parallel it can be made. The device
models (`fpga`, `host`) turn a LayerWork into time and resources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from conveyor.graph.counters import node_counters

#: ops that are wiring in a dataflow design: no compute, no buffer (Flatten, Reshape...)
MOVEMENT_OPS = frozenset({"Flatten", "Reshape", "Identity", "Dropout", "Transpose"})
#: ops whose MACs run on multipliers (weights x activations)
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Dense", "LSTM", "GRU"})


@dataclass(frozen=True)
class LayerWork:
    node: str
    op_type: str
    macs: int             # multiply-accumulates per inference
    elem_ops: int         # other element operations per inference (compare, add, table lookup)
    params: int           # parameter count
    weight_bits: int
    act_bits: int
    accum_bits: int
    in_bytes: int         # activation bytes read per inference, at act_bits
    out_bytes: int        # activation bytes written per inference, at act_bits (what a link carries)
    weight_bytes: int     # parameter storage at weight_bits
    stream_len: int       # words (pixels, rows) streamed in per inference: a streaming engine's floor
    max_parallel: int     # most multipliers (or lanes) that can work in the same cycle
    line_buffer_bits: int  # on-chip window buffer a streaming conv/pool needs
    #: element-wise engines of the newer op families (HardSigmoid, HardSwish, Gelu, Pow, Exp, Sqrt,
    #: Reciprocal, Erf, LayerNormalization): products per output element, and the lookup table
    #: they read (entries, bits per entry; 0 when none)
    lane_products: int = 0
    table_words: int = 0
    table_width: int = 0
    window_rows: int = 1   # rows of input a conv/pool window spans (its kernel height)
    #: the (a, b) bit widths of each lane product when they are not (act_bits, max(weight_bits,
    #: table_width)): a Requant multiplies its W_in-bit integer input by a 32-bit multiplier
    product_bits: tuple[int, int] = (0, 0)

    @property
    def is_movement(self) -> bool:
        return self.op_type in MOVEMENT_OPS


def format_bits(fmt) -> int:
    """Storage bits per value of a number format (block formats: element bits plus the amortized scale)."""
    if fmt is None:
        return 32
    width = getattr(fmt, "width", None)
    if width is not None:
        return int(width)
    return int(np.ceil(fmt.bits_per_element))


def layer_work(graph, precision=None) -> list[LayerWork]:
    """One LayerWork per node, in the graph's order. Without a precision, float32."""
    from conveyor.graph.names import resolve_config

    config = resolve_config(graph, precision) if precision is not None else None
    out = []
    for node in graph.nodes:
        c = node_counters(graph, node)
        if config is not None:
            p = config.for_node(node.name, node.op_type)
            wbits, abits = format_bits(p.weight), format_bits(p.result)
            accum = p.accum if p.accum is not None else None
        else:
            wbits = abits = 32
            accum = None
        out_elems = int(np.prod(c.output_shape, dtype=np.int64))
        k = _reduction_len(graph, node)
        accum_bits = format_bits(accum) if accum is not None else wbits + abits + max(1, int(np.ceil(np.log2(max(k, 2)))))
        table = _table(graph, node, p if config is not None else None)
        lanes = -(-c.macs // out_elems) if node.op_type in TABLE_AND_PRODUCT_OPS and out_elems else 0
        product_bits = (0, 0)
        if node.op_type == "Requant" and len(node.attr("in_scale", []) or []):
            # acc * M0 per input (an Add's sum requantises each input): a W_in x 32-bit integer
            # multiply (M0 a Q31 int32, conveyor/ops/quant.py), priced as any multiply of that width
            lanes = len([t for t in node.inputs if t])
            product_bits = (_input_bits(graph, node, config), REQUANT_MULTIPLIER_BITS)
        out.append(LayerWork(
            node=node.name,
            op_type=node.op_type,
            macs=c.macs if node.op_type in MAC_OPS else 0,
            elem_ops=0 if node.op_type in MAC_OPS or node.op_type in MOVEMENT_OPS else max(c.macs, out_elems),
            params=c.params,
            weight_bits=wbits,
            act_bits=abits,
            accum_bits=accum_bits,
            in_bytes=_bytes(_elements_in(graph, node), abits),
            out_bytes=_bytes(out_elems, abits),
            weight_bytes=_bytes(c.params, wbits),
            stream_len=_stream_len(graph, node),
            max_parallel=_max_parallel(graph, node, c.macs, out_elems),
            line_buffer_bits=_line_buffer_bits(graph, node, abits),
            window_rows=_window_rows(graph, node),
            lane_products=lanes,
            table_words=table[1] if table else 0,
            table_width=table[2] if table else 0,
            product_bits=product_bits,
        ))
    return out


#: element-wise ops whose products and lookup table the FPGA model prices from the LayerWork
#: (`lane_products`, `table_words`, `table_width`); older ones keep their fixed rule (cost/fpga.py)
TABLE_AND_PRODUCT_OPS = frozenset({"HardSigmoid", "HardSwish", "Gelu", "Pow", "Exp", "Sqrt", "Reciprocal",
                                   "Erf", "LayerNormalization"})


#: bits of a Requant's integer multiplier M0 (an int32 in [2^30, 2^31): TFLite's
#: QuantizeMultiplier, Jacob et al., CVPR 2018, section 2.2; conveyor/ops/quant.py)
REQUANT_MULTIPLIER_BITS = 32


def _input_bits(graph, node, config) -> int:
    """The widest format among a node's run-time inputs (their producers' result formats;
    32 bits without a precision, or for a graph input)."""
    bits = []
    for t in node.inputs:
        if not t or graph.is_weight(t):
            continue
        prod = graph.producer(t)
        if config is None or prod is None:
            bits.append(32)
        else:
            bits.append(format_bits(config.for_node(prod.name, prod.op_type).result))
    return max(bits, default=32)


def _table(graph, node, prec):
    if node.op_type not in TABLE_AND_PRODUCT_OPS:
        return None
    from conveyor.ops import lut

    exponent = None
    if node.op_type == "Pow" and len(node.inputs) > 1 and graph.is_weight(node.inputs[1]):
        e = np.unique(np.asarray(graph.weights[node.inputs[1]], np.float64))
        exponent = float(e[0]) if e.size == 1 else None
    return lut.table_of(node.op_type, prec, exponent)


def _bytes(count: int, bits: int) -> int:
    return int(np.ceil(count * bits / 8))


def _elements_in(graph, node) -> int:
    return sum(graph.tensors[t].size for t in dict.fromkeys(node.inputs) if t and not graph.is_weight(t))


def _reduction_len(graph, node) -> int:
    """Products summed per output value (sets the exact accumulator width)."""
    if node.op_type == "Conv":
        w = graph.tensors[node.inputs[1]].shape
        return int(np.prod(w[1:]))
    if node.op_type == "ConvTranspose":  # W [C, M/g, *k]: (C/g) inputs times the taps that land per output
        w = graph.tensors[node.inputs[1]].shape
        strides = node.attr("strides") or [1] * (len(w) - 2)
        taps = int(np.prod([-(-int(k) // int(s)) for k, s in zip(w[2:], strides)]))
        return max(1, int(w[0]) // int(node.attr("group", 1)) * taps)
    if node.op_type in ("Gemm", "MatMul", "Dense"):
        a = graph.tensors[node.inputs[0]].shape
        if node.op_type == "Gemm" and node.attr("transA", 0):
            return a[0]
        return a[-1]
    if node.op_type in ("LSTM", "GRU"):
        x = graph.tensors[node.inputs[0]].shape
        h = node.attr("hidden_size") or graph.tensors[node.inputs[2]].shape[-1]
        return x[-1] + h
    return 1


def _stream_len(graph, node) -> int:
    """Words streamed in per inference when one word (a pixel: all channels) arrives per cycle."""
    x = graph.tensors[node.inputs[0]].shape if node.inputs and node.inputs[0] else ()
    if node.op_type in MOVEMENT_OPS or len(x) < 3:
        return 1 if len(x) < 3 else 0
    if node.op_type in ("LSTM", "GRU"):
        return x[0] if node.attr("layout", 0) == 0 else x[1]   # time steps, in order
    return int(np.prod(x[2:], dtype=np.int64))                # spatial positions of N x C x ...


def _max_parallel(graph, node, macs: int, out_elems: int) -> int:
    if node.op_type in ("Conv", "ConvTranspose"):
        w = graph.tensors[node.inputs[1]].shape   # every weight its own multiplier (FINN PE x SIMD = M x C*k*k)
        return int(np.prod(w))
    if node.op_type in ("Gemm", "MatMul", "Dense"):
        return max(1, macs // max(1, graph.tensors[node.inputs[0]].size // _reduction_len(graph, node)))
    if node.op_type in ("LSTM", "GRU"):
        return sum(graph.tensors[t].size for t in node.inputs[1:3] if t)
    if node.op_type in MOVEMENT_OPS:
        return 1
    # elementwise / pooling: one lane per channel of a pixel (or per element of a vector)
    shape = graph.tensors[next(o for o in node.outputs if o)].shape
    return int(shape[1]) if len(shape) >= 3 else max(1, out_elems)


def _line_buffer_bits(graph, node, abits: int) -> int:
    """A streaming k x k window needs k-1 full input rows plus k pixels buffered (hls4ml io_stream, FINN SWG)."""
    if node.op_type not in ("Conv", "MaxPool", "AveragePool"):
        return 0
    x = graph.tensors[node.inputs[0]].shape
    if len(x) != 4:
        return 0
    kernel = node.attr("kernel_shape") or (graph.tensors[node.inputs[1]].shape[2:] if node.op_type == "Conv" else (1, 1))
    kh, kw = int(kernel[0]), int(kernel[-1])
    c, w = x[1], x[3]
    return ((kh - 1) * w + kw) * c * abits


def _window_rows(graph, node) -> int:
    """The kernel height of a streaming conv/pool window (1 for every other layer)."""
    if not _line_buffer_bits(graph, node, 1):
        return 1
    kernel = node.attr("kernel_shape") or (graph.tensors[node.inputs[1]].shape[2:] if node.op_type == "Conv" else (1, 1))
    return max(1, int(kernel[0]))
