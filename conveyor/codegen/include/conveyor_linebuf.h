// conveyor: io_stream firmware — layers connected by FIFOs of pixels (all channels of one
// H, W position together, positions in H, W raster order), convolutions and pools over a line
// buffer of k-1 padded rows + k pixels, zero padding inserted on the fly (codegen/stream.py).
//
// The arithmetic is the io_parallel kernels' (the emulator's, bit for bit): a convolution's
// window is the im2col row (kernel rows, kernel columns, channels; channel fastest) through
// nnet::dense_latency with the layer's mult_config, as nnet::conv_2d_latency_cl does per pixel;
// pools and averages are conveyor_layers.h's.
//
// With -DCONVEYOR_BOUNDED_FIFOS (and -pthread) the C simulation runs every DATAFLOW process in
// its own thread over FIFOs of exactly their stated depth and stops with "deadlock" (exit 4)
// when every process waits: the check that the stated depths (skip connections) suffice.
#ifndef CONVEYOR_LINEBUF_H_
#define CONVEYOR_LINEBUF_H_

#include "ap_fixed.h"
#include "ap_int.h"
#include "hls_stream.h"
#include "nnet_dense_latency.h"
#include "conveyor_layers.h"

#ifdef CONVEYOR_BOUNDED_FIFOS
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <pthread.h>
#include <vector>
#endif

namespace conveyor {

// One FIFO element: one pixel's N channels (a 2-D value [1, N]: the whole vector, one element).
template <class T, unsigned N> struct px {
    T data[N];
};

#ifndef CONVEYOR_BOUNDED_FIFOS
template <class T> using fifo = hls::stream<T>;
#define CONVEYOR_DEPTH(f, depth)  // synthesis: #pragma HLS STREAM; C simulation: unbounded
#define CONVEYOR_PROCESS(...) __VA_ARGS__
#define CONVEYOR_JOIN()
#else
// Every FIFO and process of the top under one lock; a process about to wait checks whether any
// other can still move (each waiter's condition evaluated under the lock): if none, deadlock.
struct dataflow {
    std::mutex m;
    std::condition_variable cv;
    int active = 0;
    std::vector<const std::function<bool()> *> waiting;
    std::vector<std::string> waits;   // what each waiter waits for (the deadlock report)
    std::vector<pthread_t> threads;
    static dataflow &get() {
        static dataflow d;
        return d;
    }
    void check(const char *what, const std::string &name, unsigned depth) {  // holding m
        if (active == 0 || (int)waiting.size() < active) return;  // all done, or one can still run
        for (auto *w : waiting)
            if ((*w)()) return;
        std::fprintf(stderr, "deadlock: every process waits (last: fifo %s %s, depth %u); waiting:", name.c_str(), what, depth);
        for (size_t i = 0; i < waits.size(); i++) std::fprintf(stderr, " %s", waits[i].c_str());
        std::fprintf(stderr, "\n");
        std::fflush(stderr);
        std::_Exit(4);
    }
};

template <class T> class fifo {
    std::string name_;
    std::deque<T> q_;
    unsigned depth_ = 2;

    void wait(std::unique_lock<std::mutex> &l, const std::function<bool()> &ready, const char *what) {
        dataflow &d = dataflow::get();
        while (!ready()) {
            d.waiting.push_back(&ready);
            d.waits.push_back(name_ + " " + what);
            d.check(what, name_, depth_);
            d.cv.wait(l);
            for (size_t i = 0; i < d.waiting.size(); i++)
                if (d.waiting[i] == &ready) {
                    d.waiting.erase(d.waiting.begin() + i);
                    d.waits.erase(d.waits.begin() + i);
                    break;
                }
        }
    }

  public:
    explicit fifo(const char *name = "fifo") : name_(name) {}
    void set_depth(unsigned depth) { depth_ = depth; }
    void write(const T &v) {
        dataflow &d = dataflow::get();
        std::unique_lock<std::mutex> l(d.m);
        wait(l, [this] { return q_.size() < depth_; }, "full");
        q_.push_back(v);
        d.cv.notify_all();
    }
    T read() {
        dataflow &d = dataflow::get();
        std::unique_lock<std::mutex> l(d.m);
        wait(l, [this] { return !q_.empty(); }, "empty");
        T v = q_.front();
        q_.pop_front();
        d.cv.notify_all();
        return v;
    }
    bool empty() {
        std::unique_lock<std::mutex> l(dataflow::get().m);
        return q_.empty();
    }
};
#define CONVEYOR_DEPTH(f, depth) f.set_depth(depth)

// A process in its own thread; 256 MB of stack (a layer's product arrays live there, as in the top).
template <class F> void *run_process(void *arg) {
    F *f = static_cast<F *>(arg);
    (*f)();
    delete f;
    dataflow &d = dataflow::get();
    std::unique_lock<std::mutex> l(d.m);
    d.active--;
    d.check("(a process ended)", "-", 0);
    d.cv.notify_all();
    return 0;
}

// The processes are registered in call order and started together at CONVEYOR_JOIN (a process
// started alone would look deadlocked while its reader is not yet running).
inline std::vector<std::pair<void *(*)(void *), void *> > &pending() {
    static std::vector<std::pair<void *(*)(void *), void *> > p;
    return p;
}

template <class F> void spawn(F f) { pending().push_back(std::make_pair(&run_process<F>, (void *)new F(f))); }

inline void join_all() {
    dataflow &d = dataflow::get();
    {
        std::unique_lock<std::mutex> l(d.m);
        d.active = (int)pending().size();
    }
    for (size_t i = 0; i < pending().size(); i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, (size_t)256 << 20);
        pthread_t t;
        if (pthread_create(&t, &attr, pending()[i].first, pending()[i].second)) {
            std::fprintf(stderr, "cannot start a process thread\n");
            std::_Exit(5);
        }
        pthread_attr_destroy(&attr);
        d.threads.push_back(t);
    }
    pending().clear();
    for (size_t i = 0; i < d.threads.size(); i++) pthread_join(d.threads[i], 0);
    d.threads.clear();
}
#define CONVEYOR_PROCESS(...) conveyor::spawn([&]() { __VA_ARGS__; })
#define CONVEYOR_JOIN() conveyor::join_all()
#endif

