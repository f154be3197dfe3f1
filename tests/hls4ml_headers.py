"""hls4ml's Vivado C++ templates (nnet_utils) and the Xilinx ap_types headers, from the hls4ml wheel.

The wheel is downloaded once with ``pip download hls4ml==<pinned> --no-deps`` into
``$CONVEYOR_CACHE/ap_types`` (default ``~/.cache/conveyor/ap_types``, shared with
the oracle tests) and the two header folders are extracted beside it.
A failed download fails the calling test: the oracles need the real headers.
`hls4ml_driver` builds an oracle driver against both folders (tests/oracle_build.py).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from oracle_build import build_driver, cache_root

HLS4ML_VERSION = "1.3.0"
_PREFIX = "hls4ml/templates/vivado/"
_FOLDERS = ("ap_types", "nnet_utils")


def hls4ml_wheel() -> Path:
    root = cache_root() / "ap_types"
    root.mkdir(parents=True, exist_ok=True)
    wheels = sorted(root.glob(f"hls4ml-{HLS4ML_VERSION}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", f"hls4ml=={HLS4ML_VERSION}", "--no-deps",
               "--only-binary=:all:", "-d", str(root)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
            out = proc.stdout + proc.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            out = str(exc)
        wheels = sorted(root.glob(f"hls4ml-{HLS4ML_VERSION}-*.whl"))
        if not wheels:
            pytest.fail(f"hls4ml oracle: could not download the hls4ml wheel ({' '.join(cmd)}); this test "
                        f"needs PyPI access (or the wheel placed in {root}).\n" + out[-3000:])
    return wheels[-1]


def vivado_headers() -> tuple[Path, Path, str]:
    """(ap_types dir, nnet_utils dir, a digest of the wheel) for hls4ml's Vivado backend."""
    wheel = hls4ml_wheel()
    dest = cache_root() / "ap_types" / wheel.name[: -len(".whl")] / "vivado"
    if not all((dest / f).is_dir() for f in _FOLDERS) or not (dest / "nnet_utils" / "nnet_activation.h").is_file():
        tmp = Path(tempfile.mkdtemp(dir=dest.parent.parent))
        with zipfile.ZipFile(wheel) as zf:
            names = [n for n in zf.namelist() if n.startswith(tuple(_PREFIX + f + "/" for f in _FOLDERS))
                     and not n.endswith("/")]
            if not any(n.endswith("nnet_utils/nnet_activation.h") for n in names):
                pytest.fail(f"hls4ml oracle: {wheel} has no {_PREFIX}nnet_utils/nnet_activation.h")
            for name in names:
                target = tmp / name[len(_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    digest = hashlib.sha256(wheel.name.encode() + str(wheel.stat().st_size).encode()).hexdigest()[:16]
    return dest / "ap_types", dest / "nnet_utils", digest


def hls4ml_driver(kind: str, *, label: str, sources_dir: Path, sources: Sequence[str], generated: Mapping[str, str],
                  cxxflags: Sequence[str]) -> Path:
    """The driver, compiled (or cached) with -isystem ap_types -I nnet_utils, keyed by the wheel."""
    ap_dir, nnet_dir, digest = vivado_headers()
    exe, seconds, cached = build_driver(kind, label=label, sources_dir=sources_dir, sources=sources,
                                        generated=generated, key=digest, cxxflags=cxxflags,
                                        system_include_dirs=[ap_dir], include_dirs=[nnet_dir])
    print(f"\n{label}: driver {'cached' if cached else f'compiled in {seconds:.1f} s'} ({exe})")
    return exe
