// conveyor's recurrent kernels in HLS C++, where they go beyond hls4ml's nnet_recurrent.h:
//  - the hidden state in its own type h_T and the LSTM cell state in s_T (hls4ml keeps both in
//    the layer's res_T), initial states passed in, outputs res[t] = (res_T) h after each step;
//  - GRU with the reset gate applied before the recurrent product (ONNX linear_before_reset=0,
//    Keras reset_after=False), which hls4ml does not implement.
// Every line that hls4ml has is written as in hls4ml 1.3.0's lstm_static / gru_static (Vivado,
// io_parallel); conveyor's emulator (conveyor/ops/rnn.py, docs/numerics.md "Kernels" item 7)
// reproduces this bit for bit. Weights as hls4ml stores them: param[ii * n_out + jj],
// Keras gate order (LSTM i f c o, GRU z r h).
#ifndef CONVEYOR_RNN_H_
#define CONVEYOR_RNN_H_

#include "nnet_recurrent.h"

namespace conveyor {

template <class data_T, class h_T, class s_T, typename CONFIG_T>
void lstm_step(data_T data[CONFIG_T::n_in], h_T h_state[CONFIG_T::n_state], s_T s_state[CONFIG_T::n_state],
               typename CONFIG_T::weight_t param[CONFIG_T::n_state * 4 * CONFIG_T::n_in],
               typename CONFIG_T::recurrent_weight_t param_r[CONFIG_T::n_state * 4 * CONFIG_T::n_state],
               typename CONFIG_T::bias_t param_b[CONFIG_T::n_state * 4],
               typename CONFIG_T::recurrent_bias_t param_br[CONFIG_T::n_state * 4]) {
    const unsigned H = CONFIG_T::n_state;
    typename CONFIG_T::accum_t tmpres[H * 4], tmpres_state[H * 4], tmpres_ifo[H * 3], tmpres_c[H];
    typename CONFIG_T::accum_t inputacc_ifo[H * 3], inputacc_c[H], s_actstate[H];

    nnet::dense<data_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config1>(data, tmpres, param, param_b);
    nnet::dense<h_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config2>(h_state, tmpres_state, param_r,
                                                                                  param_br);
    for (int iacc = 0; iacc < (int)(3 * H); iacc++) {
        int index = iacc;
        if (iacc > (int)(2 * H) - 1)
            index = iacc + H;
        inputacc_ifo[iacc] = tmpres[index] + tmpres_state[index];
    }
    for (int iacc = 0; iacc < (int)H; iacc++) {
        int index = iacc + H * 2;
        inputacc_c[iacc] = tmpres[index] + tmpres_state[index];
    }
    CONFIG_T::template activation_recr<typename CONFIG_T::accum_t, typename CONFIG_T::accum_t,
                                       typename CONFIG_T::ACT_CONFIG_LSTM>::activation(inputacc_ifo, tmpres_ifo);
    CONFIG_T::template activation<typename CONFIG_T::accum_t, typename CONFIG_T::accum_t,
                                  typename CONFIG_T::ACT_CONFIG_T>::activation(inputacc_c, tmpres_c);
    for (int iacc = 0; iacc < (int)H; iacc++)
        s_state[iacc] = tmpres_c[iacc] * tmpres_ifo[iacc] + s_state[iacc] * tmpres_ifo[iacc + H];
    CONFIG_T::template activation<s_T, typename CONFIG_T::accum_t, typename CONFIG_T::ACT_CONFIG_T>::activation(
        s_state, s_actstate);
    for (int iacc = 0; iacc < (int)H; iacc++)
        h_state[iacc] = tmpres_ifo[iacc + 2 * H] * s_actstate[iacc];
}

// reset_after: hls4ml's gru_static (ONNX linear_before_reset=1); otherwise
//   rh = (h_T)(r * h);  tmpres_state_h = dense(rh, R_h, Rb_h)  (mult_config_zr: 2H outputs,
//   mult_config_h: H outputs, over the same weights split by column).
template <class data_T, class h_T, typename CONFIG_T, bool reset_after>
void gru_step(data_T data[CONFIG_T::n_in], h_T h_state[CONFIG_T::n_state],
              typename CONFIG_T::weight_t param[CONFIG_T::n_state * 3 * CONFIG_T::n_in],
              typename CONFIG_T::recurrent_weight_t param_zr[CONFIG_T::n_state * 3 * CONFIG_T::n_state],
              typename CONFIG_T::bias_t param_b[CONFIG_T::n_state * 3],
              typename CONFIG_T::recurrent_bias_t param_br[CONFIG_T::n_state * 3]) {
    const unsigned H = CONFIG_T::n_state;
    typename CONFIG_T::accum_t tmpres[H * 3], tmpres_state_zr[H * 3], tmpres_state_h[H];
    typename CONFIG_T::accum_t tmpres_zr[H * 2], tmpres_h[H], inputacc_zr[H * 2], inputacc_h[H];

    nnet::dense<data_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config1>(data, tmpres, param, param_b);
    if (reset_after) {
        nnet::dense<h_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config2>(h_state, tmpres_state_zr,
                                                                                      param_zr, param_br);
    } else {
        static typename CONFIG_T::recurrent_weight_t r_zr[H * 2 * H];
        static typename CONFIG_T::recurrent_bias_t br_zr[H * 2];
        for (unsigned ii = 0; ii < H; ii++)
            for (unsigned jj = 0; jj < 2 * H; jj++)
                r_zr[ii * 2 * H + jj] = param_zr[ii * 3 * H + jj];
        for (unsigned jj = 0; jj < 2 * H; jj++)
            br_zr[jj] = param_br[jj];
        nnet::dense<h_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config_zr>(h_state, tmpres_state_zr,
                                                                                        r_zr, br_zr);
    }
    for (int iacc = 0; iacc < (int)(2 * H); iacc++)
        inputacc_zr[iacc] = tmpres[iacc] + tmpres_state_zr[iacc];
    CONFIG_T::template activation_recr<typename CONFIG_T::accum_t, typename CONFIG_T::accum_t,
                                       typename CONFIG_T::ACT_CONFIG_GRU>::activation(inputacc_zr, tmpres_zr);
    if (reset_after) {
        for (int iacc = 0; iacc < (int)H; iacc++)
            tmpres_state_h[iacc] = tmpres_zr[iacc + H] * tmpres_state_zr[iacc + 2 * H];
    } else {
        static typename CONFIG_T::recurrent_weight_t r_h[H * H];
        static typename CONFIG_T::recurrent_bias_t br_h[H];
        h_T rh[H];
        for (unsigned ii = 0; ii < H; ii++)
            for (unsigned jj = 0; jj < H; jj++)
                r_h[ii * H + jj] = param_zr[ii * 3 * H + 2 * H + jj];
        for (unsigned jj = 0; jj < H; jj++)
            br_h[jj] = param_br[2 * H + jj];
        for (unsigned iacc = 0; iacc < H; iacc++)
            rh[iacc] = tmpres_zr[iacc + H] * h_state[iacc];
        nnet::dense<h_T, typename CONFIG_T::accum_t, typename CONFIG_T::mult_config_h>(rh, tmpres_state_h, r_h, br_h);
    }
    for (int iacc = 0; iacc < (int)H; iacc++)
        inputacc_h[iacc] = tmpres[iacc + 2 * H] + tmpres_state_h[iacc];
    CONFIG_T::template activation<typename CONFIG_T::accum_t, typename CONFIG_T::accum_t,
                                  typename CONFIG_T::ACT_CONFIG_T>::activation(inputacc_h, tmpres_h);
    for (int iacc = 0; iacc < (int)H; iacc++)
        h_state[iacc] = (h_T)(tmpres_h[iacc] * (1 - tmpres_zr[iacc]) + h_state[iacc] * tmpres_zr[iacc]);
}


// ---- a whole sequence of one item: the ONNX LSTM / GRU node (conveyor/codegen/recurrent.py) ----
// One direction `dir` of n_dirs: steps t = 0 .. n_valid-1 read x[reverse ? n_valid-1-t : t] (the
// emulator's order: conveyor/ops/rnn.py), h (and c) start from h0 (c0). `which` picks the output
// written: 0 Y [n_sequence][n_dirs][n_state] (zero past n_valid, ONNX sequence_lens), 1 Y_h, 2 Y_c
// ([n_dirs][n_state]; zero for n_valid = 0), each value assigned to res_T. With batch 1, ONNX
// layouts 0 and 1 lay these out alike.
template <class data_T, class h_T, class s_T, class res_T, typename CONFIG_T>
void lstm_sequence(data_T x[CONFIG_T::n_sequence * CONFIG_T::n_in], res_T out[CONFIG_T::n_res],
                   const h_T h0[CONFIG_T::n_state], const s_T c0[CONFIG_T::n_state],
                   typename CONFIG_T::weight_t param[CONFIG_T::n_state * 4 * CONFIG_T::n_in],
                   typename CONFIG_T::recurrent_weight_t param_r[CONFIG_T::n_state * 4 * CONFIG_T::n_state],
                   typename CONFIG_T::bias_t param_b[CONFIG_T::n_state * 4],
                   typename CONFIG_T::recurrent_bias_t param_br[CONFIG_T::n_state * 4]) {
    const unsigned H = CONFIG_T::n_state, N = CONFIG_T::n_in, D = CONFIG_T::n_dirs, V = CONFIG_T::n_valid;
    h_T h[H];
    s_T c[H];
    data_T xt[N];
    #pragma HLS ARRAY_PARTITION variable=h complete
    #pragma HLS ARRAY_PARTITION variable=c complete
    #pragma HLS ARRAY_PARTITION variable=xt complete
    for (unsigned i = 0; i < H; i++) {
        h[i] = h0[i];
        c[i] = c0[i];
    }
    for (unsigned t = 0; t < CONFIG_T::n_sequence; t++) {
        if (t < V) {
            const unsigned tt = CONFIG_T::reverse ? V - 1 - t : t;
            for (unsigned j = 0; j < N; j++)
                xt[j] = x[tt * N + j];
            lstm_step<data_T, h_T, s_T, CONFIG_T>(xt, h, c, param, param_r, param_b, param_br);
            if (CONFIG_T::which == 0)
                for (unsigned i = 0; i < H; i++)
                    out[(tt * D + CONFIG_T::dir) * H + i] = h[i];
        } else if (CONFIG_T::which == 0) {
            for (unsigned i = 0; i < H; i++)
                out[(t * D + CONFIG_T::dir) * H + i] = 0;
        }
    }
    for (unsigned i = 0; i < H; i++) {
        if (CONFIG_T::which == 1)
            out[CONFIG_T::dir * H + i] = h[i];
        if (CONFIG_T::which == 2)
            out[CONFIG_T::dir * H + i] = c[i];
        if (CONFIG_T::which != 0 && V == 0)
            out[CONFIG_T::dir * H + i] = 0;
    }
}

template <class data_T, class h_T, class res_T, typename CONFIG_T, bool reset_after>
void gru_sequence(data_T x[CONFIG_T::n_sequence * CONFIG_T::n_in], res_T out[CONFIG_T::n_res],
                  const h_T h0[CONFIG_T::n_state],
                  typename CONFIG_T::weight_t param[CONFIG_T::n_state * 3 * CONFIG_T::n_in],
                  typename CONFIG_T::recurrent_weight_t param_zr[CONFIG_T::n_state * 3 * CONFIG_T::n_state],
                  typename CONFIG_T::bias_t param_b[CONFIG_T::n_state * 3],
                  typename CONFIG_T::recurrent_bias_t param_br[CONFIG_T::n_state * 3]) {
    const unsigned H = CONFIG_T::n_state, N = CONFIG_T::n_in, D = CONFIG_T::n_dirs, V = CONFIG_T::n_valid;
    h_T h[H];
    data_T xt[N];
    #pragma HLS ARRAY_PARTITION variable=h complete
    #pragma HLS ARRAY_PARTITION variable=xt complete
    for (unsigned i = 0; i < H; i++)
        h[i] = h0[i];
    for (unsigned t = 0; t < CONFIG_T::n_sequence; t++) {
        if (t < V) {
            const unsigned tt = CONFIG_T::reverse ? V - 1 - t : t;
            for (unsigned j = 0; j < N; j++)
                xt[j] = x[tt * N + j];
            gru_step<data_T, h_T, CONFIG_T, reset_after>(xt, h, param, param_zr, param_b, param_br);
            if (CONFIG_T::which == 0)
                for (unsigned i = 0; i < H; i++)
                    out[(tt * D + CONFIG_T::dir) * H + i] = h[i];
        } else if (CONFIG_T::which == 0) {
            for (unsigned i = 0; i < H; i++)
                out[(t * D + CONFIG_T::dir) * H + i] = 0;
        }
    }
    if (CONFIG_T::which == 1)
        for (unsigned i = 0; i < H; i++)
            out[CONFIG_T::dir * H + i] = V == 0 ? res_T(0) : res_T(h[i]);
}

}  // namespace conveyor

#endif
