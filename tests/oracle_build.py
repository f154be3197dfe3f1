"""Building the C++ oracle drivers of the numerics tests, cached.

A driver is compiled with g++ from a folder of hand-written sources plus generated files, one
translation unit per g++ process (in parallel), and linked in a scratch folder under the cache;
the binary is then moved into ``<cache>/<kind>/<hash>/driver`` in one rename. The hash covers
the sources, the generated files, the caller's key (which headers), the compiler's version,
the flags and the units. The cache is ``$CONVEYOR_CACHE`` or ``~/.cache/conveyor``.

No g++, a compile error or a link error fails the calling test (with the compiler's output),
never skips it.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import pytest

from conveyor.codegen.headers import cache_root  # one cache for the oracle tests and the C simulation


def parallel_parts(cap: int, per_cpu: int = 1) -> int:
    """How many translation units to split generated cases into: per_cpu per core, 2..cap."""
    return max(2, min(cap, per_cpu * (os.cpu_count() or 1)))


def case_parts(cases: Iterable, render: Callable[[object], str], n_parts: int) -> dict[str, str]:
    """``case_ids.h`` (``X(id)`` per case) and ``part<k>.cpp`` with the cases whose id is k mod n_parts."""
    cases = list(cases)
    files = {"case_ids.h": "".join(f"X({c.id})\n" for c in cases)}
    for k in range(n_parts):
        files[f"part{k}.cpp"] = '#include "oracle.h"\n\n' + "\n".join(render(c) for c in cases if c.id % n_parts == k)
    return files


def build_driver(
    kind: str,
    *,
    label: str,
    sources_dir: Path,
    sources: Sequence[str],
    generated: Mapping[str, str],
    key: str,
    cxxflags: Sequence[str],
    include_dirs: Sequence[Path] = (),
    system_include_dirs: Sequence[Path] = (),
    units: Sequence[str | tuple[str, Sequence[str]]] | None = None,
) -> tuple[Path, float, bool]:
    """(driver path, seconds spent compiling, whether it came from the cache).

    ``units`` defaults to every ``.cpp`` among ``sources`` and ``generated``; a unit given as
    (source, args) is compiled with those extra arguments (one source may appear several times).
    ``label`` starts the failure messages; the scratch folder is on the include path.
    """
    cxx = shutil.which("g++")
    if not cxx:
        pytest.fail(f"{label}: g++ not found; the oracle needs a C++14 compiler")
    if units is None:
        units = sorted(n for n in (*sources, *generated) if n.endswith(".cpp"))
    units = [(u, ()) if isinstance(u, str) else (u[0], tuple(u[1])) for u in units]
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    h = hashlib.sha256()
    for name in sources:
        h.update(name.encode() + (sources_dir / name).read_bytes())
    for name in sorted(generated):
        h.update(name.encode() + generated[name].encode())
    h.update(repr((key, version, tuple(cxxflags), units)).encode())
    bdir = cache_root() / kind / h.hexdigest()[:20]
    exe = bdir / "driver"
    if exe.is_file():
        return exe, 0.0, True
    start = time.perf_counter()
    bdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=bdir.parent))
    try:
        for name in sources:
            shutil.copy(sources_dir / name, tmp / name)
        for name, text in generated.items():
            (tmp / name).write_text(text)
        base = [cxx, *cxxflags]
        for d in system_include_dirs:
            base += ["-isystem", str(d)]
        for d in include_dirs:
            base += ["-I", str(d)]
        base += ["-I", str(tmp), "-c"]
        cmds = [base + [*args, src, "-o", f"u{i}_{Path(src).stem}.o"] for i, (src, args) in enumerate(units)]

        def compile_one(cmd):
            p = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, check=False)
            return f"{' '.join(cmd)}\n{p.stdout}{p.stderr}" if p.returncode else None

        with cf.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
            failures = [f for f in pool.map(compile_one, cmds) if f]
        if failures:
            pytest.fail(f"{label}: driver failed to compile:\n" + "\n".join(failures)[-6000:])
        link = subprocess.run([cxx, *(cmd[-1] for cmd in cmds), "-o", "driver"], cwd=tmp, capture_output=True,
                              text=True, check=False)
        if link.returncode:
            pytest.fail(f"{label}: link failed:\n" + (link.stdout + link.stderr)[-6000:])
        bdir.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / "driver", exe)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe, time.perf_counter() - start, False