// A value read by K layers: each pixel written to every reader's FIFO, in order.
template <class P, int N> void clone_stream(fifo<P> &in, fifo<P> &a, fifo<P> &b) {
CloneTwo:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        P v = in.read();
        a.write(v);
        b.write(v);
    }
}
template <class P, int N> void clone_stream(fifo<P> &in, fifo<P> &a, fifo<P> &b, fifo<P> &c) {
CloneThree:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        P v = in.read();
        a.write(v);
        b.write(v);
        c.write(v);
    }
}
template <class P, int N> void clone_stream(fifo<P> &in, fifo<P> &a, fifo<P> &b, fifo<P> &c, fifo<P> &d) {
CloneFour:
    for (int i = 0; i < N; i++) {
#pragma HLS PIPELINE II = 1
        P v = in.read();
        a.write(v);
        b.write(v);
        c.write(v);
        d.write(v);
    }
}

// The board's edge: a channels-first array (the link's ONNX order) as pixels, and back.
template <class T, int C, int H, int W> void chw_to_pixels(const T in[C * H * W], fifo<px<T, C> > &out) {
ToPixels:
    for (int p = 0; p < H * W; p++) {
#pragma HLS PIPELINE II = 1
        px<T, C> v;
        for (int c = 0; c < C; c++) v.data[c] = in[c * H * W + p];
        out.write(v);
    }
}
template <class T, int C, int H, int W> void pixels_to_chw(fifo<px<T, C> > &in, T out[C * H * W]) {
FromPixels:
    for (int p = 0; p < H * W; p++) {
#pragma HLS PIPELINE II = 1
        px<T, C> v = in.read();
        for (int c = 0; c < C; c++) out[c * H * W + p] = v.data[c];
    }
}
// channels last [H][W][C] <-> pixels (a layer that takes whole arrays: weights from DDR)
template <class T, int C, int P> void hwc_to_pixels(const T in[P * C], fifo<px<T, C> > &out) {
    for (int p = 0; p < P; p++) {
#pragma HLS PIPELINE II = 1
        px<T, C> v;
        for (int c = 0; c < C; c++) v.data[c] = in[p * C + c];
        out.write(v);
    }
}
template <class T, int C, int P> void pixels_to_hwc(fifo<px<T, C> > &in, T out[P * C]) {
    for (int p = 0; p < P; p++) {
#pragma HLS PIPELINE II = 1
        px<T, C> v = in.read();
        for (int c = 0; c < C; c++) out[p * C + c] = v.data[c];
    }
}
// Flatten of a 4-D value: its pixels gathered, one element of C*H*W values in ONNX's C, H, W order
// (the order a Dense after it sums in: the emulator's, hls4ml io_stream's)
template <class T, int C, int H, int W> void flatten_pixels(fifo<px<T, C> > &in, fifo<px<T, C * H * W> > &out) {
    px<T, C * H * W> v;
Flatten:
    for (int p = 0; p < H * W; p++) {
#pragma HLS PIPELINE II = 1
        px<T, C> a = in.read();
        for (int c = 0; c < C; c++) v.data[c * H * W + p] = a.data[c];
    }
    out.write(v);
}

