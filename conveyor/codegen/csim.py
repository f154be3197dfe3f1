"""C simulation of a compiled pipeline: each board's firmware + testbench built with g++
(cached by content hash), run in pipeline order, compared with the emulator bit for bit."""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from conveyor.codegen.headers import cache_root, vivado_headers
from conveyor.errors import CodegenError

CXXFLAGS = ("-std=c++14", "-O1", "-w")


def _compiler() -> str:
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if not cxx:
        raise CodegenError("C simulation needs g++ (or $CXX): none found on PATH")
    return cxx


#: what every board's C simulation includes from ap_types, nnet_utils and the C++ library,
#: precompiled once per (headers, compiler, flags) under $CONVEYOR_CACHE/csim/pch-*: parsing it
#: is ~1.4 s of a board's g++ time (docs/codegen.md); board code and conveyor's headers are not in it
PCH_INCLUDES = ("cmath", "cstdio", "cstdlib", "string", "vector", "ap_fixed.h", "ap_int.h", "hls_stream.h",
                "nnet_common.h", "nnet_mult.h", "nnet_dense.h", "nnet_dense_latency.h", "nnet_activation.h",
                "nnet_conv2d.h", "nnet_pooling.h", "nnet_merge.h", "nnet_batchnorm.h")
_PCH_LOCK = threading.Lock()


def _cxx_version(cxx: str) -> str:
    return subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout


def _pch(cxx: str) -> Path | None:
    """The precompiled PCH_INCLUDES for `cxx` and CXXFLAGS (built on first use), or None when
    g++ cannot make one (the build then parses the headers itself: slower, the same code)."""
    ap_dir, nnet_dir, digest = vivado_headers()
    key = hashlib.sha256(repr((digest, _cxx_version(cxx), CXXFLAGS, PCH_INCLUDES)).encode()).hexdigest()[:20]
    d = cache_root() / "csim" / f"pch-{key}"
    header = d / "conveyor_pch.h"
    with _PCH_LOCK:
        if (d / "conveyor_pch.h.gch").is_file():
            return header
        d.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="pch-", dir=d.parent))
        try:
            text = "".join(f"#include <{h}>\n" if "." not in h else f'#include "{h}"\n' for h in PCH_INCLUDES)
            (tmp / "conveyor_pch.h").write_text("// conveyor csim: precompiled headers (conveyor/codegen/csim.py)\n" + text)
            p = subprocess.run([cxx, *CXXFLAGS, "-isystem", str(ap_dir), "-I", str(nnet_dir), "-x", "c++-header",
                                str(tmp / "conveyor_pch.h"), "-o", str(tmp / "conveyor_pch.h.gch")],
                               capture_output=True, text=True, check=False)
            if p.returncode:
                return None
            os.chmod(tmp, 0o755)   # mkdtemp makes it private; the cache is shared like the executables
            try:
                os.rename(tmp, d)
            except OSError:   # another process made it first
                pass
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return header if (d / "conveyor_pch.h.gch").is_file() else None


def _unity(board_dir: Path) -> Path:
    """One translation unit holding the board's top function and its testbench (the headers
    parsed once, one compiler process): a file under $CONVEYOR_CACHE/csim/src naming both."""
    board_dir = Path(board_dir).resolve()
    top = next((board_dir / "firmware").glob("*_top.cpp"))
    text = f'#include "{top}"\n#include "{board_dir / "tb" / "tb.cpp"}"\n'
    src = cache_root() / "csim" / "src" / (hashlib.sha256(text.encode()).hexdigest()[:20] + ".cpp")
    if not src.is_file() or src.read_text() != text:
        src.parent.mkdir(parents=True, exist_ok=True)
        tmp = src.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, src)
    return src


def _gxx(cxx: str, board_dir: Path, *extra: str) -> list[str]:
    """g++ over one board: its top function and testbench as one translation unit, with the
    precompiled ap_types / nnet_utils headers (PCH_INCLUDES) when g++ can make them."""
    ap_dir, nnet_dir, _ = vivado_headers()
    pch = _pch(cxx)
    return [cxx, *CXXFLAGS, *(("-include", str(pch)) if pch else ()), "-isystem", str(ap_dir), "-I", str(nnet_dir),
            "-I", str(Path(board_dir).resolve() / "firmware"), str(_unity(board_dir)), *extra]


def check_syntax(board_dir: Path) -> float:
    """g++ -fsyntax-only over one board's firmware and testbench (no object code: a quick check
    for boards too large to C-simulate in a test); returns the seconds it took."""
    board_dir = Path(board_dir)
    t0 = time.perf_counter()
    p = subprocess.run(_gxx(_compiler(), board_dir, "-fsyntax-only"), capture_output=True, text=True, check=False)
    if p.returncode:
        raise CodegenError(f"{board_dir.name}: g++ -fsyntax-only failed: {(p.stdout + p.stderr)[-3000:]}")
    return time.perf_counter() - t0


