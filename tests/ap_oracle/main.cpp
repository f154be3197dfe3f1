// Oracle driver entry point.
//   driver run <id> <W> <in.f64> <out.bin>  converts every double of in.f64 with
//       configuration <id>; out.bin = n doubles (to_double()) followed by
//       n * ceil(W/64) uint64 words (stored bits).
//   driver types                         prints the result types of + - * /.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "oracle.h"

#define ORACLE_DECLARE(k)                                                  \
  int oracle_part_##k(int id, const double* in, size_t n, double* vals, \
                      uint64_t* words);
#define ORACLE_ENTRY(k) oracle_part_##k,
// parts.h (generated) defines ORACLE_PARTS(M) as M(0) M(1) ...
#include "parts.h"
ORACLE_PARTS(ORACLE_DECLARE)
static const oracle_part_fn kParts[] = {ORACLE_PARTS(ORACLE_ENTRY)};

void oracle_print_all_types();

static int fail(const char* what) {
  std::fprintf(stderr, "driver: %s\n", what);
  return 2;
}

int main(int argc, char** argv) {
  if (argc == 2 && !std::strcmp(argv[1], "types")) {
    oracle_print_all_types();
    return 0;
  }
  if (argc != 6 || std::strcmp(argv[1], "run"))
    return fail("usage: driver run <id> <width> <in> <out> | driver types");
  int id = std::atoi(argv[2]);
  int width = std::atoi(argv[3]);
  FILE* f = std::fopen(argv[4], "rb");
  if (!f) return fail("cannot open input");
  std::fseek(f, 0, SEEK_END);
  long bytes = std::ftell(f);
  std::fseek(f, 0, SEEK_SET);
  size_t n = (size_t)bytes / sizeof(double);
  std::vector<double> in(n);
  if (n && std::fread(in.data(), sizeof(double), n, f) != n)
    return fail("short read");
  std::fclose(f);
  size_t nw = (size_t)(width + 63) / 64;
  std::vector<double> vals(n);
  std::vector<uint64_t> words(n * nw);
  int done = 0;
  for (size_t k = 0; k < sizeof(kParts) / sizeof(kParts[0]) && !done; ++k)
    done = kParts[k](id, in.data(), n, vals.data(), words.data());
  if (!done) return fail("unknown configuration id");
  FILE* g = std::fopen(argv[5], "wb");
  if (!g) return fail("cannot open output");
  if (n) {
    std::fwrite(vals.data(), sizeof(double), n, g);
    std::fwrite(words.data(), sizeof(uint64_t), n * nw, g);
  }
  return std::fclose(g) ? fail("write failed") : 0;
}
