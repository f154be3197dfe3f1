// Runners shared by the generated cases (tests/test_numerics_math_oracle.py): doubles in on
// stdin, doubles out on stdout. mode 0: run the kernel on `count` inputs; mode 1: print its table.
#ifndef CONVEYOR_MATH_ORACLE_H_
#define CONVEYOR_MATH_ORACLE_H_

#include "conveyor_math.h"
#include "nnet_activation.h"
#include "nnet_layernorm.h"
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

// one value at a time through F(data, res) (n_in = 1)
template <class data_T, class res_T, void (*F)(data_T *, res_T *)> int elementwise(long count) {
    std::vector<double> in = read_doubles(count), out(count);
    for (long i = 0; i < count; i++) {
        data_T d[1];
        res_T r[1];
        d[0] = in[i];
        F(d, r);
        out[i] = r[0].to_double();
    }
    write_doubles(out);
    return 0;
}

template <class CFG> int math_table_dump() {
    static typename CFG::table_t t[CFG::table_size];
    conveyor::init_math_table<CFG, CFG::table_size>(t);
    write_table(t);
    return 0;
}

// stdin: dim scales, dim biases (doubles), then count blocks of n_in = seq_len * dim data
template <class data_T, class res_T, class CFG> int layernorm(long count, int mode) {
    const unsigned dim = CFG::n_in / CFG::seq_len;
    if (mode == 1) {
        static typename CFG::table_t t[CFG::table_size];
        nnet::init_invert_sqr_table<CFG, CFG::table_size>(t);
        write_table(t);
        return 0;
    }
    std::vector<double> s = read_doubles(dim), b = read_doubles(dim);
    static typename CFG::scale_t scale[CFG::n_in / CFG::seq_len];
    static typename CFG::bias_t bias[CFG::n_in / CFG::seq_len];
    for (unsigned i = 0; i < dim; i++) {
        scale[i] = s[i];
        bias[i] = b[i];
    }
    std::vector<double> in = read_doubles(count * CFG::n_in), out(count * CFG::n_in);
    for (long i = 0; i < count; i++) {
        data_T d[CFG::n_in];
        res_T r[CFG::n_in];
        for (unsigned j = 0; j < CFG::n_in; j++)
            d[j] = in[i * CFG::n_in + j];
        nnet::layernormalize<data_T, res_T, CFG>(d, r, scale, bias);
        for (unsigned j = 0; j < CFG::n_in; j++)
            out[i * CFG::n_in + j] = r[j].to_double();
    }
    write_doubles(out);
    return 0;
}

} // namespace oracle

#endif
