// hls4ml Dense/Conv2D oracle: `driver CASE COUNT` (see oracle.h for the protocol).
#include <cstdio>
#include <cstdlib>

#include "cases.h"  // generated: int oracle_case_<i>(long); and ORACLE_CASES(M)

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s CASE COUNT\n", argv[0]);
        return 1;
    }
    static char inbuf[1 << 16], outbuf[1 << 16];
    std::setvbuf(stdin, inbuf, _IOFBF, sizeof inbuf);
    std::setvbuf(stdout, outbuf, _IOFBF, sizeof outbuf);
    const int id = std::atoi(argv[1]);
    const long count = std::atol(argv[2]);
    int rc = 1;
    switch (id) {
#define ORACLE_DISPATCH(i) \
    case i: rc = oracle_case_##i(count); break;
        ORACLE_CASES(ORACLE_DISPATCH)
    default:
        std::fprintf(stderr, "unknown case %d\n", id);
        return 1;
    }
    std::fflush(stdout);
    return rc;
}
