// conveyor: the kernels of conveyor/codegen/layers_more.py — ops whose arithmetic hls4ml's
// nnet_utils lacks in the emulator's form: index-table wiring (Transpose, Resize nearest, the
// stretched input of a ConvTranspose), reductions over any axes, MatMul of two run-time values
// (hls4ml's einsum loop) and by constant weights on 3-D values, Resize linear, HardSwish,
// conveyor's own range tables (Exp, Sqrt, Reciprocal, Erf, Gelu) and sigmoid / tanh tables over
// any integer range. Static sizes, no recursion or dynamic memory; constant tables are ROMs.
#ifndef CONVEYOR_MORE_H_
#define CONVEYOR_MORE_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "conveyor_layers.h"
#include <cmath>

namespace conveyor {

// An ap_fixed value from its raw two's-complement bits (a constant built exactly, no decimal text)
template <class T> T fixed_from_raw(long long raw) {
    T v;
    ap_int<64> bits = raw;
    v.range(T::width - 1, 0) = bits.range(T::width - 1, 0);
    return v;
}

// res[i] = data[index[i]] (index -1: zero). Transpose, Resize nearest, Squeeze of a channels-last
// value, ConvTranspose's stretched input: the emulator's own index arithmetic, tabulated.
template <class data_T, class res_T, typename CONFIG_T>
void gather(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
GatherValues:
    for (int i = 0; i < (int)CONFIG_T::n_out; i++) {
#pragma HLS UNROLL
        const int k = CONFIG_T::index[i];
        res[i] = k < 0 ? res_T(0) : (res_T)data[k];
    }
}

// ReduceSum / ReduceMean / ReduceMax over any axes: output o reads data[base[o] + offset[k]],
// k < n_reduce; the sum is exact in accum_t, the mean the exact quotient rounded once (div_exact),
// the max a selection; one cast to res_T.
template <class data_T, class res_T, typename CONFIG_T>
void reduce(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
ReduceOutputs:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
        typename CONFIG_T::accum_t acc = data[CONFIG_T::base[o] + CONFIG_T::offset[0]];
        for (int k = 1; k < (int)CONFIG_T::n_reduce; k++) {
            data_T v = data[CONFIG_T::base[o] + CONFIG_T::offset[k]];
            if (CONFIG_T::op == 2) {
                if (v > acc) acc = v;
            } else {
                acc += v;
            }
        }
        if (CONFIG_T::op == 1)
            res[o] = div_exact<typename CONFIG_T::accum_t, res_T, CONFIG_T::div_width>(acc, CONFIG_T::n_reduce);
        else
            res[o] = (res_T)acc;
    }
}

// MatMul of two run-time values, hls4ml's einsum loop (nnet_einsum.h): per output,
// accum_t acc = 0; acc += a[k] * b[k] (the exact product added, the running sum cast), k ascending;
// one cast to res_T. Output o reads a at a_base[o] + k * a_step, b at b_base[o] + k * b_step.
template <class a_T, class b_T, class res_T, typename CONFIG_T>
void matmul_einsum(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
EinsumOutputs:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
        typename CONFIG_T::accum_t acc = 0;
        for (int k = 0; k < (int)CONFIG_T::n_contract; k++)
            acc += a[CONFIG_T::a_base[o] + k * CONFIG_T::a_step] * b[CONFIG_T::b_base[o] + k * CONFIG_T::b_step];
        res[o] = (res_T)acc;
    }
}

// Dense / MatMul of a [rows][n_in] value by constant weights [n_in][n_out]: nnet::dense per row
// (hls4ml's Dense: each product cast to accum_t, then added, inputs ii = 0 .. n_in-1).
template <class data_T, class res_T, typename CONFIG_T>
void dense_rows_bias(data_T data[CONFIG_T::n_rows * CONFIG_T::dense::n_in],
                     res_T res[CONFIG_T::n_rows * CONFIG_T::dense::n_out],
                     typename CONFIG_T::dense::weight_t weights[CONFIG_T::dense::n_in * CONFIG_T::dense::n_out],
                     typename CONFIG_T::dense::bias_t biases[CONFIG_T::dense::n_out]) {
DenseRows:
    for (int r = 0; r < (int)CONFIG_T::n_rows; r++) {
        data_T x[CONFIG_T::dense::n_in];
        res_T y[CONFIG_T::dense::n_out];
        for (int i = 0; i < (int)CONFIG_T::dense::n_in; i++) x[i] = data[r * CONFIG_T::dense::n_in + i];
        nnet::dense<data_T, res_T, typename CONFIG_T::dense>(x, y, weights, biases);
        for (int j = 0; j < (int)CONFIG_T::dense::n_out; j++) res[r * CONFIG_T::dense::n_out + j] = y[j];
    }
}

