"""Bit-exact oracle: ``conveyor.numerics.FixedType`` against the real Xilinx headers.

The ap_types headers (Apache-2.0) ship inside the hls4ml wheel. This test
downloads the wheel with ``pip download hls4ml --no-deps`` into the cache
(``$CONVEYOR_CACHE`` or ``~/.cache/conveyor``; reused when present), extracts
the headers (tests/hls4ml_headers.py), compiles ``tests/ap_oracle/`` with g++
(tests/oracle_build.py: the binary is cached by a hash of the driver sources,
the generated configuration lists, the wheel and the compiler) and then, per configuration, streams doubles through
``ap_[u]fixed<W,I,Q,O,N> v = x;`` and compares ``v.to_double()`` and the stored
bits with ``FixedType.quantize`` / ``FixedType.to_raw``. Zero mismatches allowed.

No network or no g++ is a failure, not a skip: CI has both. The headers are
never copied into the repository.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hls4ml_headers import hls4ml_wheel, vivado_headers
from oracle_build import build_driver, parallel_parts

from conveyor.numerics import (
    OVERFLOW_MODES,
    ROUNDING_MODES,
    FixedType,
    add_type,
    div_type,
    mul_type,
    sub_type,
)

DRIVER_DIR = Path(__file__).parent / "ap_oracle"
DRIVER_SOURCES = ("oracle.h", "part.cpp", "types.cpp", "main.cpp")
CXXFLAGS = ("-O1", "-std=c++14")

WIDTHS = (1, 2, 3, 4, 5, 7, 8, 12, 16, 18, 24, 27, 32, 33, 48, 53, 54, 63, 64, 65, 72, 80)
WIDTH_CLASSES = ((1,), (2, 3, 4, 5, 7, 8), (12, 16, 18, 24, 27, 32), (33, 48, 53), (54, 63, 64), (65, 72, 80))
CORE_VALUES = 1_000_000
TAIL_VALUES = 100_000
EXTREME_VALUES = 20_000
# Beyond the sampled widths: LSB weights past 2**+-1020 (handled by the scalar
# header port), integer bits past 1023 (infinite inputs), widths past 971.
EXTREME_TYPES = (
    FixedType(8, -1030),
    FixedType(12, -1016, True, "RND_CONV", "SAT"),
    FixedType(16, 1030, True, "RND", "WRAP", 2),
    FixedType(16, 1030, False, "TRN", "SAT"),
    FixedType(24, 1040, True, "TRN_ZERO", "WRAP_SM"),
    FixedType(20, 1000, True, "RND_INF", "SAT_SYM"),
    FixedType(130, 60, True, "RND_MIN_INF", "WRAP_SM", 3),
    FixedType(200, -20, False, "RND_ZERO", "WRAP", 1),
    FixedType(300, 1100, True, "RND", "SAT"),
    FixedType(990, 900, True, "TRN", "WRAP"),
    FixedType(1000, 10, True, "RND_CONV", "WRAP", 3),
    FixedType(1024, 1024, False, "TRN", "SAT_ZERO"),
)


# ----------------------------------------------------------- configurations
def _o_variants(signed: bool):
    out = [("WRAP", n) for n in range(4)]
    if signed:
        out += [("WRAP_SM", n) for n in range(4)]
    return out + [("SAT", 0), ("SAT_ZERO", 0), ("SAT_SYM", 0)]


def _integer_bits(width: int, kind: int) -> int:
    # mid, ap_int-like, I > W, I == 0, I < 0, I == 1, I much larger than W
    return (max(width // 2, 1), width, width + 3, 0, -2, 1, width + 9)[kind % 7]


def _make_type(width, kind, signed, q, o, n) -> FixedType:
    return FixedType(width, _integer_bits(width, kind), signed, q, o, min(n, width))


def oracle_configs() -> list[tuple[FixedType, int]]:
    """(type, number of values): a core set with every rounding x overflow
    (x saturation bits) x signedness combination at 1e6 values, over widths
    1..80 round-robin, then the same combinations once per width class at 1e5."""
    combos = [(s, q, o, n) for s in (True, False) for q in ROUNDING_MODES for o, n in _o_variants(s)]
    seen, out = set(), []

    def add(t, count):
        if t not in seen:
            seen.add(t)
            out.append((t, count))

    for c, (s, q, o, n) in enumerate(combos):
        w = WIDTHS[(c * 5) % len(WIDTHS)]
        while n > w:
            w = WIDTHS[WIDTHS.index(w) + 1]
        add(_make_type(w, c, s, q, o, n), CORE_VALUES)
    for c, (s, q, o, n) in enumerate(combos):
        for k, cls in enumerate(WIDTH_CLASSES):
            fits = [w for w in cls if w >= n]
            if not fits:
                continue
            w = fits[(c + k) % len(fits)]
            add(_make_type(w, c + 3 * k + 1, s, q, o, n), TAIL_VALUES)
    for t in EXTREME_TYPES:
        add(t, EXTREME_VALUES)
    return out


def _values_comparable(t: FixedType) -> bool:
    """Whether the header's to_double() is meaningful for every value of t
    (it builds the exponent field by hand: no subnormals, no overflow)."""
    return -1000 <= t.integer - t.width and t.integer <= 1000


def type_pairs() -> list[tuple[FixedType, FixedType]]:
    rng = np.random.default_rng(7)
    pairs = []
    for _ in range(240):
        ts = []
        for _ in range(2):
            w = int(rng.choice(WIDTHS[:-3]))
            ts.append(FixedType(w, _integer_bits(w, int(rng.integers(7))) + int(rng.integers(-2, 3)), bool(rng.integers(2))))
        pairs.append(tuple(ts))
    return pairs


# ------------------------------------------------------------------- build
def _cxx_line(t: FixedType) -> str:
    return f"{t.width}, {t.integer}, {'true' if t.signed else 'false'}, AP_{t.rounding}, AP_{t.overflow}, {t.sat_bits}"


def _generated_files(configs, pairs, n_parts: int) -> dict[str, str]:
    files = {}
    parts = [[] for _ in range(n_parts)]
    for i, (t, _) in enumerate(configs):
        parts[i % n_parts].append(f"X({i}, {_cxx_line(t)})")
    for k, lines in enumerate(parts):
        files[f"configs_{k}.h"] = "\n".join(lines) + "\n"
    files["parts.h"] = "#define ORACLE_PARTS(M) " + " ".join(f"M({k})" for k in range(n_parts)) + "\n"
    files["type_pairs.h"] = "".join(
        f"P({i}, {a.width}, {a.integer}, {str(a.signed).lower()}, {b.width}, {b.integer}, {str(b.signed).lower()})\n"
        for i, (a, b) in enumerate(pairs)
    )
    return files


def _build_driver(configs, pairs) -> tuple[Path, float, bool]:
    ap_dir, _, digest = vivado_headers()
    n_parts = parallel_parts(8, per_cpu=2)
    units = [("part.cpp", [f"-DORACLE_PART={k}"]) for k in range(n_parts)] + ["main.cpp", "types.cpp"]
    return build_driver("ap_oracle", label="ap_fixed oracle", sources_dir=DRIVER_DIR, sources=DRIVER_SOURCES,
                        generated=_generated_files(configs, pairs, n_parts), key=digest, cxxflags=CXXFLAGS,
                        system_include_dirs=[ap_dir], units=units)


# ------------------------------------------------------------------ inputs
def oracle_inputs(t: FixedType, n: int, seed: int) -> np.ndarray:
    """n doubles (no NaN, some +-inf) aimed at t's rounding ties, grid points,
    range and wrap edges, plus random and special values."""
    with np.errstate(over="ignore", invalid="ignore"):  # extreme types make some inf
        return _inputs(t, n, seed)


def _inputs(t: FixedType, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    W, I, N = t.width, t.integer, t.sat_bits
    # (clamped so that extreme types still give finite, non-zero anchors)
    lsb = math.ldexp(1.0, max(I - W, -1074))
    top = math.ldexp(1.0, min(I - 1 if t.signed else I, 1020))  # one lsb above the largest value
    bot = -top if t.signed else 0.0
    span = top - bot
    m = max(n // 16, 1)
    kmax = min(W + 2, 52)

    def rint(size, bits):
        # random integers, log-uniform in magnitude up to 2**bits, random sign
        mag = np.floor(np.exp2(rng.uniform(0, bits, size)))
        return mag * rng.choice([-1.0, 1.0], size)

    ties = (rint(2 * m, kmax) + 0.5) * lsb
    grid = rint(m, kmax) * lsb
    uniform = rng.uniform(bot - span, top + span, 2 * m)
    e_lo, e_hi = max(I - W - 12, -1074), min(I + 12, 1023)
    logmag = np.exp2(rng.uniform(e_lo, max(e_hi, e_lo + 1), 2 * m)) * rng.choice([-1.0, 1.0], 2 * m)
    edges = []
    for base in (top, bot, top - lsb, bot + lsb, 2 * top, -2 * top, 3 * top, span, -span, 2 * span):
        for j in range(N + 2):
            edges.append(base * 2.0**-j)
    for k in (-3, -2, -1, 1, 2, 3):
        edges += [k * span + d * lsb for d in (-1, -0.5, 0, 0.5, 1)]
        edges += [k * top + d * lsb for d in (-1, -0.5, 0, 0.5, 1)]
    edges = np.array(edges)
    edges = np.concatenate([edges + d * lsb for d in (-0.5, 0, 0.5)])
    edges = np.repeat(edges, max(m // (4 * edges.size), 1))
    rawbits = rng.integers(0, 0x7FF0_0000_0000_0000, m, dtype=np.int64).view(np.float64)
    rawbits *= rng.choice([-1.0, 1.0], m)
    specials = np.array(
        [0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324, 2.2250738585072014e-308, -2.2250738585072014e-308,
         1.7976931348623157e308, -1.7976931348623157e308, lsb, -lsb, lsb / 2, -lsb / 2, lsb / 4, -lsb / 4,
         1.0, -1.0, 0.5, -0.5]
    )
    tiny = rng.uniform(-1, 1, m) * lsb * np.exp2(-rng.integers(0, 80, m).astype(np.float64))
    core = np.concatenate([ties, grid, uniform, logmag, edges, rawbits, specials, tiny])
    core = core[np.isfinite(core) | np.isinf(core)]
    x = np.concatenate([core, np.nextafter(ties, np.inf), np.nextafter(ties, -np.inf),
                        np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf),
                        np.nextafter(grid, np.inf), np.nextafter(grid, -np.inf)])
    x = x[~np.isnan(x)]
    if x.size < n:
        x = np.concatenate([x, rng.uniform(bot - span, top + span, n - x.size)])
    return x[:n] if x.size > n else x


# ----------------------------------------------------------------- compare
def _raw_words(t: FixedType, raw: np.ndarray) -> np.ndarray:
    nw = (t.width + 63) // 64
    if raw.dtype != object:
        w = raw.astype(np.int64).view(np.uint64)
        if t.width < 64:
            w = w & np.uint64((1 << t.width) - 1)
        return w.reshape(-1, 1)
    v = raw & ((1 << t.width) - 1)
    cols = [((v >> (64 * j)) & ((1 << 64) - 1)).astype(np.uint64) for j in range(nw)]
    return np.stack(cols, axis=1)


def _run_one(exe: Path, cid: int, t: FixedType, n: int, workdir: Path):
    x = oracle_inputs(t, n, seed=1000 + cid)
    src, dst = workdir / f"in{cid}.f64", workdir / f"out{cid}.bin"
    x.tofile(src)
    cmd = [str(exe), "run", str(cid), str(t.width), str(src), str(dst)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        return x.size, [f"{t}: driver exited {proc.returncode}: {proc.stderr.strip()}"]
    nw = (t.width + 63) // 64
    data = np.fromfile(dst, dtype=np.uint64)
    src.unlink()
    dst.unlink()
    hv = data[: x.size].view(np.float64)
    hw = data[x.size :].reshape(x.size, nw)
    cv = t.quantize(x)
    cw = _raw_words(t, t.to_raw(x))
    bad_bits = np.any(hw != cw, axis=1)
    if _values_comparable(t):
        bad_bits |= hv.view(np.uint64) != cv.view(np.uint64)
    bad = np.flatnonzero(bad_bits)
    msgs = []
    for i in bad[:5]:
        msgs.append(
            f"{t}: x={x[i]!r} ({x[i].hex()}) header value {hv[i]!r} bits {[hex(int(w)) for w in hw[i]]}; "
            f"conveyor value {cv[i]!r} bits {[hex(int(w)) for w in cw[i]]}"
        )
    if bad.size > 5:
        msgs.append(f"{t}: ... {bad.size} mismatches in all")
    return x.size, msgs


@pytest.fixture(scope="module")
def oracle_driver():
    configs = oracle_configs()
    pairs = type_pairs()
    exe, seconds, cached = _build_driver(configs, pairs)
    print(f"\nap_fixed oracle: headers from {hls4ml_wheel().name}; driver {'cached' if cached else f'compiled in {seconds:.1f} s'}")
    return exe, configs, pairs


def test_oracle_covers_every_mode_and_width_class():
    configs = oracle_configs()
    core = [t for t, n in configs if n >= 1_000_000]
    combos = {(t.signed, t.rounding, t.overflow, t.sat_bits) for t in core}
    expected = {(s, q, o, n) for s in (True, False) for q in ROUNDING_MODES for o, n in _o_variants(s)}
    assert combos == expected and set(OVERFLOW_MODES) == {o for _, _, o, _ in combos}
    assert {t.width for t, _ in configs} >= set(WIDTHS)
    assert any(t.integer > t.width for t in core) and any(t.integer < 0 for t in core)
    assert any(t.integer == 0 for t in core) and any(t.integer == t.width for t in core)
    for cls in WIDTH_CLASSES:
        covered = {(t.signed, t.rounding, t.overflow, t.sat_bits) for t, _ in configs if t.width in cls}
        assert covered == {c for c in expected if c[3] <= max(cls)}


def test_quantize_matches_ap_fixed_headers(oracle_driver, tmp_path):
    exe, configs, _ = oracle_driver
    start = time.perf_counter()
    total, problems = 0, []
    with cf.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        futures = [pool.submit(_run_one, exe, i, t, n, tmp_path) for i, (t, n) in enumerate(configs)]
        for fut in futures:
            count, msgs = fut.result()
            total += count
            problems += msgs
    seconds = time.perf_counter() - start
    n_core = sum(1 for _, n in configs if n >= CORE_VALUES)
    print(
        f"ap_fixed oracle: {len(configs)} configurations ({n_core} with >= {CORE_VALUES:,} values), "
        f"{total:,} values compared in {seconds:.1f} s, {len(problems)} problem report(s)"
    )
    assert not problems, "conveyor differs from the ap_fixed headers:\n" + "\n".join(problems[:40])


def test_result_types_match_ap_fixed_headers(oracle_driver):
    exe, _, pairs = oracle_driver
    out = subprocess.run([str(exe), "types"], capture_output=True, text=True, check=True).stdout.split("\n")
    funcs = {"add": add_type, "sub": sub_type, "mul": mul_type, "div": div_type}
    checked, problems = 0, []
    for line in filter(None, out):
        f = line.split()
        a, b = pairs[int(f[0])]
        for k in range(1, len(f), 4):
            op, w, i, s = f[k], int(f[k + 1]), int(f[k + 2]), bool(int(f[k + 3]))
            mine = funcs[op](a, b)
            checked += 1
            if (mine.width, mine.integer, mine.signed) != (w, i, s):
                problems.append(f"{a} {op} {b}: header <{w},{i},signed={s}>, conveyor {mine}")
    print(f"ap_fixed oracle: {checked} result types compared ({len(pairs)} operand pairs)")
    assert checked == 4 * len(pairs)
    assert not problems, "\n".join(problems[:20])
