// conveyor: layers whose arithmetic hls4ml's nnet_utils does not have in the emulator's form
// (channels-last arrays, static sizes, no dynamic memory): grouped/depthwise convolution on
// nnet's dense kernel, average pooling with an exactly rounded quotient, channel concat, Clip.
#ifndef CONVEYOR_LAYERS_H_
#define CONVEYOR_LAYERS_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "nnet_dense_latency.h"
#include <cmath>

namespace conveyor {

// Grouped convolution (depthwise when n_group == n_chan): per output pixel and group, the
// window's taps (kernel rows, kernel columns, the group's channels, channel fastest: the
// emulator's order) go through nnet::dense_latency with the group's weights
// [kh][kw][c][m] and biases, so products and sums are hls4ml's (accum_t casts included).
// conv_2d_groups_cl computes groups g0 .. g0 + NG - 1 only: `weights` holds those groups' weights
// only ([NG][kh][kw][c][m]; a tile streamed from DDR, codegen/weight_stream.py), `biases` all
// n_filt; each group's outputs are computed exactly as in the whole layer.
template <class data_T, class res_T, typename CONFIG_T, int NG>
void conv_2d_groups_cl(data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                       res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_filt],
                       typename CONFIG_T::weight_t weights[NG * CONFIG_T::mult_config::n_in * CONFIG_T::mult_config::n_out],
                       typename CONFIG_T::bias_t biases[CONFIG_T::n_filt], const int g0) {
    const int CG = CONFIG_T::n_chan / CONFIG_T::n_group, MG = CONFIG_T::n_filt / CONFIG_T::n_group;
    const int K = CONFIG_T::filt_height * CONFIG_T::filt_width * CG;
GroupedPixels:
    for (int p = 0; p < (int)(CONFIG_T::out_height * CONFIG_T::out_width); p++) {
        const int oh = p / CONFIG_T::out_width, ow = p % CONFIG_T::out_width;
    Groups:
        for (int gi = 0; gi < NG; gi++) {
            const int g = g0 + gi;
            data_T buf[CONFIG_T::mult_config::n_in];
            typename CONFIG_T::weight_t w[CONFIG_T::mult_config::n_in * CONFIG_T::mult_config::n_out];
            typename CONFIG_T::bias_t b[CONFIG_T::mult_config::n_out];
            res_T out[CONFIG_T::mult_config::n_out];
            int j = 0;
            for (int kh = 0; kh < (int)CONFIG_T::filt_height; kh++) {
                const int row = -(int)CONFIG_T::pad_top + kh * (int)CONFIG_T::dilation_height + oh * (int)CONFIG_T::stride_height;
                for (int kw = 0; kw < (int)CONFIG_T::filt_width; kw++) {
                    const int col = -(int)CONFIG_T::pad_left + kw * (int)CONFIG_T::dilation_width + ow * (int)CONFIG_T::stride_width;
                    const bool inside = row >= 0 && row < (int)CONFIG_T::in_height && col >= 0 && col < (int)CONFIG_T::in_width;
                    for (int c = 0; c < CG; c++) {
                        buf[j++] = inside ? data[(row * CONFIG_T::in_width + col) * CONFIG_T::n_chan + g * CG + c] : data_T(0);
                    }
                }
            }
            for (int i = 0; i < K * MG; i++) w[i] = weights[gi * K * MG + i];
            for (int m = 0; m < MG; m++) b[m] = biases[g * MG + m];
            nnet::dense_latency<data_T, res_T, typename CONFIG_T::mult_config>(buf, out, w, b);
            for (int m = 0; m < MG; m++) res[p * CONFIG_T::n_filt + g * MG + m] = out[m];
        }
    }
}

// conv_2d_grouped_cl: every group, the weights on chip.
template <class data_T, class res_T, typename CONFIG_T>
void conv_2d_grouped_cl(data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                        res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_filt],
                        typename CONFIG_T::weight_t weights[CONFIG_T::n_group * CONFIG_T::mult_config::n_in *
                                                            CONFIG_T::mult_config::n_out],
                        typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    conv_2d_groups_cl<data_T, res_T, CONFIG_T, CONFIG_T::n_group>(data, res, weights, biases, 0);
}

