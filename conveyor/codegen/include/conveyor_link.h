// conveyor: board-to-board and host links as AXI4-Stream, values packed with .range().
//
// A link is hls::stream<ap_axiu<W,0,0,D>> (never a custom struct: Vitis drops TLAST on those,
// UG1399). Each beat carries floor(W / width) values of one tensor, lowest bits first; TKEEP
// and TSTRB are all ones; TLAST marks the last beat of an inference item (after its last
// tensor); TDEST is the receiving board on a switched link (`dest`), else 0.
#ifndef CONVEYOR_LINK_H_
#define CONVEYOR_LINK_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"

#if defined(__has_include)
#if __has_include(<ap_axi_sdata.h>)
#include <ap_axi_sdata.h>
#define CONVEYOR_HAVE_AXI_SDATA 1
#endif
#endif

#ifndef CONVEYOR_HAVE_AXI_SDATA
// g++ without Vitis: the fields of Vitis' ap_axiu (ap_axi_sdata.h), zero widths held as 1 bit.
template <int D, int U, int TI, int TD> struct ap_axiu {
    ap_uint<D> data;
    ap_uint<(D + 7) / 8> keep;
    ap_uint<(D + 7) / 8> strb;
    ap_uint<(U > 0 ? U : 1)> user;
    ap_uint<1> last;
    ap_uint<(TI > 0 ? TI : 1)> id;
    ap_uint<(TD > 0 ? TD : 1)> dest;
};
#endif

namespace conveyor {

template <int W, class T, int N, class L> void pack(const T x[N], hls::stream<L> &s, bool ends_item, int dest = 0) {
    const int per = W / T::width;
PackBeats:
    for (int i = 0; i < N; i += per) {
#pragma HLS PIPELINE II = 1
        L beat;
        beat.data = 0;
        for (int k = 0; k < per; k++) {
#pragma HLS UNROLL
            if (i + k < N) beat.data.range((k + 1) * T::width - 1, k * T::width) = x[i + k].range(T::width - 1, 0);
        }
        beat.keep = -1;
        beat.strb = -1;
        beat.user = 0;
        beat.id = 0;
        beat.dest = dest;
        beat.last = (ends_item && i + per >= N) ? 1 : 0;
        s.write(beat);
    }
}

template <int W, class T, int N, class L> void unpack(hls::stream<L> &s, T x[N]) {
    const int per = W / T::width;
UnpackBeats:
    for (int i = 0; i < N; i += per) {
#pragma HLS PIPELINE II = 1
        L beat = s.read();
        for (int k = 0; k < per; k++) {
#pragma HLS UNROLL
            if (i + k < N) x[i + k].range(T::width - 1, 0) = beat.data.range((k + 1) * T::width - 1, k * T::width);
        }
    }
}

// An Alveo card's host side (m_axi, the host's DMA writes / reads the card's memory): the same
// beats as on a link, one W-bit word each, converted at the top's edge.
template <int W, int BEATS, class L> void mem_to_stream(const ap_uint<W> *mem, hls::stream<L> &s) {
MemToStream:
    for (int i = 0; i < BEATS; i++) {
#pragma HLS PIPELINE II = 1
        L beat;
        beat.data = mem[i];
        beat.keep = -1;
        beat.strb = -1;
        beat.user = 0;
        beat.id = 0;
        beat.dest = 0;
        beat.last = (i == BEATS - 1) ? 1 : 0;
        s.write(beat);
    }
}

template <int W, int BEATS, class L> void stream_to_mem(hls::stream<L> &s, ap_uint<W> *mem) {
StreamToMem:
    for (int i = 0; i < BEATS; i++) {
#pragma HLS PIPELINE II = 1
        mem[i] = s.read().data;
    }
}

// Raw two's-complement integers <-> values (weights in files, testbench data): exact, no decimal text.
template <class T> void from_raw(T &v, long long raw) {
    ap_int<64> bits = raw;
    v.range(T::width - 1, 0) = bits.range(T::width - 1, 0);
}

template <class T> unsigned long long to_bits(const T &v) {
    ap_uint<T::width> bits = v.range(T::width - 1, 0);
    return bits.to_uint64();
}

} // namespace conveyor

#endif
