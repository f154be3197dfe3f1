// Bit-exact oracle for conveyor.numerics.FixedType against the Xilinx ap_types
// headers (Apache-2.0, fetched at test time from the hls4ml wheel; never
// committed). Built and driven by tests/test_numerics_ap_oracle.py.
#ifndef CONVEYOR_AP_ORACLE_H
#define CONVEYOR_AP_ORACLE_H

#include <ap_fixed.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>

// Signature shared by every generated dispatch part: returns 1 when `id`
// belongs to this part (and the values were converted), 0 otherwise.
typedef int (*oracle_part_fn)(int id, const double* in, size_t n,
                              double* vals, uint64_t* words);

template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
struct oracle_pick;
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct oracle_pick<W, I, true, Q, O, N> {
  typedef ap_fixed<W, I, Q, O, N> type;
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct oracle_pick<W, I, false, Q, O, N> {
  typedef ap_ufixed<W, I, Q, O, N> type;
};

// For every input double: `T v = in[k];` then record v.to_double() and the
// W stored bits as ceil(W/64) little-endian 64-bit words (zero above W).
template <int W, int I, bool S, ap_q_mode Q, ap_o_mode O, int N>
void oracle_run(const double* in, size_t n, double* vals, uint64_t* words) {
  typedef typename oracle_pick<W, I, S, Q, O, N>::type T;
  const int NW = (W + 63) / 64;
  for (size_t k = 0; k < n; ++k) {
    T v = in[k];
    vals[k] = v.to_double();
    ap_uint<W> bits = v.range(W - 1, 0);
    if (NW == 1) {
      words[k] = bits.to_uint64();
    } else {
      for (int j = 0; j < NW; ++j) {
        int lo = 64 * j;
        int hi = lo + 63 < W - 1 ? lo + 63 : W - 1;
        words[k * NW + j] = bits.range(hi, lo).to_uint64();
      }
    }
  }
}

template <typename T>
struct oracle_signed_of;
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct oracle_signed_of<ap_fixed<W, I, Q, O, N> > {
  enum { value = 1 };
};
template <int W, int I, ap_q_mode Q, ap_o_mode O, int N>
struct oracle_signed_of<ap_ufixed<W, I, Q, O, N> > {
  enum { value = 0 };
};

template <typename T>
void oracle_print_type(const char* op) {
  std::printf(" %s %d %d %d", op, (int)T::width, (int)T::iwidth,
              (int)oracle_signed_of<T>::value);
}

// One line per operand pair: the width, integer width and signedness of
// a+b, a-b, a*b and a/b as the headers declare them (unevaluated).
template <int W1, int I1, bool S1, int W2, int I2, bool S2>
void oracle_types(int id) {
  typedef typename oracle_pick<W1, I1, S1, AP_TRN, AP_WRAP, 0>::type A;
  typedef typename oracle_pick<W2, I2, S2, AP_TRN, AP_WRAP, 0>::type B;
  std::printf("%d", id);
  oracle_print_type<decltype(A() + B())>("add");
  oracle_print_type<decltype(A() - B())>("sub");
  oracle_print_type<decltype(A() * B())>("mul");
  oracle_print_type<decltype(A() / B())>("div");
  std::printf("\n");
}

#endif
