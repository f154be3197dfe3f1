"""FPGA cost models: time and resources of a layer on a board.

Two architectures (docs/cost-model.md has every formula and its source):

- `dataflow` (hls4ml / FINN): every layer is its own engine, all layers run
  concurrently on a stream; a layer's parallelism p is the number of multipliers
  (hls4ml: n_in*n_out / ReuseFactor; FINN: PE*SIMD). Board interval = its slowest
  layer's interval; latency = the sum of layer latencies.
- `overlay` (Brainwave / DPU): one engine of N multipliers runs the layers in turn;
  a layer takes the larger of its compute and memory time; stage time is the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from conveyor.cost.work import LayerWork
from conveyor.hardware.specs import BRAM18K_BITS, Board

#: A BRAM18K in simple-dual-port mode reads one 36-bit word per cycle (Xilinx UG473, "Block RAM
#: Summary": 18Kb as 512 x 36 in SDP mode).
BRAM18K_READ_BITS = 36
#: Weight banks shallower than this are implemented in fabric registers/LUTRAM rather than
#: BRAM (Vivado HLS maps small arrays to LUTRAM; hls4ml's latency strategy with ReuseFactor 1
#: has no weight memory at all). Assumption, documented in docs/cost-model.md.
MIN_BRAM_DEPTH_WORDS = 64
#: Pipeline fill of one engine: the adder tree (log2 of the products summed) plus input and
#: output registers and the activation. Assumption.
ENGINE_DEPTH_CYCLES = 8
#: Control and stream plumbing per layer engine, in LUTs and FFs. Assumption (hls4ml designs
#: show a few hundred LUTs per layer beyond the datapath).
ENGINE_OVERHEAD_LUT = 300
ENGINE_OVERHEAD_FF = 400
#: Routing and timing closure leave headroom: plans may use at most this share of a part.
UTILIZATION_CAP = 0.85
#: An overlay engine keeps this share of its DSPs busy on average (Brainwave reports high
#: utilization at batch 1 for RNNs; convolution overlays such as the DPU report 60-80 %).
OVERLAY_EFFICIENCY = 0.75
#: A streamed weight tile holds what the engine consumes in this many cycles: one BRAM18K deep
#: (512 words of 36 bits in simple-dual-port mode, UG473); two tiles double-buffer the stream
#: so that one fills from DRAM while the engine reads the other (FINN's decoupled weights, the DPU).
STREAM_TILE_CYCLES = 512
#: A spilled activation buffer is staged through two tiles of this many pixels (x the window's
#: rows): 64 pixels x 64 channels x 8 bits = 4 KB, one DRAM burst (an AXI burst is at most
#: 4 KB, Xilinx UG1037), so each tile's load is long enough to run at the memory's bandwidth.
#: Assumption, documented in docs/cost-model.md.
SPILL_TILE_PIXELS = 64


@dataclass(frozen=True)
class Resources:
    dsp: int = 0
    bram18k: int = 0
    lut: int = 0
    ff: int = 0

    def __add__(self, other: "Resources") -> "Resources":
        return Resources(self.dsp + other.dsp, self.bram18k + other.bram18k, self.lut + other.lut, self.ff + other.ff)

    def scaled_fraction(self, budget: "Resources") -> float:
        """The largest share of `budget` this uses (the binding resource)."""
        return max(
            (mine / total for mine, total in ((self.dsp, budget.dsp), (self.bram18k, budget.bram18k),
                                              (self.lut, budget.lut), (self.ff, budget.ff)) if total > 0),
            default=0.0,
        )

    def fits(self, budget: "Resources") -> bool:
        return self.dsp <= budget.dsp and self.bram18k <= budget.bram18k and self.lut <= budget.lut and self.ff <= budget.ff

    def as_dict(self) -> dict:
        return {"dsp": self.dsp, "bram18k": self.bram18k, "lut": self.lut, "ff": self.ff}


def board_budget(board: Board, cap: float = UTILIZATION_CAP) -> Resources:
    p = board.part
    return Resources(int(p.dsp * cap), int(p.bram18k * cap), int(p.lut * cap), int(p.ff * cap))


@dataclass(frozen=True)
class LayerOption:
    """One way to build a layer's engine on a board."""

    parallelism: int
    interval_cycles: int   # cycles between two inferences entering this engine
    latency_cycles: int    # cycles from an inference's first input to its last output
    resources: Resources
    offchip_bytes: int = 0  # bytes moved to/from DRAM per inference (streamed weights + spilled activations)
    act_offchip_bytes: int = 0  # the part of offchip_bytes that is spilled activations
    measured: str = ""      # where the time/resource figures were measured (cost/measured.py); "" = modeled

    def interval_s(self, clock_hz: float) -> float:
        return self.interval_cycles / clock_hz

    def latency_s(self, clock_hz: float) -> float:
        return self.latency_cycles / clock_hz