// MatMul by constant weights: the same with a zero bias (acc starts at 0, as the emulator's)
template <class data_T, class res_T, typename CONFIG_T>
void dense_rows(data_T data[CONFIG_T::n_rows * CONFIG_T::dense::n_in], res_T res[CONFIG_T::n_rows * CONFIG_T::dense::n_out],
                typename CONFIG_T::dense::weight_t weights[CONFIG_T::dense::n_in * CONFIG_T::dense::n_out]) {
    typename CONFIG_T::dense::bias_t zero[CONFIG_T::dense::n_out];
    for (int j = 0; j < (int)CONFIG_T::dense::n_out; j++) zero[j] = 0;
    dense_rows_bias<data_T, res_T, CONFIG_T>(data, res, weights, zero);
}

// Resize linear: output o is sum_t data[index[o * n_taps + t]] * weight[o * n_taps + t], the
// dyadic weights (products of the per-axis ones) raw integers of weight_t, the sum exact in
// accum_t, one cast to res_T (the emulator's float64 sums, exact for these weights).
template <class data_T, class res_T, typename CONFIG_T>
void resize_linear(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
ResizeOutputs:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
        typename CONFIG_T::accum_t acc = 0;
        for (int t = 0; t < (int)CONFIG_T::n_taps; t++) {
            typename CONFIG_T::weight_t w = fixed_from_raw<typename CONFIG_T::weight_t>(CONFIG_T::weight[o * CONFIG_T::n_taps + t]);
            acc += data[CONFIG_T::index[o * CONFIG_T::n_taps + t]] * w;
        }
        res[o] = (res_T)acc;
    }
}

// HardSwish: x * hard_sigmoid(x), hard_sigmoid as hls4ml's nnet::hard_sigmoid computes it before
// its result cast (slope 1/6 and shift 0.5 in slope_t / shift_t); the product exact, then res_T.
template <class data_T, class res_T, typename CONFIG_T>
void hard_swish(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
HardSwish:
    for (int ii = 0; ii < (int)CONFIG_T::n_in; ii++) {
        auto datareg = CONFIG_T::slope * data[ii] + CONFIG_T::shift;
        if (datareg > 1)
            datareg = 1;
        else if (datareg < 0)
            datareg = 0;
        res[ii] = data[ii] * datareg;
    }
}

// Range tables addressed like hls4ml's sigmoid table over [table_min, table_max): entry ii stands
// for x_ii = R * (ii - N * c) / N in double, R = max - min, c = -min / R.
enum class table_fn { exp, sqrt, reciprocal, erf, gelu, gelu_tanh, sigmoid, tanh };

template <typename CONFIG_T, int N_TABLE> void init_range_table(typename CONFIG_T::table_t table_out[N_TABLE]) {
    const double r = double(CONFIG_T::table_max - CONFIG_T::table_min);
    const double c = double(-CONFIG_T::table_min) / r;
    for (int ii = 0; ii < N_TABLE; ii++) {
        double x = r * (ii - double(N_TABLE) * c) / double(N_TABLE);
        float xf = x;   // hls4ml's sigmoid / tanh tables: float in_val
        switch (CONFIG_T::fn) {
        case table_fn::exp: table_out[ii] = std::exp(x); break;
        case table_fn::sqrt: table_out[ii] = std::sqrt(x); break;
        case table_fn::reciprocal: table_out[ii] = 1.0 / x; break;
        case table_fn::erf: table_out[ii] = std::erf(x); break;
        case table_fn::gelu: table_out[ii] = 0.5 * (1.0 + std::erf(x / 1.4142135623730951)); break;
        case table_fn::gelu_tanh:
            table_out[ii] = 0.5 * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
            break;
        case table_fn::sigmoid: {   // hls4ml's sigmoid_fcn_float: float, 1.0 / (1 + expf(-x))
            float v = 1.0 / (1 + std::exp(-xf));
            table_out[ii] = v;
            break;
        }
        default: {   // hls4ml's init_tanh_table: tanh of a float (tanhf)
            float v = std::tanh(xf);
            table_out[ii] = v;
            break;
        }
        }
    }
}

template <class data_T, typename CONFIG_T> inline int range_index(data_T x) {
    const int range = CONFIG_T::table_max - CONFIG_T::table_min;
    int data_round = x * CONFIG_T::table_size / range;
    int index = data_round + (-CONFIG_T::table_min) * (long long)CONFIG_T::table_size / range;
    if (index < 0)
        index = 0;
    if (index > (int)CONFIG_T::table_size - 1)
        index = CONFIG_T::table_size - 1;
    return index;
}

