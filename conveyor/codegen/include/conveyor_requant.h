// conveyor: the integer domain of a float-scale quantized model (frontends/qdq.py,
// requant="integer") as HLS C++, the arithmetic of conveyor/ops/quant.py bit for bit:
// - requant:   q = clamp(round_half_even(acc * M0 / 2^shift) + z, qmin, qmax) - z, M0 an int32
//              in [2^30, 2^31) per channel (Q31; TFLite's QuantizeMultiplier), in ap_int<64>;
// - requant2:  an Add and its quantizer: (a * Ma0 * 2^(n - na) + b * Mb0 * 2^(n - nb)) / 2^n, one
//              rounding, in ap_int<64> (the frontend keeps n - na, n - nb <= 20: 9 + 31 + 20 bits);
// - quantize:  the graph input's quantizer, float32 x / scale rounded half to even (std::rint in
//              the default rounding mode), as onnxruntime's QuantizeLinear;
// - a Requant writing a graph output dequantizes: float32 (q - z) * scale, held exactly by y_T;
// - sumpool_2d_cl: the exact window sum of an AveragePool (SumPool) or GlobalAveragePool
//              (ReduceSum over H, W), channels last, cast once to the result.
// The table entry c of element i is (i / chan_stride) % n_chan: per channel, chan_stride 1 (4-D
// values are channels last inside a board, 2-D ones [1, n]); per spatial position (an AveragePool's
// border windows), chan_stride the channel count. Each config gives n_elem, n_chan, chan_stride,
// zero_point, qmin, qmax, dequantize, scale and multiplier(c) / shift(c) (requant2: m_a, m_b, shift).
#ifndef CONVEYOR_REQUANT_H_
#define CONVEYOR_REQUANT_H_

#include <cmath>

#include "ap_fixed.h"
#include "ap_int.h"

namespace conveyor {

// round_half_even(p / 2^shift), 1 <= shift <= 62 (ops/quant.py: requantize)
inline ap_int<64> shift_round_half_even(ap_int<64> p, int shift) {
    ap_int<64> y = p >> shift;  // floor: arithmetic shift
    ap_int<64> rem = p - (y << shift);
    ap_int<64> half = ap_int<64>(1) << (shift - 1);
    return y + ((rem > half || (rem == half && y[0] == 1)) ? 1 : 0);
}

// q (the quantizer's integer before the zero point) clamped, minus the zero point, written to y
template <class y_T, class CONFIG_T> void requant_store(ap_int<64> q, y_T &y) {
    q += CONFIG_T::zero_point;
    if (q < CONFIG_T::qmin) q = CONFIG_T::qmin;
    if (q > CONFIG_T::qmax) q = CONFIG_T::qmax;
    q -= CONFIG_T::zero_point;
    if (CONFIG_T::dequantize) {
        float v = float(q.to_int()) * CONFIG_T::scale;  // float32, as onnxruntime's DequantizeLinear
        y = v;
    } else {
        y = q.to_int64();
    }
}

template <class x_T, class y_T, class CONFIG_T>
void requant(const x_T x[CONFIG_T::n_elem], y_T y[CONFIG_T::n_elem]) {
RequantLoop:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
#pragma HLS UNROLL
        const unsigned c = (i / CONFIG_T::chan_stride) % CONFIG_T::n_chan;
        ap_int<64> acc = x[i].to_int64();  // an integer (the frontend's int32 accumulator)
        ap_int<64> p = acc * ap_int<64>(CONFIG_T::multiplier(c));
        requant_store<y_T, CONFIG_T>(shift_round_half_even(p, CONFIG_T::shift(c)), y[i]);
    }
}

template <class a_T, class b_T, class y_T, class CONFIG_T>
void requant2(const a_T a[CONFIG_T::n_elem], const b_T b[CONFIG_T::n_elem], y_T y[CONFIG_T::n_elem]) {
Requant2Loop:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
#pragma HLS UNROLL
        ap_int<64> t = ap_int<64>(a[i].to_int64()) * ap_int<64>(CONFIG_T::m_a) +
                       ap_int<64>(b[i].to_int64()) * ap_int<64>(CONFIG_T::m_b);
        requant_store<y_T, CONFIG_T>(shift_round_half_even(t, CONFIG_T::shift(0)), y[i]);
    }
}

template <class x_T, class y_T, class CONFIG_T>
void quantize(const x_T x[CONFIG_T::n_elem], y_T y[CONFIG_T::n_elem]) {
QuantizeLoop:
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
#pragma HLS UNROLL
        float r = std::rint(x[i].to_float() / CONFIG_T::scale);  // float32 division, half to even
        const float lo = float(CONFIG_T::qmin - CONFIG_T::zero_point), hi = float(CONFIG_T::qmax - CONFIG_T::zero_point);
        r = r < lo ? lo : (r > hi ? hi : r);  // the clamp first: r may exceed int64 for a tiny scale
        requant_store<y_T, CONFIG_T>(ap_int<64>((long long)r), y[i]);
    }
}

template <class x_T, class y_T, class CONFIG_T>
void sumpool_2d_cl(const x_T x[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                   y_T y[CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_chan]) {
SumPoolRows:
    for (unsigned oh = 0; oh < CONFIG_T::out_height; oh++) {
    SumPoolCols:
        for (unsigned ow = 0; ow < CONFIG_T::out_width; ow++) {
        SumPoolChans:
            for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
#pragma HLS UNROLL
                typename CONFIG_T::accum_t acc = 0;  // exact: the input's width plus log2(taps) bits
                for (unsigned kh = 0; kh < CONFIG_T::pool_height; kh++) {
                    for (unsigned kw = 0; kw < CONFIG_T::pool_width; kw++) {
                        const int ih = int(oh * CONFIG_T::stride_height + kh) - int(CONFIG_T::pad_top);
                        const int iw = int(ow * CONFIG_T::stride_width + kw) - int(CONFIG_T::pad_left);
                        if (ih >= 0 && ih < int(CONFIG_T::in_height) && iw >= 0 && iw < int(CONFIG_T::in_width))
                            acc += x[(ih * CONFIG_T::in_width + iw) * CONFIG_T::n_chan + c];
                    }
                }
                y[(oh * CONFIG_T::out_width + ow) * CONFIG_T::n_chan + c] = acc;
            }
        }
    }
}

} // namespace conveyor

#endif