// The window geometry WIN_T (a conv config, or a pool's <cfg>_win): in_height, in_width,
// n_chan, filt_height, filt_width, stride_*, pad_top/bottom/left/right, dilation_*, out_*.
// Positions run over the padded image in raster order; the window of output (oh, ow) is due
// when its last tap (bottom right) arrives, at padded (oh*SH + EKH-1, ow*SW + EKW-1).
template <typename WIN_T> struct window_geometry {
    static const int PH = WIN_T::pad_top + WIN_T::in_height + WIN_T::pad_bottom;
    static const int PW = WIN_T::pad_left + WIN_T::in_width + WIN_T::pad_right;
    static const int EKH = (WIN_T::filt_height - 1) * WIN_T::dilation_height + 1;
    static const int EKW = (WIN_T::filt_width - 1) * WIN_T::dilation_width + 1;
    static bool inside(int r, int c) {
        return r >= (int)WIN_T::pad_top && r < (int)(WIN_T::pad_top + WIN_T::in_height) && c >= (int)WIN_T::pad_left &&
               c < (int)(WIN_T::pad_left + WIN_T::in_width);
    }
    static bool due(int r, int c) {
        const int r0 = r - (EKH - 1), c0 = c - (EKW - 1);
        return r0 >= 0 && c0 >= 0 && r0 % WIN_T::stride_height == 0 && c0 % WIN_T::stride_width == 0 &&
               r0 / WIN_T::stride_height < (int)WIN_T::out_height && c0 / WIN_T::stride_width < (int)WIN_T::out_width;
    }
};