// (res_T)(sum / count), rounded once from the exact quotient (the emulator's AveragePool and
// mean): the quotient to RF + 1 fractional bits plus a sticky bit lies strictly between the
// same two points of the 2^-(RF+1) grid as the exact one (or on the same point), and every
// rounding decision of res_T lies on that grid, so the cast rounds both the same way.
template <class acc_T, class res_T, int NW> res_T div_exact(acc_T sum, int count) {
    const int F = acc_T::width - acc_T::iwidth;
    const int RF = res_T::width - res_T::iwidth;
    const int S = RF + 1 - F;
    ap_int<NW> num = 0;
    num.range(acc_T::width - 1, 0) = sum.range(acc_T::width - 1, 0);
    if (acc_T::width < NW && sum < 0) num.range(NW - 1, acc_T::width) = -1;  // sign extension
    ap_int<NW> den = count;
    if (S >= 0)
        num <<= S;
    else
        den <<= -S;
    ap_int<NW> q = num / den, r = num % den;
    if (r < 0) {
        q -= 1;
        r += den;
    }
    ap_int<NW + 1> raw = q;
    raw = raw * 2 + (r != 0 ? 1 : 0);
    ap_fixed<NW + 1, NW + 1 - (RF + 2)> v;
    v.range(NW, 0) = raw.range(NW, 0);
    return (res_T)v;
}

// AveragePool (and GlobalAveragePool: one window over the whole plane), channels last. The
// sum is exact in accum_t; a tap counts when it lies in [lo, hi) per axis: the input, or the
// input with its declared pads (count_include_pad); taps outside the input add 0.
template <class data_T, class res_T, typename CONFIG_T>
void avgpool_2d_cl(data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                   res_T res[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_chan]) {
    const int lo_h = CONFIG_T::count_pad ? -(int)CONFIG_T::pad_top : 0;
    const int hi_h = CONFIG_T::count_pad ? (int)(CONFIG_T::in_height + CONFIG_T::pad_bottom) : (int)CONFIG_T::in_height;
    const int lo_w = CONFIG_T::count_pad ? -(int)CONFIG_T::pad_left : 0;
    const int hi_w = CONFIG_T::count_pad ? (int)(CONFIG_T::in_width + CONFIG_T::pad_right) : (int)CONFIG_T::in_width;
AvgPixels:
    for (int p = 0; p < (int)(CONFIG_T::out_height * CONFIG_T::out_width); p++) {
        const int oh = p / CONFIG_T::out_width, ow = p % CONFIG_T::out_width;
    AvgChannels:
        for (int c = 0; c < (int)CONFIG_T::n_chan; c++) {
            typename CONFIG_T::accum_t sum = 0;
            int count = 0;
            for (int kh = 0; kh < (int)CONFIG_T::pool_height; kh++) {
                const int row = -(int)CONFIG_T::pad_top + kh + oh * (int)CONFIG_T::stride_height;
                for (int kw = 0; kw < (int)CONFIG_T::pool_width; kw++) {
                    const int col = -(int)CONFIG_T::pad_left + kw + ow * (int)CONFIG_T::stride_width;
                    if (row >= lo_h && row < hi_h && col >= lo_w && col < hi_w) count++;
                    if (row >= 0 && row < (int)CONFIG_T::in_height && col >= 0 && col < (int)CONFIG_T::in_width)
                        sum += data[(row * CONFIG_T::in_width + col) * CONFIG_T::n_chan + c];
                }
            }
            res[p * CONFIG_T::n_chan + c] =
                count ? div_exact<typename CONFIG_T::accum_t, res_T, CONFIG_T::div_width>(sum, count) : res_T(0);
        }
    }
}

