// Runners shared by the generated cases (tests/test_numerics_rnn.py): native doubles in on
// stdin, doubles out on stdout, every value exactly on its type's grid.
//   per group:    W [n_in][G*H], R [H][G*H], b [G*H], br [G*H]  (hls4ml's layout, Keras gate order;
//                 Bidirectional: the forward set, then the backward set)
//   per sequence: x [n_sequence][n_in], then h0 [H] (and c0 [H] for LSTM) when the case takes
//                 initial states
//   out per seq:  res [n_sequence][H] (every step's h, return_sequences), then the final h (and c)
//                 when the case returns states
#ifndef CONVEYOR_HLS4ML_RNN_ORACLE_H_
#define CONVEYOR_HLS4ML_RNN_ORACLE_H_

#include "conveyor_rnn.h"
#include "nnet_recurrent.h"
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace oracle {

template <class T> void read_into(T *dst, size_t n) {
    std::vector<double> buf(n);
    if (n && fread(buf.data(), sizeof(double), n, stdin) != n) {
        fprintf(stderr, "short read: wanted %zu doubles\n", n);
        exit(2);
    }
    for (size_t i = 0; i < n; i++)
        dst[i] = buf[i];  // ap_fixed v = (double)x: exact on the grid
}

template <class T> void write_from(const T *src, size_t n) {
    std::vector<double> buf(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = src[i].to_double();
    fwrite(buf.data(), sizeof(double), n, stdout);
}

template <class CFG, unsigned G> struct params {
    typename CFG::weight_t w[CFG::n_in * G * CFG::n_state];
    typename CFG::recurrent_weight_t r[CFG::n_state * G * CFG::n_state];
    typename CFG::bias_t b[G * CFG::n_state];
    typename CFG::recurrent_bias_t br[G * CFG::n_state];
    void read() {
        read_into(w, CFG::n_in * G * CFG::n_state);
        read_into(r, CFG::n_state * G * CFG::n_state);
        read_into(b, G * CFG::n_state);
        read_into(br, G * CFG::n_state);
    }
};

// hls4ml's generated call: nnet::lstm_stack<input_t, result_t, config> (zero initial states).
// lstm_stack instantiates the non-static nnet::lstm too (a run-time `if (use_static)`), which
// compiles only when input_t, result_t and accum_t are one type.
template <class data_T, class res_T, class CFG> int lstm_hls4ml_stack(long groups, long seqs) {
    static params<CFG, 4> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            nnet::lstm_stack<data_T, res_T, CFG>(x, y, p.w, p.r, p.b, p.br);
            write_from(y, CFG::n_sequence_out * CFG::n_state);
        }
    }
    return 0;
}

// For other types: lstm_stack's own loop (use_static, return_sequences) around hls4ml's
// nnet::lstm_static, the per-step kernel.
template <class data_T, class res_T, class CFG> int lstm_hls4ml_static(long groups, long seqs) {
    static params<CFG, 4> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            res_T h_newstate[CFG::n_state], s_newstate[CFG::n_state];
            data_T data_in[CFG::n_in];
            bool reset_state = true;
            for (int ii = 0; ii < (int)CFG::n_state; ii++) {
                h_newstate[ii] = 0;
                s_newstate[ii] = 0;
            }
            for (int iloop = 0; iloop < (int)CFG::n_sequence; iloop++) {
                for (int j = 0; j < (int)CFG::n_in; j++)
                    data_in[j] = x[j + iloop * CFG::n_in];
                nnet::lstm_static<data_T, res_T, CFG>(reset_state, data_in, h_newstate, s_newstate, p.w, p.r, p.b,
                                                      p.br);
                for (int i = CFG::n_state * iloop, j = 0; i < (int)(CFG::n_state * (iloop + 1)); i++, j++)
                    y[i] = h_newstate[j];
                reset_state = false;
            }
            write_from(y, CFG::n_sequence_out * CFG::n_state);
        }
    }
    return 0;
}

// hls4ml with pass_initial_states: nnet::lstm_stack<input_t, h_t, c_t, result_t, config>
// (compiles only when all four types are the same)
template <class data_T, class res_T, class CFG> int lstm_hls4ml_init(long groups, long seqs) {
    static params<CFG, 4> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_state], h[CFG::n_state], c[CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            read_into(h, CFG::n_state);
            read_into(c, CFG::n_state);
            nnet::lstm_stack<data_T, res_T, res_T, res_T, CFG>(x, h, c, y, p.w, p.r, p.b, p.br);
            write_from(y, CFG::n_sequence_out * CFG::n_state);
            write_from(h, CFG::n_state);
            write_from(c, CFG::n_state);
        }
    }
    return 0;
}