// k-1 padded rows + k pixels: (EKH - 1) * PW + EKW positions, the oldest overwritten by the newest.
template <class T, typename WIN_T> class line_buffer {
    typedef window_geometry<WIN_T> G;
    static const int L = (G::EKH - 1) * G::PW + G::EKW;
    T buf_[L][WIN_T::n_chan];
    int head_;

  public:
    line_buffer() : head_(0) {}
    // the next padded position: an input pixel read from `in`, or zeros in the padding
    void push(fifo<px<T, WIN_T::n_chan> > &in, bool inside) {
        if (inside) {
            px<T, WIN_T::n_chan> v = in.read();
            for (int c = 0; c < (int)WIN_T::n_chan; c++) buf_[head_][c] = v.data[c];
        } else {
            for (int c = 0; c < (int)WIN_T::n_chan; c++) buf_[head_][c] = T(0);
        }
        head_ = head_ + 1 == L ? 0 : head_ + 1;
    }
    // tap (kh, kw) of the window whose last tap was pushed last
    const T *tap(int kh, int kw) const {
        const int lag = (G::EKH - 1 - kh * (int)WIN_T::dilation_height) * G::PW + (G::EKW - 1 - kw * (int)WIN_T::dilation_width);
        int i = head_ - 1 - lag;
        if (i < 0) i += L;
        return buf_[i];
    }
    // the window as the im2col row: kernel rows, kernel columns, channels (channel fastest)
    void window(T win[WIN_T::filt_height * WIN_T::filt_width * WIN_T::n_chan]) const {
        int j = 0;
        for (int kh = 0; kh < (int)WIN_T::filt_height; kh++)
            for (int kw = 0; kw < (int)WIN_T::filt_width; kw++) {
                const T *t = tap(kh, kw);
                for (int c = 0; c < (int)WIN_T::n_chan; c++) win[j++] = t[c];
            }
    }
};

// Conv (group 1): per output pixel the window through nnet::dense_latency (mult_config), the
// products, accum_t casts and order of nnet::conv_2d_latency_cl; W [kh][kw][c][f].
template <class data_T, class res_T, typename CONFIG_T>
void conv_2d_stream(fifo<px<data_T, CONFIG_T::n_chan> > &in, fifo<px<res_T, CONFIG_T::n_filt> > &out,
                    typename CONFIG_T::weight_t weights[CONFIG_T::filt_height * CONFIG_T::filt_width * CONFIG_T::n_chan *
                                                        CONFIG_T::n_filt],
                    typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    typedef window_geometry<CONFIG_T> G;
    line_buffer<data_T, CONFIG_T> lb;
ConvRows:
    for (int r = 0; r < G::PH; r++) {
    ConvCols:
        for (int c = 0; c < G::PW; c++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
            lb.push(in, G::inside(r, c));
            if (G::due(r, c)) {
                data_T win[CONFIG_T::mult_config::n_in];
                lb.window(win);
                px<res_T, CONFIG_T::n_filt> o;
                nnet::dense_latency<data_T, res_T, typename CONFIG_T::mult_config>(win, o.data, weights, biases);
                out.write(o);
            }
        }
    }
}

// Grouped / depthwise Conv: per output pixel and group, the group's taps through dense_latency
// with its weights [g][kh][kw][c][m] (conveyor::conv_2d_grouped_cl's arithmetic).
template <class data_T, class res_T, typename CONFIG_T>
void conv_2d_grouped_stream(fifo<px<data_T, CONFIG_T::n_chan> > &in, fifo<px<res_T, CONFIG_T::n_filt> > &out,
                            typename CONFIG_T::weight_t weights[CONFIG_T::n_group * CONFIG_T::mult_config::n_in *
                                                                CONFIG_T::mult_config::n_out],
                            typename CONFIG_T::bias_t biases[CONFIG_T::n_filt]) {
    typedef window_geometry<CONFIG_T> G;
    const int CG = CONFIG_T::n_chan / CONFIG_T::n_group, MG = CONFIG_T::n_filt / CONFIG_T::n_group;
    const int K = CONFIG_T::mult_config::n_in;
    line_buffer<data_T, CONFIG_T> lb;
GroupedRows:
    for (int r = 0; r < G::PH; r++) {
    GroupedCols:
        for (int c = 0; c < G::PW; c++) {
#pragma HLS PIPELINE II = CONFIG_T::reuse_factor
            lb.push(in, G::inside(r, c));
            if (!G::due(r, c)) continue;
            px<res_T, CONFIG_T::n_filt> o;
            for (int g = 0; g < (int)CONFIG_T::n_group; g++) {
                data_T buf[CONFIG_T::mult_config::n_in];
                typename CONFIG_T::weight_t w[CONFIG_T::mult_config::n_in * CONFIG_T::mult_config::n_out];
                typename CONFIG_T::bias_t b[CONFIG_T::mult_config::n_out];
                res_T y[CONFIG_T::mult_config::n_out];
                int j = 0;
                for (int kh = 0; kh < (int)CONFIG_T::filt_height; kh++)
                    for (int kw = 0; kw < (int)CONFIG_T::filt_width; kw++) {
                        const data_T *t = lb.tap(kh, kw);
                        for (int k = 0; k < CG; k++) buf[j++] = t[g * CG + k];
                    }
                for (int i = 0; i < K * MG; i++) w[i] = weights[g * K * MG + i];
                for (int m = 0; m < MG; m++) b[m] = biases[g * MG + m];
                nnet::dense_latency<data_T, res_T, typename CONFIG_T::mult_config>(buf, y, w, b);
                for (int m = 0; m < MG; m++) o.data[g * MG + m] = y[m];
            }
            out.write(o);
        }
    }
}