def build_board(board_dir: Path, extra: tuple[str, ...] = ()) -> tuple[Path, float, bool]:
    """(executable, seconds compiling, cached) for one board folder; `extra`: more g++ flags
    (BOUNDED_FIFOS: an io_stream board's FIFOs at their stated depths, one thread per process)."""
    cxx = _compiler()
    _, _, digest = vivado_headers()
    h = hashlib.sha256(repr((digest, _cxx_version(cxx), CXXFLAGS, PCH_INCLUDES, *extra)).encode())
    for p in sorted((board_dir / "firmware").rglob("*.h")) + sorted((board_dir / "firmware").glob("*.cpp")) \
            + sorted((board_dir / "tb").glob("*.cpp")):
        h.update(str(p.relative_to(board_dir)).encode() + p.read_bytes())
    exe = cache_root() / "csim" / h.hexdigest()[:20] / "csim"
    if exe.is_file():
        return exe, 0.0, True
    exe.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="build-", dir=exe.parent.parent))
    t0 = time.perf_counter()
    try:
        p = subprocess.run(_gxx(cxx, board_dir, *extra, "-o", str(tmp / "csim")), capture_output=True, text=True,
                           check=False)
        if p.returncode:
            raise CodegenError(f"{board_dir.name}: g++ failed: {(p.stdout + p.stderr)[-3000:]}")
        os.replace(tmp / "csim", exe)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return exe, time.perf_counter() - t0, False


#: g++ flags of the bounded-FIFO C simulation of an io_stream board (include/conveyor_linebuf.h):
#: every DATAFLOW process a thread, every FIFO at exactly its stated depth, "deadlock" (exit 4)
#: when every process waits
BOUNDED_FIFOS = ("-DCONVEYOR_BOUNDED_FIFOS", "-pthread")

#: the C simulation keeps a board's arrays on the stack, as the HLS top does (a VGG board's
#: 224 x 224 x 64 activations and nnet's per-layer product arrays are tens of MB)
CSIM_STACK_BYTES = 4 << 30


