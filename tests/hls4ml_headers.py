"""hls4ml's Vivado C++ templates (nnet_utils) and the Xilinx ap_types headers, from the hls4ml wheel.

The wheel is fetched and unpacked by conveyor.codegen.headers (shared with the C simulation).
A failed download fails the calling test: the oracles need the real headers.
`hls4ml_driver` builds an oracle driver against both folders (tests/oracle_build.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from oracle_build import build_driver

from conveyor.codegen.board import INCLUDE
from conveyor.codegen.headers import HLS4ML_VERSION  # noqa: F401
from conveyor.codegen.headers import hls4ml_wheel as _package_wheel
from conveyor.codegen.headers import vivado_headers as _package_headers
from conveyor.errors import CodegenError


def hls4ml_wheel() -> Path:
    try:
        return _package_wheel()
    except CodegenError as e:
        pytest.fail(f"hls4ml oracle: {e}")


def vivado_headers() -> tuple[Path, Path, str]:
    """The package's headers (conveyor/codegen/headers.py); a failed download fails the test."""
    try:
        return _package_headers()
    except CodegenError as e:
        pytest.fail(f"hls4ml oracle: {e}")


def hls4ml_driver(kind: str, *, label: str, sources_dir: Path, sources: Sequence[str], generated: Mapping[str, str],
                  cxxflags: Sequence[str]) -> Path:
    """The driver, compiled (or cached) with -isystem ap_types -I nnet_utils -I conveyor's own
    HLS headers (conveyor/codegen/include), keyed by the wheel."""
    ap_dir, nnet_dir, digest = vivado_headers()
    own = "".join(p.name + p.read_text() for p in sorted(INCLUDE.glob("*.h")))
    key = digest + hashlib.sha256(own.encode()).hexdigest()[:16]
    exe, seconds, cached = build_driver(kind, label=label, sources_dir=sources_dir, sources=sources,
                                        generated=generated, key=key, cxxflags=cxxflags,
                                        system_include_dirs=[ap_dir], include_dirs=[nnet_dir, INCLUDE])
    print(f"\n{label}: driver {'cached' if cached else f'compiled in {seconds:.1f} s'} ({exe})")
    return exe