// Concat of two values along one axis: `outer` blocks, each `n1` values of a then `n2` of b,
// each value cast to res_T (the emulator's Concat). Channels-last 4-D values concatenated
// over channels: outer = height * width.
template <class a_T, class b_T, class res_T, int OUTER, int N1, int N2>
void concat2(a_T a[OUTER * N1], b_T b[OUTER * N2], res_T res[OUTER * (N1 + N2)]) {
ConcatOuter:
    for (int o = 0; o < OUTER; o++) {
        for (int i = 0; i < N1; i++) res[o * (N1 + N2) + i] = (res_T)a[o * N1 + i];
        for (int i = 0; i < N2; i++) res[o * (N1 + N2) + N1 + i] = (res_T)b[o * N2 + i];
    }
}

// Clip(x, lo, hi) = min(max(x, lo), hi), then one cast to res_T (the bounds are the model's
// float constants, exact as doubles; ap_fixed values up to 53 bits compare exactly).
template <class data_T, class res_T, typename CONFIG_T> void clip(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
ClipValues:
    for (int i = 0; i < (int)CONFIG_T::n_in; i++) {
        double v = data[i].to_double();
        if (CONFIG_T::has_lo && v < CONFIG_T::lo) v = CONFIG_T::lo;
        if (CONFIG_T::has_hi && v > CONFIG_T::hi) v = CONFIG_T::hi;
        res[i] = (res_T)v;
    }
}

// LRN (hls4ml has none), channels last: the arithmetic of the kernel the emulator was checked
// against (tests/hls4ml_oracle/conveyor_lrn.h, channel-major there): the window's square sum in
// accum_t (each += one cast), a table of (bias + alpha / size * s)^-beta addressed like hls4ml's
// sigmoid table over [table_min, table_max), res = data * table[index], one cast.
template <typename CONFIG_T, int N_TABLE> void init_lrn_table_cl(typename CONFIG_T::table_t table_out[N_TABLE]) {
    const double r = double(CONFIG_T::table_max - CONFIG_T::table_min);
    const double c = double(-CONFIG_T::table_min) / r;
    for (int ii = 0; ii < N_TABLE; ii++) {
        double in_val = r * (ii - double(N_TABLE) * c) / double(N_TABLE);
        table_out[ii] = std::pow(CONFIG_T::bias + CONFIG_T::alpha / CONFIG_T::size * in_val, -CONFIG_T::beta);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lrn_cl(data_T data[CONFIG_T::n_spatial * CONFIG_T::n_chan], res_T res[CONFIG_T::n_spatial * CONFIG_T::n_chan]) {
#ifdef __SYNTHESIS__
    bool initialized = false;
    typename CONFIG_T::table_t table[CONFIG_T::table_size];
#else
    static bool initialized = false;
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
#endif
    if (!initialized) {
        init_lrn_table_cl<CONFIG_T, CONFIG_T::table_size>(table);
        initialized = true;
    }
    const int range = CONFIG_T::table_max - CONFIG_T::table_min;
    const int before = (CONFIG_T::size - 1) / 2, after = CONFIG_T::size - 1 - before;
LrnPixels:
    for (int s = 0; s < (int)CONFIG_T::n_spatial; s++) {
    LrnChannels:
        for (int c = 0; c < (int)CONFIG_T::n_chan; c++) {
            typename CONFIG_T::accum_t sum = 0;
            for (int k = c - before; k <= c + after; k++) {
                if (k >= 0 && k < (int)CONFIG_T::n_chan)
                    sum += data[s * CONFIG_T::n_chan + k] * data[s * CONFIG_T::n_chan + k];
            }
            int data_round = sum * CONFIG_T::table_size / range;
            int index = data_round + (-CONFIG_T::table_min) * (long long)CONFIG_T::table_size / range;
            if (index < 0)
                index = 0;
            if (index > (int)CONFIG_T::table_size - 1)
                index = CONFIG_T::table_size - 1;
            res[s * CONFIG_T::n_chan + c] = data[s * CONFIG_T::n_chan + c] * table[index];
        }
    }
}

} // namespace conveyor

#endif