// hls4ml's generated call: nnet::gru_stack<input_t, result_t, config> (zero initial state)
template <class data_T, class res_T, class CFG> int gru_hls4ml(long groups, long seqs) {
    static params<CFG, 3> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            nnet::gru_stack<data_T, res_T, CFG>(x, y, p.w, p.r, p.b, p.br);
            write_from(y, CFG::n_sequence_out * CFG::n_state);
        }
    }
    return 0;
}

// hls4ml with pass_initial_states: nnet::gru_stack<input_t, h_t, result_t, config> (h_t = result_t)
template <class data_T, class res_T, class CFG> int gru_hls4ml_init(long groups, long seqs) {
    static params<CFG, 3> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_state], h[CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            read_into(h, CFG::n_state);
            nnet::gru_stack<data_T, res_T, res_T, CFG>(x, h, y, p.w, p.r, p.b, p.br);
            write_from(y, CFG::n_sequence_out * CFG::n_state);
            write_from(h, CFG::n_state);
        }
    }
    return 0;
}

// hls4ml's Bidirectional: nnet::bidirectional_stack<input_t, result_t, config> over
// lstm_class_static / gru_class_static (forward and backward weights per group);
// res [n_sequence][forward H, backward H]
template <class data_T, class res_T, class CFG, unsigned G> int bidirectional_hls4ml(long groups, long seqs) {
    typedef typename CFG::FORWARD_CONFIG FC;
    typedef typename CFG::BACKWARD_CONFIG BC;
    static params<FC, G> pf;
    static params<BC, G> pb;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static res_T y[CFG::n_sequence_out * CFG::n_out];
    for (long g = 0; g < groups; g++) {
        pf.read();
        pb.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            nnet::bidirectional_stack<data_T, res_T, CFG>(x, y, pf.w, pf.r, pf.b, pf.br, pb.w, pb.r, pb.b, pb.br);
            write_from(y, CFG::n_sequence_out * CFG::n_out);
        }
    }
    return 0;
}

// conveyor's LSTM (conveyor_rnn.h): state h_T, cell s_T, initial states, Y/Y_h/Y_c as res_T
template <class data_T, class h_T, class s_T, class res_T, class CFG> int lstm_conveyor(long groups, long seqs) {
    static params<CFG, 4> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static h_T h[CFG::n_state];
    static s_T c[CFG::n_state];
    static res_T y[CFG::n_sequence * CFG::n_state], hc[2 * CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            read_into(h, CFG::n_state);
            read_into(c, CFG::n_state);
            for (unsigned t = 0; t < CFG::n_sequence; t++) {
                conveyor::lstm_step<data_T, h_T, s_T, CFG>(x + t * CFG::n_in, h, c, p.w, p.r, p.b, p.br);
                for (unsigned i = 0; i < CFG::n_state; i++)
                    y[t * CFG::n_state + i] = h[i];
            }
            for (unsigned i = 0; i < CFG::n_state; i++) {
                hc[i] = h[i];
                hc[CFG::n_state + i] = c[i];
            }
            write_from(y, CFG::n_sequence * CFG::n_state);
            write_from(hc, 2 * CFG::n_state);
        }
    }
    return 0;
}

// conveyor's GRU (conveyor_rnn.h): state h_T, initial state, Y/Y_h as res_T
template <class data_T, class h_T, class res_T, class CFG, bool reset_after> int gru_conveyor(long groups, long seqs) {
    static params<CFG, 3> p;
    static data_T x[CFG::n_sequence * CFG::n_in];
    static h_T h[CFG::n_state];
    static res_T y[CFG::n_sequence * CFG::n_state], hf[CFG::n_state];
    for (long g = 0; g < groups; g++) {
        p.read();
        for (long s = 0; s < seqs; s++) {
            read_into(x, CFG::n_sequence * CFG::n_in);
            read_into(h, CFG::n_state);
            for (unsigned t = 0; t < CFG::n_sequence; t++) {
                conveyor::gru_step<data_T, h_T, CFG, reset_after>(x + t * CFG::n_in, h, p.w, p.r, p.b, p.br);
                for (unsigned i = 0; i < CFG::n_state; i++)
                    y[t * CFG::n_state + i] = h[i];
            }
            for (unsigned i = 0; i < CFG::n_state; i++)
                hf[i] = h[i];
            write_from(y, CFG::n_sequence * CFG::n_state);
            write_from(hf, CFG::n_state);
        }
    }
    return 0;
}

}  // namespace oracle

#endif
