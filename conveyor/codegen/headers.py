"""hls4ml's Vivado C++ library (nnet_utils) and the Xilinx ap_types headers, from the hls4ml wheel.

The wheel is downloaded once with ``pip download hls4ml==<pinned> --no-deps`` into
``$CONVEYOR_CACHE/ap_types`` (default ``~/.cache/conveyor/ap_types``) and the two header
folders are extracted beside it; nothing of it is committed (Apache-2.0 code stays in the
wheel). The C simulation and the numerics oracle tests both build against these folders.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from conveyor.errors import CodegenError

HLS4ML_VERSION = "1.3.0"
_PREFIX = "hls4ml/templates/vivado/"
_FOLDERS = ("ap_types", "nnet_utils")


def cache_root() -> Path:
    return Path(os.environ.get("CONVEYOR_CACHE") or Path.home() / ".cache" / "conveyor")


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
            raise CodegenError(f"could not download the hls4ml {HLS4ML_VERSION} wheel ({' '.join(cmd)}); the C "
                               f"simulation needs its ap_types and nnet_utils headers: place the wheel in {root}. "
                               + out[-500:].replace("\n", " "))
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
                raise CodegenError(f"{wheel} has no {_PREFIX}nnet_utils/nnet_activation.h")
            for name in names:
                target = tmp / name[len(_PREFIX):]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    digest = hashlib.sha256(wheel.name.encode() + str(wheel.stat().st_size).encode()).hexdigest()[:16]
    return dest / "ap_types", dest / "nnet_utils", digest