// MaxPool: the largest tap inside the input (padding taps take no part), cast to res_T.
template <class data_T, class res_T, typename WIN_T>
void maxpool_2d_stream(fifo<px<data_T, WIN_T::n_chan> > &in, fifo<px<res_T, WIN_T::n_chan> > &out) {
    typedef window_geometry<WIN_T> G;
    line_buffer<data_T, WIN_T> lb;
MaxRows:
    for (int r = 0; r < G::PH; r++) {
    MaxCols:
        for (int c = 0; c < G::PW; c++) {
#pragma HLS PIPELINE II = 1
            lb.push(in, G::inside(r, c));
            if (!G::due(r, c)) continue;
            px<res_T, WIN_T::n_chan> o;
            for (int ch = 0; ch < (int)WIN_T::n_chan; ch++) {
                data_T m = 0;
                bool any = false;
                for (int kh = 0; kh < (int)WIN_T::filt_height; kh++)
                    for (int kw = 0; kw < (int)WIN_T::filt_width; kw++) {
                        const int rr = r - (G::EKH - 1) + kh, cc = c - (G::EKW - 1) + kw;
                        if (!G::inside(rr, cc)) continue;
                        const data_T v = lb.tap(kh, kw)[ch];
                        if (!any || v > m) m = v;
                        any = true;
                    }
                o.data[ch] = (res_T)m;
            }
            out.write(o);
        }
    }
}

// The exact sum of channel ch over the window's taps inside the input (zero padding) at the
// padded position (r, c) where the window is due: AveragePool's and SumPool's sum.
template <class acc_T, class data_T, typename WIN_T>
acc_T window_sum(const line_buffer<data_T, WIN_T> &lb, int r, int c, int ch) {
    typedef window_geometry<WIN_T> G;
    acc_T sum = 0;
    for (int kh = 0; kh < (int)WIN_T::filt_height; kh++)
        for (int kw = 0; kw < (int)WIN_T::filt_width; kw++)
            if (G::inside(r - (G::EKH - 1) + kh, c - (G::EKW - 1) + kw)) sum += lb.tap(kh, kw)[ch];
    return sum;
}

// AveragePool: the exact window sum over taps inside the input, divided by the taps counted
// (count_pad: those inside the padded extent) and rounded once (conveyor::div_exact).
template <class data_T, class res_T, typename CONFIG_T, typename WIN_T>
void avgpool_2d_stream(fifo<px<data_T, WIN_T::n_chan> > &in, fifo<px<res_T, WIN_T::n_chan> > &out) {
    typedef window_geometry<WIN_T> G;
    line_buffer<data_T, WIN_T> lb;
AvgRows:
    for (int r = 0; r < G::PH; r++) {
    AvgCols:
        for (int c = 0; c < G::PW; c++) {
#pragma HLS PIPELINE II = 1
            lb.push(in, G::inside(r, c));
            if (!G::due(r, c)) continue;
            px<res_T, WIN_T::n_chan> o;
            int count = 0;
            for (int kh = 0; kh < (int)WIN_T::filt_height; kh++)
                for (int kw = 0; kw < (int)WIN_T::filt_width; kw++)
                    if (CONFIG_T::count_pad || G::inside(r - (G::EKH - 1) + kh, c - (G::EKW - 1) + kw)) count++;
            for (int ch = 0; ch < (int)WIN_T::n_chan; ch++) {
                const typename CONFIG_T::accum_t sum = window_sum<typename CONFIG_T::accum_t>(lb, r, c, ch);
                o.data[ch] = count ? div_exact<typename CONFIG_T::accum_t, res_T, CONFIG_T::div_width>(sum, count) : res_T(0);
            }
            out.write(o);
        }
    }
}

