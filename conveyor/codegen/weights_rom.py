"""On-chip weights as ROM initialisers for synthesis.

C simulation reads a board's weights from raw-integer headers / binary files on the first call
(board.py; g++ would run out of memory on VGG-sized initialisers, hls4ml issues #118, #1269).
Synthesis needs them as initialised arrays that Vitis HLS turns into ROMs, as hls4ml's
`weights/w2.h` does under `__SYNTHESIS__`; hls4ml prints decimal text there, conveyor writes
each value's exact bit pattern through ap_fixed's bit-level constructor
(`conveyor::rom_bits`, conveyor_weights.h: `ap_fixed_base::bitsToFixed(ap_ulong)` under
`__SYNTHESIS__`, whose synthesis branch in ap_fixed_base.h sets the storage to the bits; `.range()`
under g++), no decimal text and no rounding on the way. The ROM branch is taken under `__SYNTHESIS__` (Vitis HLS) or
`CONVEYOR_ROM_WEIGHTS` (g++: the test that compiles and runs it, tests/test_codegen_rom.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: the preprocessor test of the ROM branch, in parameters.h and load_weights()
ROM_BRANCH = "#if defined(__SYNTHESIS__) || defined(CONVEYOR_ROM_WEIGHTS)"
#: values per line of a ROM header
PER_LINE = 32


def bit_patterns(raw: np.ndarray, width: int) -> np.ndarray:
    """Raw two's-complement integers -> their `width`-bit patterns (uint64)."""
    mask = np.uint64((1 << width) - 1) if width < 64 else np.uint64(2**64 - 1)
    return np.asarray(raw, dtype=np.int64).view(np.uint64) & mask


def write_rom(path: Path, name: str, ctype: str, raw: np.ndarray, width: int, comment: str) -> None:
    """`static <ctype> name[N] = {bits...};` with every element from its exact bit pattern (hex).
    Kept short (`CV_R(0x...)`, about 10 characters a value) and written with C-level joins: a
    VGG board's millions of weights take seconds, not minutes."""
    bits = bit_patterns(raw, width).tolist()
    lines = [f"// {comment}: ROM initialiser for synthesis, the bit patterns of {len(bits)} values",
             f"#define CV_R(b) conveyor::rom_bits<{ctype}>(b##ULL)",
             f"static {ctype} {name}[{len(bits)}] = {{"]
    lines += ["CV_R(" + "),CV_R(".join(map(hex, bits[k:k + PER_LINE])) + ")," for k in range(0, len(bits), PER_LINE)]
    lines += ["};", "#undef CV_R", ""]
    path.write_text("\n".join(lines))


def declarations(name: str, ctype: str, csim_lines: list[str]) -> list[str]:
    """parameters.h lines: the ROM header under synthesis, else the C simulation's array
    (`static <ctype> name[N];`, loaded by load_weights) and its raw header if any."""
    return [ROM_BRANCH, f'#include "weights/{name}_rom.h"', "#else", *csim_lines, "#endif"]
