"""Benchmark of the bit-accurate emulator (docs/numerics.md).  A script, not a test:

    python benchmarks/numerics.py [--samples 20000] [--repeat 5] [--skip-hls4ml]

Every figure is a ratio measured side by side in this one run, on this machine:

(a) Fixed-point emulation at ap_fixed<16,6> (`Graph.run(x, precision="ap_fixed<16,6>")`,
    the default config: exact accumulators) of alexnet-conv and resnet18, against
    onnxruntime float32 on the same input (CPUExecutionProvider, default threads). The two
    run alternately after warm-up; the medians are compared. Target: <= 2x.
(b) Samples per second of conveyor's batched bit-accurate emulation (`graph.run` on the
    whole batch at once) against hls4ml 1.3.0's own C simulation (`compile()` then
    `predict()`) of the same network on the same inputs, for an MLP, a CNN and an LSTM
    (benchmarks/hls4ml_models.py; conveyor imports them with `from_torch`), each at
    hls4ml's default types (`hls4ml:ap_fixed<16,6>`: accumulators of the model precision,
    every product rounded, sums wrapping; the CNN in hls4ml io_parallel's order) and with
    exact accumulators (conveyor `accum: auto`; hls4ml every accumulator ap_fixed<48,24>,
    wide enough for these sums). hls4ml runs in its own virtual environment (created on
    first use under $CONVEYOR_CACHE or ~/.cache/conveyor: bench-hls4ml-venv) through the
    child script benchmarks/hls4ml_csim.py. Emulator construction and hls4ml's compile
    are not timed. Target: >= 50x, six ratios.
(c) Whether the two agree bit for bit on every output value of (b).

hls4ml's granularity="model" config is what `hls4ml:<format>` mirrors (docs/numerics.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conveyor import zoo  # noqa: E402
from conveyor.graph.quantized import emulator_for  # noqa: E402

HLS4ML_PINS = ["hls4ml==1.3.0", "torch==2.13.0"]
TARGET_EMU = 2.0      # (a): emulation time / onnxruntime time at most this
TARGET_SPEEDUP = 50.0  # (b): conveyor samples/s / hls4ml samples/s at least this

#: (b): config label -> (conveyor precision config, hls4ml accum override or None)
WIDE_ACCUM = "ap_fixed<48,24>"  # exact for these nets: <= 400 products of |x| < 32, |w| < 1 on a 2^-20 grid
#: hls4ml's LSTM takes no accum_t other than its result type (nnet_recurrent.h hands its accum_t
#: arrays to nnet::dense as res_T: it does not compile), so its exact-accum run keeps its defaults
#: (the C simulation's speed hardly depends on the widths); conveyor's is exact
WIDE_ACCUM_LSTM = None
BENCH_CONFIGS = {
    "hls4ml defaults": ({"default": "hls4ml:ap_fixed<16,6>"}, None),
    "exact accum": ({"default": "hls4ml:ap_fixed<16,6>", "accum": "auto"}, WIDE_ACCUM),
}
#: the layers of each benchmark net with an accumulator (hls4ml layer names = module names)
ACCUM_LAYERS = {"mlp": ["fc1", "fc2", "fc3", "fc_out", "softmax"], "cnn": ["conv1", "conv2", "fc"],
                "lstm": ["lstm", "fc"]}


def cache_dir() -> Path:
    return Path(os.environ.get("CONVEYOR_CACHE") or Path.home() / ".cache" / "conveyor")


def say(msg: str = "") -> None:
    print(msg, flush=True)


# ---- (a) emulation vs onnxruntime -----------------------------------------------------------------

def bench_emulation(name: str, precision: str, repeat: int) -> dict:
    import onnxruntime as ort

    graph = zoo.build(name)
    sess = ort.InferenceSession(zoo.build_onnx(name).SerializeToString(), providers=["CPUExecutionProvider"])
    inp = graph.inputs[0]
    x = np.random.default_rng(0).standard_normal(inp.shape).astype(np.float32)
    feed = {sess.get_inputs()[0].name: x}
    t0 = time.perf_counter()
    emulator_for(graph, precision)  # built once: formats resolved, weights quantized
    build_s = time.perf_counter() - t0
    t_ort, t_emu = [], []
    # Blocks of runs, alternating between the two, so that both see the same machine load;
    # each block starts with an untimed run: right after a switch, the other's idle worker
    # threads (onnxruntime's spin, then OpenBLAS's) still hold the cores for a while.
    for _ in range(3):
        for times, run in ((t_ort, lambda: sess.run(None, feed)), (t_emu, lambda: graph.run(x, precision=precision))):
            run()
            for _ in range(repeat):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
    ort_s, emu_s = statistics.median(t_ort), statistics.median(t_emu)
    return {"model": name, "ort_s": ort_s, "emu_s": emu_s, "ratio": emu_s / ort_s, "build_s": build_s}


# ---- (b) hls4ml's C simulation ------------------------------------------------------------------------

def hls4ml_python(explicit: str | None) -> Path:
    """The python of a virtual environment with hls4ml 1.3.0 and torch; created when missing."""
    if explicit:
        return Path(explicit)
    venv = cache_dir() / "bench-hls4ml-venv"
    py = venv / "bin" / "python"
    check = "import hls4ml, torch; assert hls4ml.__version__ == '1.3.0', hls4ml.__version__"
    if py.exists() and subprocess.run([str(py), "-c", check], capture_output=True, check=False).returncode == 0:
        return py
    say(f"creating {venv} ({' '.join(HLS4ML_PINS)}; a few minutes, once)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    for cmd in ([sys.executable, "-m", "venv", "--clear", str(venv)],
                [str(py), "-m", "pip", "install", "-q", *HLS4ML_PINS], [str(py), "-c", check]):
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed ({r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    return py


def hls4ml_config(model: str, accum: str | None) -> dict:
    """hls4ml's config for a benchmark net: granularity="model" at ap_fixed<16,6>, plus
    `accum` for every accumulator when given."""
    cfg = {"Model": {"Precision": {"default": "ap_fixed<16,6>"}, "ReuseFactor": 1, "Strategy": "Latency",
                     # the LSTM's [steps, features] input is no image: no channels-last transpose
                     "ChannelsLastConversion": "off" if model == "lstm" else "full",
                     "TransposeOutputs": False, "BramFactor": 1_000_000_000, "TraceOutput": False}}
    if accum:
        accum = WIDE_ACCUM_LSTM if model == "lstm" else accum
    if accum:
        cfg["LayerName"] = {name: {"Precision": {"accum": accum}} for name in ACCUM_LAYERS[model]}
    return cfg


def run_hls4ml(py: Path, model: str, weights: Path, x_path: Path, config: dict, workdir: Path,
               repeat: int) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "hls_config.json").write_text(json.dumps(config, indent=1))
    cmd = [str(py), str(ROOT / "benchmarks" / "hls4ml_csim.py"), model, str(weights), str(x_path),
           str(workdir / "hls_config.json"), str(workdir / "out.npz"), str(workdir / "prj"), str(repeat)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"hls4ml child failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dict(np.load(workdir / "out.npz"))


def bench_conveyor(graph, x: np.ndarray, precision, repeat: int) -> dict:
    emulator_for(graph, precision)  # built once (not timed, like hls4ml's compile)
    y = graph.run(x, precision=precision)  # warm-up: builds the graph at this batch (and compiles kernels) once
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        y = graph.run(x, precision=precision)  # the whole batch in one vectorised execution
        times.append(time.perf_counter() - t0)
    y = y[graph.output_names[0]] if isinstance(y, dict) else y
    return {"y": np.asarray(y, np.float64).reshape(len(x), -1), "times": times}


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=20_000, help="samples per net for (b) and (c)")
    ap.add_argument("--nets", default="mlp,cnn,lstm", help="nets of (b): mlp, cnn, lstm")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--models", default="alexnet-conv,resnet18", help="models of (a)")
    ap.add_argument("--precision", default="ap_fixed<16,6>", help="precision of (a)")
    ap.add_argument("--skip-hls4ml", action="store_true", help="only (a) (for debugging)")
    ap.add_argument("--hls4ml-python", default=None, help="python of an existing hls4ml 1.3.0 venv")
    ap.add_argument("--keep", default=None, help="keep hls4ml's projects and files in this folder")
    args = ap.parse_args(argv)

    import onnxruntime as ort

    say(f"machine: {platform.machine()} {platform.processor() or ''}, {os.cpu_count()} logical cores "
        f"(shared), python {platform.python_version()}, numpy {np.__version__}, onnxruntime {ort.__version__}")
    summary = []

    say(f"\n(a) emulation at {args.precision} (accum 'auto' = exact) vs onnxruntime float32, batch 1, "
        f"median of 3 x {args.repeat} runs each")
    for name in args.models.split(","):
        r = bench_emulation(name, args.precision, args.repeat)
        say(f"  {name:14s} onnxruntime {r['ort_s'] * 1e3:7.1f} ms   emulation {r['emu_s'] * 1e3:7.1f} ms   "
            f"ratio {r['ratio']:.2f}x (target <= {TARGET_EMU:g}x)   [emulator built once in {r['build_s']:.2f} s]")
        summary.append((f"(a) {name} emulation / onnxruntime", f"{r['emu_s'] * 1e3:.1f} ms",
                        f"{r['ort_s'] * 1e3:.1f} ms", f"{r['ratio']:.2f}x", f"<= {TARGET_EMU:g}x",
                        r["ratio"] <= TARGET_EMU))

    agree = True
    if not args.skip_hls4ml:
        import torch

        sys.path.insert(0, str(ROOT / "benchmarks"))
        import hls4ml_models

        from conveyor.frontends.torch import from_torch

        py = hls4ml_python(args.hls4ml_python)
        tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="conveyor-bench-hls4ml-"))
        say(f"\n(b) {args.samples:,} samples (N(0,1) inputs): conveyor emulation batched vs hls4ml "
            f"{HLS4ML_PINS[0].split('==')[1]} C simulation (predict), median of {args.repeat} / 3 runs")
        agreement = []
        for model in args.nets.split(","):
            module = hls4ml_models.build(model, seed=0)
            shape = hls4ml_models.SHAPES[model][0]
            graph = from_torch(module, torch.zeros((1,) + shape))
            x = np.random.default_rng(1).standard_normal((args.samples,) + shape).astype(np.float32)
            mdir = tmp / model
            mdir.mkdir(parents=True, exist_ok=True)
            torch.save(module.state_dict(), mdir / "weights.pt")
            np.save(mdir / "x.npy", x)
            for label, (cfg, accum) in BENCH_CONFIGS.items():
                if model == "cnn":
                    cfg = {**cfg, "order": "hls4ml_io_parallel"}  # hls4ml io_parallel's Dense after Flatten
                hls = run_hls4ml(py, model, mdir / "weights.pt", mdir / "x.npy", hls4ml_config(model, accum),
                                 mdir / label.replace(" ", "_"), 3)
                conv = bench_conveyor(graph, x, cfg, args.repeat)
                rate_h = args.samples / statistics.median(hls["predict_s"])
                rate_c = args.samples / statistics.median(conv["times"])
                ratio = rate_c / rate_h
                say(f"  {model:4s} [{label}] hls4ml {fmt_rate(rate_h):>10s} (compile {float(hls['compile_s']):.1f} s)"
                    f"   conveyor {fmt_rate(rate_c):>12s}   ratio {ratio:,.1f}x (target >= {TARGET_SPEEDUP:g}x)")
                summary.append((f"(b) {model} samples/s [{label}]", fmt_rate(rate_c), fmt_rate(rate_h),
                                f"{ratio:,.1f}x", f">= {TARGET_SPEEDUP:g}x", ratio >= TARGET_SPEEDUP))
                bad = int((conv["y"] != hls["y"]).sum())
                agreement.append((f"(c) {model} bit agreement [{label}]", f"{bad} of {hls['y'].size:,} differ",
                                  f"max |diff| {float(np.abs(conv['y'] - hls['y']).max()):.3g}", "", "0", bad == 0))
        summary += agreement
        agree = all(row[5] for row in agreement)
        if args.keep:
            say(f"  hls4ml projects, configs and outputs: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    say("\nsummary")
    widths = [max(len(str(row[i])) for row in summary + [("figure", "conveyor", "reference", "ratio",
                                                          "target")]) for i in range(5)]
    head = ("figure", "conveyor", "reference", "ratio", "target")
    say("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  met")
    for row in summary:
        say("  " + "  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths)) + f"  {'yes' if row[5] else 'NO'}")
    if not agree:
        say("  (c): outputs differ where marked NO (hls4ml 1.3.0's PyTorch LSTM does not compute torch's LSTM: "
            "see docs/numerics.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