// GlobalAveragePool / ReduceMean over H, W: per channel the exact sum of every pixel, one
// division rounded once; no line buffer (one accumulator per channel).
template <class data_T, class res_T, typename CONFIG_T>
void global_avgpool_stream(fifo<px<data_T, CONFIG_T::n_chan> > &in, fifo<px<res_T, CONFIG_T::n_chan> > &out) {
    typename CONFIG_T::accum_t sum[CONFIG_T::n_chan];
    for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++) sum[ch] = 0;
GapPixels:
    for (int p = 0; p < (int)(CONFIG_T::in_height * CONFIG_T::in_width); p++) {
#pragma HLS PIPELINE II = 1
        px<data_T, CONFIG_T::n_chan> v = in.read();
        for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++) sum[ch] += v.data[ch];
    }
    px<res_T, CONFIG_T::n_chan> o;
    for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++)
        o.data[ch] = div_exact<typename CONFIG_T::accum_t, res_T, CONFIG_T::div_width>(
            sum[ch], CONFIG_T::in_height * CONFIG_T::in_width);
    out.write(o);
}

// SumPool (an AveragePool's window sum in the integer domain): the exact sum of the taps inside
// the input (zero padding), cast once (conveyor::sumpool_2d_cl's arithmetic).
template <class data_T, class res_T, typename CONFIG_T, typename WIN_T>
void sumpool_2d_stream(fifo<px<data_T, WIN_T::n_chan> > &in, fifo<px<res_T, WIN_T::n_chan> > &out) {
    typedef window_geometry<WIN_T> G;
    line_buffer<data_T, WIN_T> lb;
SumRows:
    for (int r = 0; r < G::PH; r++) {
    SumCols:
        for (int c = 0; c < G::PW; c++) {
#pragma HLS PIPELINE II = 1
            lb.push(in, G::inside(r, c));
            if (!G::due(r, c)) continue;
            px<res_T, WIN_T::n_chan> o;
            for (int ch = 0; ch < (int)WIN_T::n_chan; ch++)
                o.data[ch] = (res_T)window_sum<typename CONFIG_T::accum_t>(lb, r, c, ch);
            out.write(o);
        }
    }
}

// ReduceSum over H, W: per channel the exact sum of every pixel, cast once.
template <class data_T, class res_T, typename CONFIG_T>
void global_sum_stream(fifo<px<data_T, CONFIG_T::n_chan> > &in, fifo<px<res_T, CONFIG_T::n_chan> > &out) {
    typename CONFIG_T::accum_t sum[CONFIG_T::n_chan];
    for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++) sum[ch] = 0;
SumPixels:
    for (int p = 0; p < (int)(CONFIG_T::in_height * CONFIG_T::in_width); p++) {
#pragma HLS PIPELINE II = 1
        px<data_T, CONFIG_T::n_chan> v = in.read();
        for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++) sum[ch] += v.data[ch];
    }
    px<res_T, CONFIG_T::n_chan> o;
    for (int ch = 0; ch < (int)CONFIG_T::n_chan; ch++) o.data[ch] = (res_T)sum[ch];
    out.write(o);
}

} // namespace conveyor

#endif