def _big_stack() -> None:
    """In the csim child before exec: a main-thread stack of CSIM_STACK_BYTES (or the hard limit)."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = CSIM_STACK_BYTES if hard == resource.RLIM_INFINITY else min(hard, CSIM_STACK_BYTES)
    resource.setrlimit(resource.RLIMIT_STACK, (want, hard))


@dataclass
class BoardRun:
    device: str
    items: int
    seconds: float
    build_s: float
    cached: bool
    outputs: dict = field(default_factory=dict)   # tensor -> float64 values, items on axis 0
    #: a stage split by output channel: one run per device (its slice); `outputs` holds the gather
    parts: list = field(default_factory=list)

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else float("inf")


def _raw(values: np.ndarray, fmt) -> np.ndarray:
    return np.asarray(fmt.quantize_raw(values.reshape(-1)), dtype=np.int64)


def _from_bits(bits: np.ndarray, fmt) -> np.ndarray:
    w = fmt.width
    v = bits.astype(np.uint64) & np.uint64((1 << w) - 1) if w < 64 else bits.astype(np.uint64)
    v = v.astype(np.int64)
    if fmt.signed and w < 64:
        v = np.where(v >= (1 << (w - 1)), v - (1 << w), v)
    return v.astype(np.float64) * 2.0 ** -fmt.frac_bits


def run_chain(out_dir, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[BoardRun]]:
    """Run the compiled boards in pipeline order on `inputs` (model input name -> values with
    items on axis 0, already on the input format's grid or cast to it); returns the values
    of every tensor the boards produced and one BoardRun per board."""
    out_dir = Path(out_dir)
    manifest = json.loads((out_dir / "manifest.json").read_text())
    if manifest.get("hosts"):
        raise CodegenError(f"{out_dir}: the plan has host stages {[h['device'] for h in manifest['hosts']]}; "
                           "csim chains FPGA boards only")
    boards = [b for b in manifest["boards"] if b.get("replica_of") is None]
    with cf.ThreadPoolExecutor(max(1, min(len(boards), os.cpu_count() or 1))) as pool:
        builds = list(pool.map(lambda b: build_board(out_dir / b["device"]), boards))
    n_items = len(next(iter(inputs.values())))
    env = {k: np.asarray(v, dtype=np.float64).reshape(n_items, -1) for k, v in inputs.items()}
    runs, split = [], []
    for b, (exe, build_s, cached) in zip(boards, builds):
        t0 = time.perf_counter()
        outputs = run_board(exe, b, env, out_dir / b["device"] / "firmware" / "weights")
        run = BoardRun(b["device"], n_items, time.perf_counter() - t0, build_s, cached, outputs)
        if "split" not in b:
            env.update(outputs)
            runs.append(run)
            continue
        split.append(run)   # a slice of a split stage: the stage's result once every slice has run
        if len(split) == b["split"]["ways"]:
            runs.append(gather(split))
            env.update(runs[-1].outputs)
            split = []
    return env, runs


def gather(parts: list[BoardRun]) -> BoardRun:
    """The result of a stage split by output channel from its slices' runs (in device order):
    each tensor's slices one after another (channels-first order: a channel slice is a block)."""
    outputs = {t: np.concatenate([p.outputs[t] for p in parts], axis=1) for t in parts[0].outputs}
    return BoardRun(parts[0].device, parts[0].items, sum(p.seconds for p in parts), sum(p.build_s for p in parts),
                    all(p.cached for p in parts), outputs, parts=list(parts))


def run_board(exe: Path, board: dict, env: dict[str, np.ndarray], weights_dir: Path,
              tdest_file: Path | None = None) -> dict[str, np.ndarray]:
    """One board's C simulation on the values of its input port's tensors (`env`: tensor ->
    values, items on axis 0); returns its output port's tensors, items on axis 0.
    `tdest_file`: the testbench writes each output beat's TDEST there (uint64)."""
    from conveyor.numerics.config import parse_format

    port_in, port_out = board["ports"]
    n_items = len(env[port_in["tensors"][0]["tensor"]])
    with tempfile.TemporaryDirectory() as tmp:
        cols = []
        for t in port_in["tensors"]:
            fmt = parse_format(t["element_type"])
            cols.append(_raw(fmt.quantize(np.asarray(env[t["tensor"]], np.float64)), fmt).reshape(n_items, -1))
        np.concatenate(cols, axis=1).astype("<i8").tofile(Path(tmp) / "in.raw")
        p = subprocess.run([str(exe), str(Path(tmp) / "in.raw"), str(Path(tmp) / "out.raw"),
                            *((str(tdest_file),) if tdest_file is not None else ())],
                           capture_output=True, text=True, check=False,
                           env={**os.environ, "CONVEYOR_WEIGHTS": str(weights_dir)}, preexec_fn=_big_stack)
        if p.returncode:
            raise CodegenError(f"board {board['device']}: C simulation exited {p.returncode}: {p.stderr[-1000:]}")
        bits = np.fromfile(Path(tmp) / "out.raw", dtype="<u8").reshape(n_items, -1)
    outputs, at = {}, 0
    for t in port_out["tensors"]:
        outputs[t["tensor"]] = _from_bits(bits[:, at:at + t["items"]], parse_format(t["element_type"]))
        at += t["items"]
    return outputs


@dataclass(frozen=True)
class Mismatch:
    board: str
    tensor: str
    layer: str
    item: int
    index: int
    csim: float
    emulator: float

    def __str__(self) -> str:
        return (f"board {self.board}, layer {self.layer} (tensor {self.tensor}), item {self.item} value {self.index}: "
                f"csim {self.csim!r} vs emulator {self.emulator!r}")


def compare(graph, precision, inputs: dict[str, np.ndarray], runs: list[BoardRun]) -> Mismatch | None:
    """The first value (in pipeline order) where a board's output differs from the emulator's."""
    from conveyor.graph.quantized import Emulator

    wanted = sorted({t for r in runs for t in r.outputs})
    n = len(next(iter(inputs.values())))
    from conveyor.errors import ModelError

    try:
        g = graph.with_batch(n) if all(graph.tensors[k].shape[:1] == (1,) for k in inputs) and \
            graph.inputs[0].shape[0] != n else graph
    except ModelError:   # shapes fixed to batch 1 (an exporter's Reshape [seq, 1, ...]): item by item
        g = None
    if g is None:
        emu = Emulator(graph, precision)
        outs = [emu.run({k: np.asarray(v, dtype=np.float64)[i].reshape(graph.tensors[k].shape) for k, v in inputs.items()},
                        fetch=wanted)[0] for i in range(n)]
        ref = {t: np.stack([np.asarray(o[t]).reshape(-1) for o in outs]) for t in wanted}
    elif all(graph.tensors[k].shape[:1] == (1,) for k in inputs):
        feeds = {k: np.asarray(v, dtype=np.float64).reshape((n, *graph.tensors[k].shape[1:])) for k, v in inputs.items()}
        ref, _ = Emulator(g, precision).run(feeds, fetch=wanted)
    else:   # an item is the whole input (a sequence [seq, 1, n]): n of them stacked, as graph.run takes them
        ref = graph.run({k: np.asarray(v, dtype=np.float64).reshape((n, *graph.tensors[k].shape))
                         for k, v in inputs.items()}, precision=precision, fetch=wanted)
    for r in runs:
        for t, got in r.outputs.items():
            want = np.asarray(ref[t], dtype=np.float64).reshape(n, -1)
            bad = np.argwhere(got != want)
            if len(bad):
                i, j = (int(v) for v in bad[0])
                prod = graph.producer(t)
                device = r.device
                if r.parts:   # a split stage: the slice (device) holding value j
                    ends = np.cumsum([p.outputs[t].shape[1] for p in r.parts])
                    device = r.parts[int(np.searchsorted(ends, j, side="right"))].device
                return Mismatch(device, t, prod.name if prod is not None else "(input)", i, j,
                                float(got[i, j]), float(want[i, j]))
    return None
