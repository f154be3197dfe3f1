// conveyor: large weight sets as binary files of raw int64 (C simulation only; see README).
#ifndef CONVEYOR_WEIGHTS_H_
#define CONVEYOR_WEIGHTS_H_

#include "conveyor_link.h"
#ifndef __SYNTHESIS__
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>
#endif

namespace conveyor {

// A ROM element from its exact bit pattern (weights/*_rom.h, codegen/weights_rom.py). Vitis HLS:
// ap_fixed_base::bitsToFixed, whose synthesis branch sets the storage to the bits; g++ (the
// CONVEYOR_ROM_WEIGHTS check): the open-source ap_types lack that branch's set_bits, so .range().
template <class T> T rom_bits(unsigned long long bits) {
#ifdef __SYNTHESIS__
    return T::bitsToFixed(bits);
#else
    T v;
    v.range(T::width - 1, 0) = ap_uint<64>(bits).range(T::width - 1, 0);
    return v;
#endif
}

#ifndef __SYNTHESIS__
// Reads `n` raw integers from $CONVEYOR_WEIGHTS (default firmware/weights)/name.
template <class T> void load_raw_file(T *dst, int n, const char *name) {
    const char *dir = std::getenv("CONVEYOR_WEIGHTS");
    std::string path = std::string(dir ? dir : "firmware/weights") + "/" + name;
    FILE *f = std::fopen(path.c_str(), "rb");
    std::vector<long long> raw(n);
    if (!f || std::fread(raw.data(), sizeof(long long), n, f) != (size_t)n) {
        std::fprintf(stderr, "conveyor: cannot read %d weights from %s\n", n, path.c_str());
        std::exit(3);
    }
    std::fclose(f);
    for (int i = 0; i < n; i++) from_raw(dst[i], raw[i]);
}
#endif

} // namespace conveyor

#endif
