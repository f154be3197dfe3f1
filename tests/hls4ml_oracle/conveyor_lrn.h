// conveyor's LRN in HLS C++ (hls4ml has no LRN): the arithmetic that conveyor's emulator
// (conveyor/ops/norm.py, docs/numerics.md) reproduces bit for bit. Channel-major data:
// data[c * n_spatial + s].
#ifndef CONVEYOR_LRN_H_
#define CONVEYOR_LRN_H_

#include "ap_fixed.h"
#include <cmath>

namespace conveyor {

struct lrn_config {
    static const unsigned n_chan = 8;
    static const unsigned n_spatial = 1;
    static const unsigned size = 5;               // the LRN window (ONNX attribute size)
    static const unsigned table_size = 4096;
    static const int table_min = 0;               // table range [table_min, table_max)
    static const int table_max = 524288;
    static constexpr double alpha = 1e-4, beta = 0.75, bias = 1.0;
    typedef ap_fixed<18, 8> table_t;
    typedef ap_fixed<40, 16> accum_t;
};

template <typename CONFIG_T, int N_TABLE> void init_lrn_table(typename CONFIG_T::table_t table_out[N_TABLE]) {
    const double r = double(CONFIG_T::table_max - CONFIG_T::table_min);
    const double c = double(-CONFIG_T::table_min) / r;
    for (int ii = 0; ii < N_TABLE; ii++) {
        double in_val = r * (ii - double(N_TABLE) * c) / double(N_TABLE);
        table_out[ii] = std::pow(CONFIG_T::bias + CONFIG_T::alpha / CONFIG_T::size * in_val, -CONFIG_T::beta);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lrn(data_T data[CONFIG_T::n_chan * CONFIG_T::n_spatial], res_T res[CONFIG_T::n_chan * CONFIG_T::n_spatial]) {
    static bool initialized = false;
    static typename CONFIG_T::table_t table[CONFIG_T::table_size];
    if (!initialized) {
        init_lrn_table<CONFIG_T, CONFIG_T::table_size>(table);
        initialized = true;
    }
    const int range = CONFIG_T::table_max - CONFIG_T::table_min;
    const int before = (CONFIG_T::size - 1) / 2, after = CONFIG_T::size - 1 - before;
    for (int s = 0; s < (int)CONFIG_T::n_spatial; s++) {
        for (int c = 0; c < (int)CONFIG_T::n_chan; c++) {
            typename CONFIG_T::accum_t sum = 0;
            for (int k = c - before; k <= c + after; k++) {
                if (k >= 0 && k < (int)CONFIG_T::n_chan)
                    sum += data[k * CONFIG_T::n_spatial + s] * data[k * CONFIG_T::n_spatial + s];
            }
            int data_round = sum * CONFIG_T::table_size / range;
            int index = data_round + (-CONFIG_T::table_min) * (long long)CONFIG_T::table_size / range;
            if (index < 0)
                index = 0;
            if (index > (int)CONFIG_T::table_size - 1)
                index = CONFIG_T::table_size - 1;
            res[c * CONFIG_T::n_spatial + s] = data[c * CONFIG_T::n_spatial + s] * table[index];
        }
    }
}

} // namespace conveyor

#endif
