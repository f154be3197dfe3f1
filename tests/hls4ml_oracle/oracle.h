// Runners shared by the generated cases: doubles in on stdin, doubles out on stdout.
// mode 0: run the function on `count` inputs; mode 1: print the lookup tables.
#ifndef CONVEYOR_HLS4ML_ORACLE_H_
#define CONVEYOR_HLS4ML_ORACLE_H_

#include "conveyor_lrn.h"
#include "nnet_activation.h"
#include "nnet_batchnorm.h"
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace oracle {

inline std::vector<double> read_doubles(size_t n) {
    std::vector<double> v(n);
    if (n && fread(v.data(), sizeof(double), n, stdin) != n) {
        fprintf(stderr, "short read: wanted %zu doubles\n", n);
        exit(2);
    }
    return v;
}

inline void write_doubles(const std::vector<double> &v) {
    if (!v.empty())
        fwrite(v.data(), sizeof(double), v.size(), stdout);
}

template <class T, int N> void write_table(const T (&t)[N]) {
    std::vector<double> v(N);
    for (int i = 0; i < N; i++)
        v[i] = t[i].to_double();
    write_doubles(v);
}

template <class data_T, class res_T, class CFG> int sigmoid(long count, int mode) {
    if (mode == 1) {
        static typename CFG::table_t t[CFG::table_size];
        nnet::init_sigmoid_table<CFG, CFG::table_size>(t);
        write_table(t);
        return 0;
    }
    std::vector<double> in = read_doubles(count), out(count);
    for (long i = 0; i < count; i++) {
        data_T d[1];
        res_T r[1];
        d[0] = in[i];
        nnet::sigmoid<data_T, res_T, CFG>(d, r);
        out[i] = r[0].to_double();
    }
    write_doubles(out);
    return 0;
}

template <class data_T, class res_T, class CFG> int tanh(long count, int mode) {
    if (mode == 1) {
        static typename CFG::table_t t[CFG::table_size];
        nnet::init_tanh_table<CFG, CFG::table_size>(t);
        write_table(t);
        return 0;
    }
    std::vector<double> in = read_doubles(count), out(count);
    for (long i = 0; i < count; i++) {
        data_T d[1];
        res_T r[1];
        d[0] = in[i];
        nnet::tanh<data_T, res_T, CFG>(d, r);
        out[i] = r[0].to_double();
    }
    write_doubles(out);
    return 0;
}

template <class data_T, class res_T, class CFG> int softmax(long count, int mode) {
    const unsigned n = CFG::n_slice;
    if (mode == 1) {
        static typename CFG::exp_table_t e[CFG::exp_table_size];
        static typename CFG::inv_table_t v[CFG::inv_table_size];
        if (CFG::implementation == nnet::softmax_implementation::stable)
            nnet::init_exp_table<typename CFG::inp_norm_t, CFG>(e, true);
        else
            nnet::init_exp_table<data_T, CFG>(e);
        nnet::init_invert_table<typename CFG::inv_inp_t, CFG>(v);
        write_table(e);
        write_table(v);
        return 0;
    }
    std::vector<double> in = read_doubles(count * n), out(count * n);
    for (long i = 0; i < count; i++) {
        data_T d[CFG::n_slice];
        res_T r[CFG::n_slice];
        for (unsigned j = 0; j < n; j++)
            d[j] = in[i * n + j];
        nnet::softmax<data_T, res_T, CFG>(d, r);
        for (unsigned j = 0; j < n; j++)
            out[i * n + j] = r[j].to_double();
    }
    write_doubles(out);
    return 0;
}

// stdin: alpha, then the data
template <class data_T, class param_T, class res_T, class CFG> int leaky_relu(long count, int mode) {
    std::vector<double> a = read_doubles(1), in = read_doubles(count), out(count);
    param_T alpha = a[0];
    for (long i = 0; i < count; i++) {
        data_T d[1];
        res_T r[1];
        d[0] = in[i];
        nnet::leaky_relu<data_T, param_T, res_T, CFG>(d, alpha, r);
        out[i] = r[0].to_double();
    }
    write_doubles(out);
    return 0;
}

// stdin: n_scale_bias scales, n_scale_bias biases (doubles), then count blocks of n_in data
template <class data_T, class res_T, class CFG> int batchnorm(long count, int mode) {
    std::vector<double> s = read_doubles(CFG::n_scale_bias), b = read_doubles(CFG::n_scale_bias);
    static typename CFG::scale_t scale[CFG::n_scale_bias];
    static typename CFG::bias_t bias[CFG::n_scale_bias];
    for (unsigned i = 0; i < CFG::n_scale_bias; i++) {
        scale[i] = s[i];
        bias[i] = b[i];
    }
    std::vector<double> in = read_doubles(count * CFG::n_in), out(count * CFG::n_in);
    for (long i = 0; i < count; i++) {
        data_T d[CFG::n_in];
        res_T r[CFG::n_in];
        for (unsigned j = 0; j < CFG::n_in; j++)
            d[j] = in[i * CFG::n_in + j];
        nnet::normalize<data_T, res_T, CFG>(d, r, scale, bias);
        for (unsigned j = 0; j < CFG::n_in; j++)
            out[i * CFG::n_in + j] = r[j].to_double();
    }
    write_doubles(out);
    return 0;
}

template <class data_T, class res_T, class CFG> int lrn(long count, int mode) {
    const unsigned n = CFG::n_chan * CFG::n_spatial;
    if (mode == 1) {
        static typename CFG::table_t t[CFG::table_size];
        conveyor::init_lrn_table<CFG, CFG::table_size>(t);
        write_table(t);
        return 0;
    }
    std::vector<double> in = read_doubles(count * n), out(count * n);
    std::vector<data_T> d(n);
    std::vector<res_T> r(n);
    for (long i = 0; i < count; i++) {
        for (unsigned j = 0; j < n; j++)
            d[j] = in[i * n + j];
        conveyor::lrn<data_T, res_T, CFG>(d.data(), r.data());
        for (unsigned j = 0; j < n; j++)
            out[i * n + j] = r[j].to_double();
    }
    write_doubles(out);
    return 0;
}

} // namespace oracle

#endif