// Exp, Sqrt, Reciprocal, Erf, Sigmoid / Tanh over another range: res = table[index(x)];
// Gelu (CONFIG_T::times_x): res = x * Phi_table[index(x)], the product exact.
template <class data_T, class res_T, typename CONFIG_T>
void range_table(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
#ifdef __SYNTHESIS__
    bool initialized = false;
    typename CONFIG_T::table_t table[CONFIG_T::table_size];
#else
    static bool initialized = false;
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
#endif
    if (!initialized) {
        init_range_table<CONFIG_T, CONFIG_T::table_size>(table);
        initialized = true;
    }
RangeTable:
    for (int ii = 0; ii < (int)CONFIG_T::n_in; ii++) {
        if (CONFIG_T::times_x)
            res[ii] = data[ii] * table[range_index<data_T, CONFIG_T>(data[ii])];
        else
            res[ii] = table[range_index<data_T, CONFIG_T>(data[ii])];
    }
}

// Add / Sub / Mul / Div-by-constant with numpy broadcasting (op 0 a + b, 1 a - b, 2 a * b, 5 b - a):
// output o reads a[a_index[o]], b[b_index[o]]; the exact sum / difference / product, one cast to
// res_T (the emulator's exact_then_cast; Div: a times the reciprocal in the weight format).
template <class a_T, class b_T, class res_T, typename CONFIG_T>
void binary(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
BinaryValues:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
#pragma HLS UNROLL
        a_T x = a[CONFIG_T::a_index[o]];
        b_T y = b[CONFIG_T::b_index[o]];
        if (CONFIG_T::op == 0)
            res[o] = x + y;
        else if (CONFIG_T::op == 1)
            res[o] = x - y;
        else if (CONFIG_T::op == 2)
            res[o] = x * y;
        else
            res[o] = y - x;
    }
}

// A constant operand of Add / Sub / Mul: the model's float values, exact in const_t, from raw bits
template <typename CONFIG_T> void load_const(typename CONFIG_T::const_t c[CONFIG_T::n_b]) {
    for (int i = 0; i < (int)CONFIG_T::n_b; i++) c[i] = fixed_from_raw<typename CONFIG_T::const_t>(CONFIG_T::const_raw[i]);
}

// Where with a constant condition: res[o] = pick[o] ? a[a_index[o]] : b[b_index[o]], one cast
template <class a_T, class b_T, class res_T, typename CONFIG_T>
void select(a_T a[CONFIG_T::n_a], b_T b[CONFIG_T::n_b], res_T res[CONFIG_T::n_out]) {
SelectValues:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
#pragma HLS UNROLL
        if (CONFIG_T::pick[o])
            res[o] = (res_T)a[CONFIG_T::a_index[o]];
        else
            res[o] = (res_T)b[CONFIG_T::b_index[o]];
    }
}

// QONNX's BipolarQuant: res = scale where x / scale >= 0, else -scale (scale per output o, its
// raw bits in const_t; x / scale >= 0 is x >= 0 for a positive scale, x <= 0 for a negative one)
template <class data_T, class res_T, typename CONFIG_T>
void bipolar(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out]) {
BipolarValues:
    for (int o = 0; o < (int)CONFIG_T::n_out; o++) {
        data_T x = data[CONFIG_T::a_index[o]];
        typename CONFIG_T::const_t s = fixed_from_raw<typename CONFIG_T::const_t>(CONFIG_T::const_raw[o]);
        const bool up = s > 0 ? x >= 0 : (s < 0 ? x <= 0 : true);
        typename CONFIG_T::accum_t v = s;
        if (!up) v = -v;
        res[o] = (res_T)v;
    }
}

// Neg (op 3) and Abs (op 4): the exact value in accum_t (one bit wider), one cast to res_T
template <class data_T, class res_T, typename CONFIG_T> void sign(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
SignValues:
    for (int i = 0; i < (int)CONFIG_T::n_in; i++) {
        typename CONFIG_T::accum_t v = data[i];
        if (CONFIG_T::op == 3 || v < 0) v = -v;
        res[i] = (res_T)v;
    }
}

// Softmax over any axis: row r is data[index[r * n + j]], j < n (its n_slice values), through
// nnet::softmax with the row config (hls4ml's tables), written to res[out_index[r * n + j]] (the
// same element in the result's layout).
template <class data_T, class res_T, typename CONFIG_T>
void softmax_rows(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
SoftmaxRows:
    for (int r = 0; r < (int)CONFIG_T::n_rows; r++) {
        data_T x[CONFIG_T::row::n_in];
        res_T y[CONFIG_T::row::n_in];
        for (int j = 0; j < (int)CONFIG_T::row::n_in; j++) x[j] = data[CONFIG_T::index[r * CONFIG_T::row::n_in + j]];
        nnet::softmax<data_T, res_T, typename CONFIG_T::row>(x, y);
        for (int j = 0; j < (int)CONFIG_T::row::n_in; j++) res[CONFIG_T::out_index[r * CONFIG_T::row::n_in + j]] = y[j];
    }
}

} // namespace conveyor

#endif
