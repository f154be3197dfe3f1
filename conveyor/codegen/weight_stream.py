"""Weights streamed from the board's DDR / HBM over m_axi (the plan's `weights_in`: dram | hbm).

A streamed layer keeps only two tiles of its weights on chip (a double buffer: the next tile
loads over m_axi while the engine computes with the other, the cost model's streaming,
cost/fpga.py `_tile_bram`). A tile is the weights of T outputs of a Dense / Gemm ([n_in][T], the
layout `nnet::dense` reads) or of T filters of a Conv ([kh][kw][c][T], `nnet::conv_2d_cl`'s),
so each tile is one call of the layer's kernel over T outputs with the layer's own types: every
output's products and sum are those of the whole layer, in the same order (nnet's DenseLatency
computes each output on its own), and the C simulation stays bit-exact.
T: the most outputs (a divisor of n_out) whose weights fit the cost model's tile, the weights
`parallelism` multipliers read in STREAM_TILE_CYCLES. Biases stay on chip (n_out values).

The board's top function gets one more port per streamed layer, `const ap_uint<64> *wmem<k>`
(m_axi, all on the bundle gmem_w, offsets over s_axilite), so that each DATAFLOW process reads
its own port; the memory image is firmware/weights/stream.bin (little-endian 64-bit words, the
layers one after another), which the testbench reads and passes, each port at its layer's offset. Layers of other ops keep
their weights on chip; the manifest says so per layer (`weights_in`).
"""

from __future__ import annotations

import math

import numpy as np

from conveyor.cost.fpga import STREAM_TILE_CYCLES

#: the width of the weight memory's words (the m_axi data width)
WORD_BITS = 64
#: ops whose weights the generated code can stream (writers layers.dense / layers.conv /
#: layers.conv_grouped: a grouped Conv streams whole groups)
STREAMABLE = ("Dense", "Gemm", "MatMul", "Conv")


def streams(layer, stage, flat: dict) -> bool:
    """Whether the generated code streams `layer`'s weights: the plan puts them in DDR/HBM and
    its op is one whose writer tiles (a Dense / Gemm / Conv with a bias, grouped or not)."""
    node = layer.node
    one_row = node.op_type == "Conv" or int(np.prod(layer.in_shapes[0][:-1], dtype=np.int64)) == 1
    return (node.op_type in STREAMABLE and stage.weights_in.get(node.name, "on_chip") != "on_chip"
            and 1 in flat and 2 in flat and one_row)   # a Dense on rows: on chip


