// One translation unit of the oracle dispatch. Compiled several times with
// -DORACLE_PART=<k>; each includes its generated list "configs_<k>.h" of
//   X(id, W, I, signed, AP_Q, AP_O, N)
// lines so the parts compile in parallel.
#include "oracle.h"

#define ORACLE_CAT2(a, b) a##b
#define ORACLE_CAT(a, b) ORACLE_CAT2(a, b)
#define ORACLE_STR2(a) #a
#define ORACLE_STR(a) ORACLE_STR2(a)

int ORACLE_CAT(oracle_part_, ORACLE_PART)(int id, const double* in, size_t n,
                                          double* vals, uint64_t* words) {
  switch (id) {
#define X(ID, W, I, S, Q, O, N) \
  case ID:                      \
    oracle_run<W, I, S, Q, O, N>(in, n, vals, words); \
    return 1;
#include ORACLE_STR(ORACLE_CAT(configs_, ORACLE_PART).h)
#undef X
    default:
      return 0;
  }
}