def multiplier_cost(board: Board, weight_bits: int, act_bits: int) -> tuple[float, int]:
    """(DSPs per multiplier, LUTs per multiplier). Narrow products (<= 4 x 4 bits... any with
    a*b <= 24) go to LUTs, as Vivado does for small multiplies; otherwise DSP slices, packed
    where the part's DSP mode allows several per slice, or tiled when one is too narrow."""
    if weight_bits * act_bits <= 24:
        return 0.0, weight_bits * act_bits  # ~ one LUT per partial-product bit (assumption)
    per = board.part.mults_per_dsp(weight_bits, act_bits)
    if per >= 1:
        return 1.0 / per, 0
    a, b = board.part.dsp_mult_width
    tiles = math.ceil(max(weight_bits, act_bits) / max(a, b)) * math.ceil(min(weight_bits, act_bits) / min(a, b))
    return float(tiles), 0


def parallelism_choices(work: LayerWork, limit: int = 1 << 22) -> list[int]:
    """Candidate parallelisms: the divisors of the layer's maximum (hls4ml accepts reuse
    factors that divide n_in*n_out; FINN folds PE and SIMD that divide the channels), so
    every multiplier is busy every cycle."""
    top = max(1, min(work.max_parallel, limit))
    small = [d for d in range(1, int(math.isqrt(top)) + 1) if top % d == 0]
    return sorted(set(small) | {top // d for d in small})


def weight_memory(board: Board) -> tuple[str, float, int] | None:
    """(name, bandwidth_Bps, bytes) of the off-chip memory weights stream from: the board's
    HBM when it has the higher bandwidth, else its DDR; None when it has neither."""
    best = max((("hbm", board.hbm_bandwidth_Bps, board.hbm_bytes), ("dram", board.dram_bandwidth_Bps, board.dram_bytes)),
               key=lambda x: x[1])
    return best if best[1] > 0 and best[2] > 0 else None


def spill_traffic(work: LayerWork, held_bits: int) -> tuple[int, int, int]:
    """(staging BRAM18K, activation bytes, weight reads) of a layer whose activation buffer of
    `held_bits` lives in DRAM instead (docs/cost-model.md, "Activations in DRAM"), or (0, 0, 1)
    when the buffer is no larger than the staging that replaces it. The input map is written to
    DRAM once and read back in bands of SPILL_TILE_PIXELS pixels x the window's rows, through two
    on-chip tiles (double buffer): each pixel is read once per window row (window_rows reads);
    streamed weights are read once per band (each weight tile meets only the pixels on chip).
    None of the three depends on the engine's parallelism."""
    if held_bits <= 0 or work.stream_len <= 1:
        return 0, 0, 1
    word = math.ceil(work.in_bytes * 8 / work.stream_len)          # bits per streamed pixel
    tile = SPILL_TILE_PIXELS * work.window_rows * word
    if held_bits <= 2 * tile:
        return 0, 0, 1
    bram = 2 * math.ceil(tile / BRAM18K_BITS)   # capacity, as _buffer_bram charges the buffer it replaces
    return bram, work.in_bytes * (1 + work.window_rows), math.ceil(work.stream_len / SPILL_TILE_PIXELS)


def spills(work: LayerWork) -> bool:
    """Whether a streaming-weights dataflow engine of `work` would spill its activation buffer
    (dataflow_option with spill=True): the buffer it holds is larger than the staging."""
    if work.is_movement or (work.macs and not work.params):
        return False
    held = (max(work.line_buffer_bits, work.in_bytes * 8 if work.stream_len > 1 else 0) if work.macs
            else work.line_buffer_bits)
    return spill_traffic(work, held)[1] > 0


def dataflow_option(work: LayerWork, board: Board, p: int, streamed: bool = False,
                    spill: bool = False) -> LayerOption:
    """The engine of `work` with parallelism `p` on `board`: weights on chip, or (`streamed`)
    in off-chip memory, read once per item through two on-chip tiles while the layer's whole
    input waits on chip (each weight then meets every pixel it multiplies while it is loaded).
    `spill` (with `streamed`): activation buffers larger than their staging tiles live in DRAM
    too (spill_traffic); what the engine computes, and when, is unchanged."""
    if work.is_movement:
        return LayerOption(1, 0, 0, Resources())
    if work.macs:
        compute = math.ceil(work.macs / p)
        interval = max(compute, work.stream_len)
        depth = ENGINE_DEPTH_CYCLES + math.ceil(math.log2(max(2, work.macs // max(1, work.max_parallel) + 1)))
        dsp_per, lut_per = multiplier_cost(board, work.weight_bits, work.act_bits)
        dsp = math.ceil(p * dsp_per)
        lut = p * lut_per + p * work.accum_bits // 2 + ENGINE_OVERHEAD_LUT   # adder tree: ~1 LUT per 2 sum bits
        ff = p * (work.accum_bits + work.act_bits) + ENGINE_OVERHEAD_FF
        if streamed and work.params:
            bram, lut_w, ff_w = _tile_bram(work, p), 0, 0
            held = max(work.line_buffer_bits, work.in_bytes * 8 if work.stream_len > 1 else 0)
            staging, acts, rereads = spill_traffic(work, held) if spill else (0, 0, 1)
            bram += staging if acts else _buffer_bram(held)
            fill = _tile_fill_cycles(work, board, p)
            return LayerOption(p, interval, interval + depth + fill, Resources(dsp, bram, lut, ff),
                               offchip_bytes=work.weight_bytes * rereads + acts, act_offchip_bytes=acts)
        bram, lut_w, ff_w = _weight_storage(work, p)
        bram += _buffer_bram(work.line_buffer_bits)
        return LayerOption(p, interval, interval + depth,
                           Resources(dsp, bram, lut + lut_w, ff + ff_w))
    # element-wise / pooling / LRN: p lanes, one element each per cycle
    ops = max(work.elem_ops, 1)
    compute = math.ceil(ops / p)
    interval = max(compute, work.stream_len)
    lut = p * work.act_bits * 2 + ENGINE_OVERHEAD_LUT
    ff = p * work.act_bits * 2 + ENGINE_OVERHEAD_FF
    dsp = p if work.op_type in ("LRN", "Mul", "Softmax", "Sigmoid", "Tanh") else 0  # a scaling multiply per lane
    staging, acts, _ = spill_traffic(work, work.line_buffer_bits) if spill else (0, 0, 1)
    bram = (staging if acts else _buffer_bram(work.line_buffer_bits)) + (
        1 if work.op_type in ("LRN", "Softmax", "Sigmoid", "Tanh") else 0)
    if work.lane_products or work.table_words:
        d, lt, b = _lane_products_and_table(work, board, p)
        dsp, lut, bram = dsp + d, lut + lt, bram + b
    return LayerOption(p, interval, interval + ENGINE_DEPTH_CYCLES, Resources(dsp, bram, lut, ff),
                       offchip_bytes=acts, act_offchip_bytes=acts)


def _lane_products_and_table(work: LayerWork, board: Board, p: int) -> tuple[int, int, int]:
    """(DSP, LUT, BRAM18K) of the products and the lookup table of an element-wise engine
    (HardSigmoid, HardSwish, Gelu, Pow, Exp, Sqrt, Reciprocal, Erf, LayerNormalization, and
    Requant's integer multiply): `lane_products` multipliers per lane at act_bits x
    max(weight_bits, table_width), or `product_bits` where set (a Requant's W_in x 32 bits),
    priced by `multiplier_cost` like every multiply: a product wider than the DSP's multiplier
    (27 x 18 on DSP48E2, UG579) tiles ceil(a/27) * ceil(b/18) slices, so int32 x Q31 takes 4; the table is a ROM of table_words x table_width bits: in BRAM18K, one
    copy per two lanes (a BRAM has two read ports, UG473), or in LUTRAM (64 bits per LUT, UG474)
    when shallower than MIN_BRAM_DEPTH_WORDS. LayerNormalization reads its table once per row:
    one copy."""
    if work.product_bits != (0, 0):  # e.g. a Requant: W_in x 32-bit integer products
        dsp_per, lut_per = multiplier_cost(board, *work.product_bits)
    else:
        dsp_per, lut_per = multiplier_cost(board, max(work.weight_bits, work.table_width), work.act_bits)
    mults = p * work.lane_products
    dsp, lut, bram = math.ceil(mults * dsp_per), mults * lut_per, 0
    if work.table_words:
        copies = 1 if work.op_type == "LayerNormalization" else math.ceil(p / 2)
        bits = work.table_words * work.table_width
        if work.table_words < MIN_BRAM_DEPTH_WORDS:
            lut += copies * math.ceil(bits / 64)
        else:
            bram += copies * math.ceil(bits / BRAM18K_BITS)
    return dsp, lut, bram


def _weight_storage(work: LayerWork, p: int) -> tuple[int, int, int]:
    """(BRAM18K, LUT, FF) holding the weights so that p of them can be read each cycle."""
    bits = work.params * work.weight_bits
    if bits == 0:
        return 0, 0, 0
    read_bits = p * work.weight_bits
    banks = math.ceil(read_bits / BRAM18K_READ_BITS)
    depth_words = bits / max(read_bits, 1)
    if depth_words < MIN_BRAM_DEPTH_WORDS:
        # Shallow banks: registers / LUTRAM (64 bits per LUT as distributed RAM, UG474).
        return 0, math.ceil(bits / 64), 0
    return max(banks, math.ceil(bits / BRAM18K_BITS)), 0, 0


def _tile_bits(work: LayerWork, p: int) -> int:
    """One streamed tile: the weights p multipliers read in STREAM_TILE_CYCLES (at most all of them)."""
    return min(work.params, p * STREAM_TILE_CYCLES) * work.weight_bits


def _tile_bram(work: LayerWork, p: int) -> int:
    """Two tiles (double buffer), each wide enough to deliver p weights per cycle."""
    banks = math.ceil(p * work.weight_bits / BRAM18K_READ_BITS)
    return 2 * max(banks, math.ceil(_tile_bits(work, p) / BRAM18K_BITS))


def _tile_fill_cycles(work: LayerWork, board: Board, p: int) -> int:
    """Latency of the first tile's load before the engine starts (the rest overlaps compute)."""
    mem = weight_memory(board)
    return math.ceil(_tile_bits(work, p) / 8 / mem[1] * board.clock_hz) if mem else 0


def _buffer_bram(bits: int) -> int:
    return math.ceil(bits / BRAM18K_BITS) if bits else 0


def dataflow_options(work: LayerWork, board: Board, streamed: bool = False, spill: bool = False) -> list[LayerOption]:
    """Every candidate engine for `work` on `board`, slowest (cheapest) first.

    Options of equal speed keep the cheaper one. Resources are then made monotone along
    the list (each option charged at least what every slower one costs, per resource): a
    faster engine that needs less of one resource (weights moving from BRAM into LUTRAM at
    full unroll) is charged the envelope. That keeps "the slowest engine meeting an
    interval" the cheapest in every resource, which the planner's exactness rests on."""
    if work.is_movement:
        return [dataflow_option(work, board, 1)]
    return pareto_options([dataflow_option(work, board, p, streamed, spill) for p in parallelism_choices(work)])


def pareto_options(opts: list[LayerOption]) -> list[LayerOption]:
    """`opts` slowest first, one per interval (the cheaper), resources made monotone (dataflow_options)."""
    front: list[LayerOption] = []
    for o in sorted(opts, key=lambda o: (-o.interval_cycles, o.measured == "", o.parallelism)):
        if front and front[-1].interval_cycles == o.interval_cycles:
            continue  # same speed (stream-bound): the cheaper, earlier one stays (a measured one first)
        if front:
            prev = front[-1].resources
            r = o.resources
            o = replace(o, resources=Resources(max(r.dsp, prev.dsp), max(r.bram18k, prev.bram18k),
                                               max(r.lut, prev.lut), max(r.ff, prev.ff)))
        front.append(o)
    return front


# ---- overlay ---------------------------------------------------------------------------

def overlay_multipliers(board: Board, weight_bits: int, act_bits: int) -> int:
    """Multipliers an overlay built from the whole part offers (Brainwave's MVU, the DPU)."""
    dsp_per, _ = multiplier_cost(board, weight_bits, act_bits)
    if dsp_per == 0:
        return int(board.part.lut * UTILIZATION_CAP // max(weight_bits * act_bits * 2, 1))
    return int(board.part.dsp * UTILIZATION_CAP / dsp_per)


def overlay_layer_seconds(work: LayerWork, board: Board, weights_on_chip: bool,
                          bandwidth_Bps: float | None = None) -> float:
    """max(compute, memory): compute at the engine's multipliers and efficiency; memory the
    weights streamed from DRAM/HBM when they are not pinned on chip, plus the activations
    when they are too big for half of the on-chip memory (the rest holds weights)."""
    if work.is_movement:
        return 0.0
    mults = overlay_multipliers(board, work.weight_bits, work.act_bits)
    clock = board.clock_hz
    compute = (work.macs + work.elem_ops / 4) / (mults * OVERLAY_EFFICIENCY) / clock
    traffic = (0 if weights_on_chip else work.weight_bytes) + overlay_activation_bytes(work, board)
    bw = board.offchip_bandwidth_Bps if bandwidth_Bps is None else bandwidth_Bps
    memory = traffic / bw if bw else 0.0
    return max(compute, memory)


def overlay_activation_bytes(work: LayerWork, board: Board) -> int:
    """Activation bytes an overlay layer moves through DRAM per item: its input and output when
    together they exceed half of the on-chip memory (the rest holds weights), else 0."""
    acts = work.in_bytes + work.out_bytes
    return acts if acts * 8 > board.part.onchip_bits / 2 else 0


def overlay_tile_bytes(work: LayerWork, board: Board) -> int:
    """On-chip bytes a streamed overlay layer holds: two weight tiles of what the engine's
    multipliers consume in STREAM_TILE_CYCLES (double buffer), at most the layer's weights twice."""
    mults = overlay_multipliers(board, work.weight_bits, work.act_bits)
    return 2 * math.ceil(min(work.params, mults * STREAM_TILE_CYCLES) * work.weight_bits / 8)
