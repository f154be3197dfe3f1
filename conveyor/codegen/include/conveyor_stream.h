// conveyor: weights streamed from off-chip memory (DDR / HBM) over m_axi, tile by tile.
//
// The board's weight memory (firmware/weights/stream.bin for the C simulation) holds each
// streamed layer's tiles one after another; a tile is the weights of T outputs of a Dense
// ([n_in][T], the kernel's own layout), packed like a link beat: floor(64 / width) values per
// 64-bit word, lowest bits first, each tile starting on a fresh word (codegen/weight_stream.py).
#ifndef CONVEYOR_STREAM_H_
#define CONVEYOR_STREAM_H_

#include "ap_fixed.h"
#include "ap_int.h"

namespace conveyor {

// One tile from memory into an on-chip buffer: a burst of WORDS words.
template <int W, class T, int N> void load_tile(const ap_uint<W> *mem, T buf[N]) {
    const int per = W / T::width;
    const int words = (N + per - 1) / per;
LoadTile:
    for (int i = 0; i < words; i++) {
#pragma HLS PIPELINE II = 1
        ap_uint<W> word = mem[i];
        for (int k = 0; k < per; k++) {
#pragma HLS UNROLL
            if (i * per + k < N) buf[i * per + k].range(T::width - 1, 0) = word.range((k + 1) * T::width - 1, k * T::width);
        }
    }
}

} // namespace conveyor

#endif