def tile_outputs(n_in: int, n_out: int, parallelism: int) -> int:
    """T: the largest divisor of n_out with n_in * T <= the cost model's tile (at least 1)."""
    cap = max(1, min(n_in * n_out, parallelism * STREAM_TILE_CYCLES) // n_in)
    return max(d for d in range(1, n_out + 1) if n_out % d == 0 and d <= cap)


class WeightMemory:
    """The streamed layers of one board and the memory image they read."""

    def __init__(self):
        self.words: list[np.ndarray] = []
        self.layers: dict[str, dict] = {}
        self.at = 0

    def add(self, layer_name: str, raw: np.ndarray, n_in: int, n_out: int, width: int, tile: int) -> int:
        """Append a layer's raw weights ([n_in][n_out], row-major) as n_out / tile packed tiles;
        returns its offset in words."""
        per = WORD_BITS // width
        w = np.asarray(raw, dtype=np.int64).reshape(n_in, n_out).view(np.uint64) & np.uint64((1 << width) - 1)
        tile_words = -(-n_in * tile // per)
        offset = self.at
        shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width))
        for t in range(n_out // tile):
            vals = np.zeros(tile_words * per, np.uint64)
            vals[:n_in * tile] = w[:, t * tile:(t + 1) * tile].reshape(-1)
            self.words.append(np.bitwise_or.reduce(vals.reshape(tile_words, per) << shifts, axis=1))
        self.at += tile_words * (n_out // tile)
        self.layers[layer_name] = {"port": f"wmem{len(self.layers)}", "offset_words": offset, "tiles": n_out // tile,
                                   "tile_outputs": tile, "tile_values": n_in * tile, "tile_words": tile_words,
                                   "element_bits": width}
        return offset

    def layer(self, layer, flat: dict, x: tuple[str, int], y: tuple[str, int]) -> tuple[str, str, str]:
        """Stream `layer`'s weights (flat[1], [n_in][n_out]): add them to the image and return its
        (tile config structs, layer function, call)."""
        from conveyor.codegen.layers import fixed, ident

        node = layer.node
        if node.attr("group", 1) != 1:
            return self._grouped(layer, flat, x, y)
        n_out = flat[2].size
        n_in, pf = flat[1].size // n_out, fixed(layer.params[1][1], f"node '{node.name}' weight")
        tile = tile_outputs(n_in, n_out, layer.parallelism)
        offset = self.add(node.name, pf.quantize_raw(flat[1]), n_in, n_out, pf.width, tile)
        info = self.layers[node.name]
        return streamed_layer("Conv" if node.op_type == "Conv" else "Dense", layer.index, ident(node.name)[2:],
                              layer.cfg, f"w{layer.index}", f"b{layer.index}", x, y, n_in, n_out, layer.parallelism,
                              tile, offset, info["tile_words"], info["port"])

    def _grouped(self, layer, flat: dict, x: tuple[str, int], y: tuple[str, int]) -> tuple[str, str, str]:
        """A grouped / depthwise Conv (flat[1] as [g][kh][kw][c][m]): tiles of T whole groups,
        each tile's groups computed by conveyor::conv_2d_groups_cl straight into the result."""
        from conveyor.codegen.layers import fixed, ident

        node = layer.node
        group = int(node.attr("group", 1))
        per_group = flat[1].size // group          # kh * kw * c * m weights
        pf = fixed(layer.params[1][1], f"node '{node.name}' weight")
        per_tile = tile_outputs(per_group, group, layer.parallelism)
        # the groups' weights one after another: one row of `group * per_group` values whose
        # column tiles of per_tile * per_group values are whole groups
        offset = self.add(node.name, pf.quantize_raw(flat[1]), 1, group * per_group, pf.width, per_tile * per_group)
        info = self.layers[node.name]
        info.update(tile_outputs=per_tile * (flat[2].size // group), tile_groups=per_tile)
        fn, call = grouped_streamed_layer(layer.index, ident(node.name)[2:], layer.cfg, f"w{layer.index}",
                                          f"b{layer.index}", x, y, group // per_tile, per_tile, per_group, offset,
                                          info["tile_words"], info["port"])
        return "", fn, call

    def image(self) -> np.ndarray:
        return np.concatenate(self.words) if self.words else np.zeros(0, np.uint64)

    def signature(self) -> str:
        """The top's extra parameters: one read-only m_axi pointer per streamed layer (each
        DATAFLOW process then reads its own port; all share the bundle gmem_w)."""
        return "".join(f", const ap_uint<{WORD_BITS}> *{v['port']}" for v in self.layers.values())

    def pragmas(self) -> list[str]:
        out = []
        for v in self.layers.values():
            out += [f"#pragma HLS INTERFACE m_axi port={v['port']} offset=slave bundle=gmem_w "
                    f"depth={v['tiles'] * v['tile_words']} max_read_burst_length=256",
                    f"#pragma HLS INTERFACE s_axilite port={v['port']} bundle=control"]
        return out

    def tb_args(self) -> list[str]:
        """The testbench's arguments: each port at its layer's offset in the memory image."""
        return [f"wmem.data() + {v['offset_words']}" for v in self.layers.values()]

    def manifest(self) -> dict | None:
        if not self.layers:
            return None
        return {"interface": "m_axi", "bundle": "gmem_w", "word_bits": WORD_BITS, "words": self.at,
                "file": "firmware/weights/stream.bin (little-endian 64-bit words; each port's offset below)",
                "layers": self.layers}


def tile_config(op: str, cfg: str, n_in: int, n_out: int, tile: int, parallelism: int) -> str:
    """The config struct of one tile: the layer's own (`cfg`, from layers.dense / layers.conv) with
    T outputs / filters and the plan's multipliers over them."""
    reuse = max(1, math.ceil(n_in * tile / max(parallelism, 1)))
    if op == "Conv":
        return f"""struct {cfg}_tile_mult : {cfg}_mult {{  // one streamed tile: {tile} of the {n_out} filters
    static const unsigned n_out = {tile};
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
}};
struct {cfg}_tile : {cfg} {{
    static const unsigned n_filt = {tile};
    static const unsigned reuse_factor = {reuse};  // plan: {parallelism} multipliers
    static const unsigned multiplier_limit = DIV_ROUNDUP(kernel_size * n_chan * n_filt, reuse_factor) - n_zeros / reuse_factor;
    typedef {cfg}_tile_mult mult_config;
}};
"""
    return f"""struct {cfg}_tile : {cfg} {{  // one streamed tile: {tile} of the {n_out} outputs
    static const unsigned n_out = {tile};
    static const unsigned n_nonzeros = {n_in * tile};
    static const unsigned reuse_factor = {reuse};  // plan: {parallelism} multipliers
    static const unsigned multiplier_limit = DIV_ROUNDUP(n_in * n_out, reuse_factor) - n_zeros / reuse_factor;
}};
"""


def _double_buffered(fn: str, x: tuple[str, int], y: tuple[str, int], cfg: str, wname: str, values: int,
                     tiles: int, tile_words: int, offset: int, what: str, call: str, part: str = "",
                     place: str = "") -> str:
    """The layer function of a streamed layer: the first tile loaded, then per tile t the next one
    loading into one buffer while `call` (its `{w}`: the buffer) computes from the other; `part`
    declares a tile's result buffer and `place` puts it in the layer's result."""
    (xa, xn), (ya, yn) = x, y
    load = f"conveyor::load_tile<{WORD_BITS}, {cfg}::weight_t, {values}>"
    return f"""static void {fn}(const ap_uint<{WORD_BITS}> *weights, {xa}_t {xa}[{xn}], {ya}_t {ya}[{yn}]) {{
#pragma HLS INLINE off
    // weights from off-chip memory: {tiles} tiles of {what}, double-buffered
    static {cfg}::weight_t {wname}_a[{values}], {wname}_b[{values}];
{part}    const ap_uint<{WORD_BITS}> *src = weights;  // the layer's own port; {offset} words into the memory image
    {load}(src, {wname}_a);
{fn}_tiles:
    for (int t = 0; t < {tiles}; t++) {{
        if (t % 2 == 0) {{
            if (t + 1 < {tiles}) {load}(src + (t + 1) * {tile_words}, {wname}_b);
            {call.format(w=wname + "_a")}
        }} else {{
            if (t + 1 < {tiles}) {load}(src + (t + 1) * {tile_words}, {wname}_a);
            {call.format(w=wname + "_b")}
        }}
{place}    }}
}}
"""


def streamed_layer(op: str, index: int, name: str, cfg: str, wname: str, bname: str, x: tuple[str, int],
                   y: tuple[str, int], n_in: int, n_out: int, parallelism: int, tile: int, offset: int,
                   tile_words: int, port: str) -> tuple[str, str, str]:
    """(tile config structs, layer function, its call) of a Dense / Conv whose weights stream from
    memory: per tile, the layer's kernel over T outputs (a Conv: T filters at every pixel), its
    results put in place ([pixel][n_out], channels last)."""
    fn = f"layer{index}_{name}"
    (xa, _), (ya, yn) = x, y
    pixels = yn // n_out
    kernel = "conv_2d_cl" if op == "Conv" else "dense"
    call = f"nnet::{kernel}<{xa}_t, {ya}_t, {cfg}_tile>({xa}, part, {{w}}, {bname} + t * {tile});"
    body = _double_buffered(
        fn, x, y, cfg, wname, n_in * tile, n_out // tile, tile_words, offset, f"{tile} outputs", call,
        part=f"    static {ya}_t part[{pixels * tile}];\n",
        place=f"        for (int p = 0; p < {pixels}; p++)\n"
              f"            for (int j = 0; j < {tile}; j++) {ya}[p * {n_out} + t * {tile} + j] = part[p * {tile} + j];\n")
    return tile_config(op, cfg, n_in, n_out, tile, parallelism), body, f"{fn}({port}, {xa}, {ya});"


def grouped_streamed_layer(index: int, name: str, cfg: str, wname: str, bname: str, x: tuple[str, int],
                           y: tuple[str, int], tiles: int, tile_groups: int, per_group: int, offset: int,
                           tile_words: int, port: str) -> tuple[str, str]:
    """(layer function, its call) of a grouped Conv whose weights stream from memory: per tile of
    `tile_groups` groups, conv_2d_groups_cl over those groups straight into the result."""
    fn = f"layer{index}_{name}"
    (xa, _), (ya, _) = x, y
    call = f"conveyor::conv_2d_groups_cl<{xa}_t, {ya}_t, {cfg}, {tile_groups}>({xa}, {ya}, {{w}}, {bname}, t * {tile_groups});"
    body = _double_buffered(fn, x, y, cfg, wname, tile_groups * per_group, tiles, tile_words, offset,
                            f"{tile_groups} groups", call)
    return body, f"{fn}({port}, {xa}, {ya});"


def stream_memory_lines(words: int) -> list[str]:
    """Testbench lines: the board's weight memory, `words` 64-bit words from
    $CONVEYOR_WEIGHTS (default firmware/weights)/stream.bin, as the host would place it in DDR."""
    return [f"    std::vector<ap_uint<{WORD_BITS}> > wmem({max(1, words)});",
            "    {",
            '        const char *dir = std::getenv("CONVEYOR_WEIGHTS");',
            '        std::string path = std::string(dir ? dir : "firmware/weights") + "/stream.bin";',
            '        FILE *fw = std::fopen(path.c_str(), "rb");',
            f"        std::vector<unsigned long long> w({words});",
            f"        if (!fw || std::fread(w.data(), 8, {words}, fw) != {words}) {{",
            '            std::fprintf(stderr, "tb: cannot read the weight memory %s\\n", path.c_str());',
            "            return 3;",
            "        }",
            "        std::fclose(fw);",
            f"        for (int i = 0; i < {words}; i++) wmem[i] = w[i];",
            "    }"]
