// conveyor's own elementwise kernels in HLS C++ (hls4ml has no HLS Exp, Sqrt, Reciprocal, Erf,
// Gelu or HardSwish): the arithmetic that conveyor's emulator (conveyor/ops/math_unary.py,
// conveyor/ops/lut.py, docs/numerics.md) reproduces bit for bit. The range tables are built and
// addressed like hls4ml's sigmoid table (nnet_activation.h) and conveyor's LRN table.
#ifndef CONVEYOR_MATH_H_
#define CONVEYOR_MATH_H_

#include "ap_fixed.h"
#include <cmath>

namespace conveyor {

enum class math_fn { exp, sqrt, reciprocal, erf, gelu, gelu_tanh };

struct math_config {
    static const unsigned n_in = 1;
    static const math_fn fn = math_fn::exp;
    static const unsigned table_size = 1024;
    static const int table_min = -8;              // table range [table_min, table_max)
    static const int table_max = 8;
    typedef ap_fixed<18, 8, AP_RND, AP_SAT> table_t;
};

// Entry ii stands for x_ii = R * (ii - N * c) / N in double, R = max - min, c = -min / R.
// gelu's table holds Phi(x) = 0.5 * (1 + erf(x / sqrt 2)) (gelu = x * Phi(x)); gelu_tanh its tanh form.
template <typename CONFIG_T, int N_TABLE> void init_math_table(typename CONFIG_T::table_t table_out[N_TABLE]) {
    const double r = double(CONFIG_T::table_max - CONFIG_T::table_min);
    const double c = double(-CONFIG_T::table_min) / r;
    for (int ii = 0; ii < N_TABLE; ii++) {
        double x = r * (ii - double(N_TABLE) * c) / double(N_TABLE);
        double v;
        switch (CONFIG_T::fn) {
        case math_fn::exp: v = std::exp(x); break;
        case math_fn::sqrt: v = std::sqrt(x); break;
        case math_fn::reciprocal: v = 1.0 / x; break;
        case math_fn::erf: v = std::erf(x); break;
        case math_fn::gelu: v = 0.5 * (1.0 + std::erf(x / 1.4142135623730951)); break;
        default: v = 0.5 * (1.0 + std::tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); break;
        }
        table_out[ii] = v;
    }
}

template <class data_T, typename CONFIG_T> inline int math_index(data_T x) {
    const int range = CONFIG_T::table_max - CONFIG_T::table_min;
    int data_round = x * CONFIG_T::table_size / range;
    int index = data_round + (-CONFIG_T::table_min) * (long long)CONFIG_T::table_size / range;
    if (index < 0)
        index = 0;
    if (index > (int)CONFIG_T::table_size - 1)
        index = CONFIG_T::table_size - 1;
    return index;
}

// Exp, Sqrt, Reciprocal, Erf (and Pow 0.5 / -1): res = table[index(x)]
template <class data_T, class res_T, typename CONFIG_T>
void math_table(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    static bool initialized = false;
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
    if (!initialized) {
        init_math_table<CONFIG_T, CONFIG_T::table_size>(table);
        initialized = true;
    }
    for (int ii = 0; ii < (int)CONFIG_T::n_in; ii++)
        res[ii] = table[math_index<data_T, CONFIG_T>(data[ii])];
}

// Gelu: res = x * Phi_table[index(x)], the product exact
template <class data_T, class res_T, typename CONFIG_T>
void gelu(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    static bool initialized = false;
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
    if (!initialized) {
        init_math_table<CONFIG_T, CONFIG_T::table_size>(table);
        initialized = true;
    }
    for (int ii = 0; ii < (int)CONFIG_T::n_in; ii++)
        res[ii] = data[ii] * table[math_index<data_T, CONFIG_T>(data[ii])];
}

// HardSwish: x * hard_sigmoid(x), hard_sigmoid as hls4ml's nnet::hard_sigmoid computes it
// before its result cast (CONFIG_T: hls4ml's hard_activ config, slope 1/6, shift 0.5)
template <class data_T, class res_T, typename CONFIG_T>
void hard_swish(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_in]) {
    for (int ii = 0; ii < (int)CONFIG_T::n_in; ii++) {
        auto datareg = CONFIG_T::slope * data[ii] + CONFIG_T::shift;
        if (datareg > 1)
            datareg = 1;
        else if (datareg < 0)
            datareg = 0;
        res[ii] = data[ii] * datareg;
    }
}

// Pow(x, N), N a positive integer: the exact product of N factors, then res_T
template <class data_T, class res_T, int N> void pow_int(data_T data[1], res_T res[1]) {
    if (N == 2) {
        res[0] = data[0] * data[0];
    } else if (N == 3) {
        res[0] = data[0] * data[0] * data[0];
    }
}

} // namespace conveyor

#endif
