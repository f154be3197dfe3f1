// Runs hls4ml's own Dense and Conv2D kernels (nnet_utils, hls4ml 1.3.0) on data from stdin.
//
// Each generated case_<i>.cpp defines an hls4ml-style layer config (the structs that
// hls4ml's Vivado backend writes into parameters.h) and calls run_dense / run_conv2d.
// Protocol (native little-endian doubles, all exactly on their types' grids):
//   stdin:  weights, biases, then `count` input vectors (Dense) or images (Conv2D)
//   stdout: `count` result vectors, each value res_T::to_double()
#ifndef CONVEYOR_HLS4ML_ORACLE_H_
#define CONVEYOR_HLS4ML_ORACLE_H_

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "ap_fixed.h"
#include "nnet_common.h"
#include "nnet_conv2d.h"
#include "nnet_dense.h"
#include "conveyor_im2col.h"

namespace oracle {

inline void read_doubles(double* dst, size_t n) {
    if (std::fread(dst, sizeof(double), n, stdin) != n) {
        std::fprintf(stderr, "hls4ml oracle: short read on stdin\n");
        std::exit(2);
    }
}

template <class T> void read_into(T* dst, size_t n) {
    std::vector<double> buf(n);
    read_doubles(buf.data(), n);
    for (size_t i = 0; i < n; i++) dst[i] = buf[i];  // ap_fixed v = (double)x: exact on the grid
}

template <class T> void write_from(const T* src, size_t n) {
    std::vector<double> buf(n);
    for (size_t i = 0; i < n; i++) buf[i] = src[i].to_double();
    if (std::fwrite(buf.data(), sizeof(double), n, stdout) != n) {
        std::fprintf(stderr, "hls4ml oracle: short write on stdout\n");
        std::exit(3);
    }
}

// nnet::dense with CONFIG_T's kernel (DenseLatency for io_parallel / latency).
// weights[ii * n_out + jj] as hls4ml stores them, i.e. W[n_in][n_out] row-major.
template <class data_T, class res_T, class CONFIG_T> int run_dense(long count) {
    static typename CONFIG_T::weight_t w[CONFIG_T::n_in * CONFIG_T::n_out];
    static typename CONFIG_T::bias_t b[CONFIG_T::n_out];
    static data_T x[CONFIG_T::n_in];
    static res_T y[CONFIG_T::n_out];
    read_into(w, CONFIG_T::n_in * CONFIG_T::n_out);
    read_into(b, CONFIG_T::n_out);
    for (long v = 0; v < count; v++) {
        read_into(x, CONFIG_T::n_in);
        nnet::dense<data_T, res_T, CONFIG_T>(x, y, w, b);
        write_from(y, CONFIG_T::n_out);
    }
    return 0;
}

// The im2col buffer filler of conveyor's generated HLS code (conveyor/codegen/include).
using conveyor::fill_im2col;

// nnet::conv_2d_cl (channels last). weights[((kh * KW + kw) * C + c) * F + f], as hls4ml
// stores Keras kernels; images [H][W][C]; results [OH][OW][F].
template <class data_T, class res_T, class CONFIG_T> int run_conv2d(long count) {
    const unsigned n_x = CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan;
    const unsigned n_y = CONFIG_T::out_height * CONFIG_T::out_width * CONFIG_T::n_filt;
    const unsigned n_w = CONFIG_T::filt_height * CONFIG_T::filt_width * CONFIG_T::n_chan * CONFIG_T::n_filt;
    static typename CONFIG_T::weight_t w[n_w];
    static typename CONFIG_T::bias_t b[CONFIG_T::n_filt];
    static data_T x[n_x];
    static res_T y[n_y];
    read_into(w, n_w);
    read_into(b, CONFIG_T::n_filt);
    for (long v = 0; v < count; v++) {
        read_into(x, n_x);
        nnet::conv_2d_cl<data_T, res_T, CONFIG_T>(x, y, w, b);
        write_from(y, n_y);
    }
    return 0;
}

}  // namespace oracle

#endif
