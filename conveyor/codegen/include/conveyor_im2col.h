// conveyor: hls4ml-style per-layer helpers for channels-last convolutions.
#ifndef CONVEYOR_IM2COL_H_
#define CONVEYOR_IM2COL_H_

#include "nnet_conv2d.h"

namespace conveyor {

// The im2col buffer filler that hls4ml generates per layer (fill_buffer_<index>, from
// FPGABackend._compute_conv2d_im2col), written as loops: pixel by pixel, the window's
// kernel rows, kernel columns and channels, channel fastest; taps in the padding are 0.
template <class data_T, typename CONFIG_T> class fill_im2col : public nnet::FillConv2DBuffer<data_T, CONFIG_T> {
  public:
    static void fill_buffer(data_T data[CONFIG_T::in_height * CONFIG_T::in_width * CONFIG_T::n_chan],
                            data_T buffer[CONFIG_T::n_pixels][CONFIG_T::filt_height * CONFIG_T::filt_width * CONFIG_T::n_chan],
                            const unsigned partition) {
        for (unsigned p = 0; p < CONFIG_T::n_pixels; p++) {
            const int pixel = partition * CONFIG_T::n_pixels + p;
            const int oh = pixel / CONFIG_T::out_width, ow = pixel % CONFIG_T::out_width;
            unsigned j = 0;
            for (int kh = 0; kh < (int)CONFIG_T::filt_height; kh++) {
                const int row = -(int)CONFIG_T::pad_top + kh * (int)CONFIG_T::dilation_height + oh * (int)CONFIG_T::stride_height;
                for (int kw = 0; kw < (int)CONFIG_T::filt_width; kw++) {
                    const int col = -(int)CONFIG_T::pad_left + kw * (int)CONFIG_T::dilation_width + ow * (int)CONFIG_T::stride_width;
                    const bool inside = row >= 0 && row < (int)CONFIG_T::in_height && col >= 0 && col < (int)CONFIG_T::in_width;
                    for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
                        if (inside)
                            buffer[p][j] = data[(row * CONFIG_T::in_width + col) * CONFIG_T::n_chan + c];
                        else
                            buffer[p][j] = 0;
                        j++;
                    }
                }
            }
        }
    }
};

// ONNX's channels-first order <-> hls4ml's channels-last order (wiring, no arithmetic).
template <class T, int C, int H, int W> void chw_to_hwc(const T in[C * H * W], T out[C * H * W]) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) out[(h * W + w) * C + c] = in[(c * H + h) * W + w];
}

template <class T, int C, int H, int W> void hwc_to_chw(const T in[C * H * W], T out[C * H * W]) {
    for (int c = 0; c < C; c++)
        for (int h = 0; h < H; h++)
            for (int w = 0; w < W; w++) out[(c * H + h) * W + w] = in[(h * W + w) * C + c];
}

} // namespace conveyor

#endif
