"""Benchmark of the bit-accurate emulator (docs/numerics.md).  A script, not a test:

    python benchmarks/numerics.py [--samples 20000] [--repeat 5] [--skip-hls4ml]

Every figure is a ratio measured side by side in this one run, on this machine:

(a) Fixed-point emulation at ap_fixed<16,6> (`Graph.run(x, precision="ap_fixed<16,6>")`,
    the default config: exact accumulators) of alexnet-conv and resnet18, against
    onnxruntime float32 on the same input (CPUExecutionProvider, default threads). The two
    run alternately after warm-up; the medians are compared. Target: <= 2x.
(b) Samples per second of conveyor's emulation of the zoo's jet-mlp, batched
    (`graph.run` on the whole batch at once), against hls4ml 1.3.0's own C simulation of the same network
    at the same precision (`compile()` then `predict()`), under two precision configs:
    exact accumulators and ap_fixed<16,6> accumulators (every product rounded). hls4ml runs
    in its own virtual environment (created on first use under $CONVEYOR_CACHE or
    ~/.cache/conveyor: bench-hls4ml-venv) through the child script
    benchmarks/hls4ml_jet.py. Emulator construction and hls4ml's compile are not timed.
    Target: >= 50x.
(c) Whether the two agree bit for bit: every output value compared; the layer outputs of
    the first --trace samples are compared too (hls4ml's `trace()` against conveyor's
    `fetch=`), which names the first layer that differs when anything does.

The precision configs are conveyor configs; `hls4ml_config` maps each onto an hls4ml
config that sets every type and table hls4ml uses explicitly (no 'auto', no defaults).
"""

from __future__ import annotations

import argparse
import json
import math
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
from conveyor.numerics.config import PrecisionConfig  # noqa: E402
from conveyor.numerics.fixed import FixedType  # noqa: E402
from conveyor.ops import lut  # noqa: E402
from conveyor.ops.softmax import softmax_table_sizes  # noqa: E402

HLS4ML_PINS = ["hls4ml==1.3.0", "torch==2.13.0"]
TARGET_EMU = 2.0      # (a): emulation time / onnxruntime time at most this
TARGET_SPEEDUP = 50.0  # (b): conveyor samples/s / hls4ml samples/s at least this

#: hls4ml's softmax types and sizes (its defaults, written out)
HLS_TABLE = "ap_fixed<18,8,AP_RND,AP_SAT>"
TABLES = {
    "softmax": {"implementation": "stable"},
    "softmax_exp": {"size": 1024, "format": HLS_TABLE, "input": "ap_ufixed<15,5>"},
    "softmax_inv": {"size": 1024, "format": HLS_TABLE, "input": HLS_TABLE},
}
#: (b)/(c) configs: name -> conveyor precision config. The first is the headline: conveyor's
#: default (accum 'auto', exact; in hls4ml an explicit type wide enough, as its own 'auto'
#: infers); the second rounds every product into an ap_fixed<16,6> accumulator (hls4ml's
#: classic all-<16,6> config); the third rounds and saturates everywhere.
JET_CONFIGS = {
    "exact accum": {"default": "ap_fixed<16,6>", "accum": "auto",
                    "op_types": {"Softmax": {"accum": HLS_TABLE}}, "tables": TABLES},
    "<16,6> accum": {"default": "ap_fixed<16,6>", "accum": "ap_fixed<16,6>",
                     "op_types": {"Softmax": {"accum": HLS_TABLE}}, "tables": TABLES},
    "RND_CONV,SAT": {"default": "ap_fixed<16,6,AP_RND_CONV,AP_SAT>", "accum": "ap_fixed<24,10,AP_RND,AP_SAT>",
                     "op_types": {"Softmax": {"accum": HLS_TABLE}}, "tables": TABLES},
}


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


def exact_dense_accum(fx: FixedType, fw: FixedType, fb: FixedType | None, n_in: int) -> str:
    """An ap_fixed that holds every partial sum of a Dense exactly: what conveyor's 'auto'
    computes (the grid of the products and the bias, range K max|x| max|w| + max|b|)."""
    def mag(f):
        return max(abs(f.min_value), f.max_value)

    frac = max(fx.frac_bits + fw.frac_bits, fb.frac_bits if fb is not None else -10**9)
    bound = n_in * mag(fx) * mag(fw) + (mag(fb) if fb is not None else 0.0)
    integer = math.floor(math.log2(bound)) + 2  # sign bit + every value below 2^(integer-1)
    return str(FixedType(integer + frac, integer))


def hls4ml_config(graph, precision) -> dict:
    """hls4ml's hls_config for the zoo's jet-mlp under the conveyor config `precision`: every
    type and table hls4ml uses, explicit (docs/numerics.md, "Kernels", items 3 and 6)."""
    cfg = PrecisionConfig.coerce(precision)
    fmt = {t: cfg.input_format() for t in graph.input_names}
    layers = {"input_1": {"Precision": {"result": str(cfg.input_format())}, "Trace": True}}
    for node in graph.nodes:
        p = cfg.for_node(node.name, node.op_type)
        fin = fmt[node.inputs[0]]
        if node.op_type == "Dense":  # fc1.matmul -> hls4ml Dense "fc1"
            w = graph.weights[node.inputs[1]]
            accum = p.accum if p.accum is not None else exact_dense_accum(fin, p.weight, p.bias, w.shape[0])
            layers[node.name.split(".")[0]] = {
                "Precision": {"weight": str(p.weight), "bias": str(p.bias), "result": str(p.result),
                              "accum": str(accum)},
                "ReuseFactor": 1, "Strategy": "Latency", "Trace": True}
        elif node.op_type == "Relu":  # nnet::relu: res = x > 0 ? (res_T) x : 0
            layers[node.name] = {"Precision": {"result": str(p.result), "table": "ap_fixed<18,8>"},
                                 "table_size": 1024, "ReuseFactor": 1, "Trace": True}
        elif node.op_type == "Softmax":
            impl = lut.settings(p, "softmax")["implementation"]
            es, vs = lut.settings(p, "softmax_exp"), lut.settings(p, "softmax_inv")
            exp_fmt, inv_fmt = FixedType.parse(es["format"]), FixedType.parse(vs["format"])
            inv_inp = FixedType.parse(vs.get("input", es["format"]))
            s = int(fin.signed)
            norm = (FixedType.parse(es["input"]) if "input" in es
                    else FixedType(fin.width - s, fin.integer - s, signed=False))
            n = graph.tensors[node.inputs[0]].shape[-1]
            if p.accum is not None:
                accum = str(p.accum)
            else:  # conveyor 'auto' = hls4ml's own derivation when accum_t is the model default
                g = math.ceil(math.log2(n))
                accum = str(FixedType(exp_fmt.width + g, exp_fmt.integer + g, exp_fmt.signed))
            n_exp, n_inv = softmax_table_sizes(fin, impl, int(es["size"]), int(vs["size"]), inv_fmt,
                                               norm if impl == "stable" else fin, inv_inp, str(node))
            layers[node.name] = {
                "Precision": {"result": str(p.result), "exp_table": str(exp_fmt), "inv_table": str(inv_fmt),
                              "inv_inp": str(inv_inp), "accum": accum},
                # explicit sizes: hls4ml's FixSoftmaxTableSize pass then leaves them alone, and an
                # explicit inp_norm_t keeps SoftmaxConfigTemplate from re-deriving exp_table_size
                # (from inv_table_size!) for a signed input
                "exp_table_size": n_exp, "inv_table_size": n_inv, "table_size": n_inv,
                "implementation": impl, "inp_norm_t": str(norm), "ReuseFactor": 1, "Trace": True}
        else:
            raise SystemExit(f"hls4ml_config: no mapping for {node.op_type} ({node.name})")
        for t in node.outputs:
            fmt[t] = p.result
    return {
        "Model": {"Precision": {"default": cfg.default}, "ReuseFactor": 1, "Strategy": "Latency",
                  "ChannelsLastConversion": "full", "TransposeOutputs": False, "BramFactor": 1_000_000_000,
                  "TraceOutput": False},
        "InputShape": [[int(graph.inputs[0].shape[-1])]],  # a list of shapes (JSON has no tuples)
        "LayerName": layers,
    }


#: hls4ml layer -> conveyor tensor (for the trace comparison)
TRACE_MAP = {"fc1": "fc1", "relu1": "relu1", "fc2": "fc2", "relu2": "relu2", "fc3": "fc3", "relu3": "relu3",
             "fc_out": "fc_out", "softmax": "output"}


def run_hls4ml(py: Path, graph, x: np.ndarray, config: dict, workdir: Path, trace_rows: int,
               repeat: int) -> dict:
    job = {"x": x, "trace_rows": np.array(trace_rows)}
    for node in graph.nodes:
        if node.op_type == "Dense":
            name = node.name.split(".")[0]
            job[f"W_{name}"] = np.asarray(graph.weights[node.inputs[1]], np.float32)
            job[f"b_{name}"] = np.asarray(graph.weights[node.inputs[2]], np.float32)
    workdir.mkdir(parents=True, exist_ok=True)
    np.savez(workdir / "job.npz", **job)
    (workdir / "hls_config.json").write_text(json.dumps(config, indent=1))
    cmd = [str(py), str(ROOT / "benchmarks" / "hls4ml_jet.py"), str(workdir / "job.npz"),
           str(workdir / "hls_config.json"), str(workdir / "out.npz"), str(workdir / "prj"), str(repeat)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode:
        raise SystemExit(f"hls4ml child failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return dict(np.load(workdir / "out.npz"))


def bench_conveyor_jet(graph, x: np.ndarray, precision, repeat: int, trace_rows: int) -> dict:
    emulator_for(graph, precision)  # built once (not timed, like hls4ml's compile)
    y = graph.run(x, precision=precision)  # warm-up; also builds the graph at this batch once
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        y = graph.run(x, precision=precision)  # the whole batch in one vectorised execution
        times.append(time.perf_counter() - t0)
    fetched = graph.run(x[:trace_rows], precision=precision, fetch=list(TRACE_MAP.values()))
    return {"y": y["output"] if isinstance(y, dict) else y, "times": times, "trace": fetched}


def compare(conv: dict, hls: dict) -> dict:
    yc, yh = np.asarray(conv["y"], np.float64).reshape(hls["y"].shape), hls["y"]
    bad = yc != yh
    res = {"values": int(yc.size), "mismatches": int(bad.sum()), "rows": int(bad.any(axis=1).sum()),
           "layers": [], "first": None}
    for layer, tensor in TRACE_MAP.items():
        key = f"trace_{layer}"
        if key not in hls:
            res["layers"].append((layer, None, None))
            continue
        a = np.asarray(conv["trace"][tensor], np.float64).reshape(hls[key].shape)
        d = a != hls[key]
        res["layers"].append((layer, int(d.sum()), int(d.size)))
        if d.any() and res["first"] is None:
            i = np.flatnonzero(d.ravel())[0]
            res["first"] = (layer, int(i), float(a.ravel()[i]), float(hls[key].ravel()[i]))
    return res


def fmt_rate(r: float) -> str:
    return f"{r:,.0f}/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=20_000, help="jet-mlp samples for (b) and (c)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per measurement (median)")
    ap.add_argument("--trace", type=int, default=2_000, help="samples whose layer outputs (c) compares")
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

    if not args.skip_hls4ml:
        graph = zoo.build("jet-mlp")
        x = np.random.default_rng(1).standard_normal((args.samples, 16)).astype(np.float32)
        py = hls4ml_python(args.hls4ml_python)
        tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="conveyor-bench-hls4ml-"))
        agreement = []
        trace_rows = min(args.trace, args.samples)
        say(f"\n(b) jet-mlp, {args.samples:,} samples (N(0,1) features): conveyor emulation batched vs "
            f"hls4ml {HLS4ML_PINS[0].split('==')[1]} C simulation (predict), median of {args.repeat} / 3")
        verdicts = []
        for label, cfg in JET_CONFIGS.items():
            hcfg = hls4ml_config(graph, cfg)
            hls = run_hls4ml(py, graph, x, hcfg, tmp / label.replace(" ", "_").replace("<", "").replace(">", "")
                             .replace(",", "_"), trace_rows, 3)
            conv = bench_conveyor_jet(graph, x, cfg, args.repeat, trace_rows)
            rate_h = args.samples / statistics.median(hls["predict_s"])
            rate_c = args.samples / statistics.median(conv["times"])
            ratio = rate_c / rate_h
            say(f"  [{label}] hls4ml {fmt_rate(rate_h):>12s} (compile {float(hls['compile_s']):.1f} s)   "
                f"conveyor {fmt_rate(rate_c):>14s}   ratio {ratio:,.0f}x (target >= {TARGET_SPEEDUP:g}x)")
            summary.append((f"(b) jet-mlp samples/s [{label}]", fmt_rate(rate_c), fmt_rate(rate_h),
                            f"{ratio:,.0f}x", f">= {TARGET_SPEEDUP:g}x", ratio >= TARGET_SPEEDUP))
            c = compare(conv, hls)
            verdicts.append((label, c))
            layer_diffs = sum(n or 0 for _, n, _ in c["layers"])
            say(f"  (c) [{label}] outputs: {c['mismatches']} of {c['values']:,} values differ "
                f"({c['rows']} of {args.samples:,} samples); layer outputs of the first {trace_rows:,}: "
                + ", ".join(f"{layer} {'-' if n is None else n}" for layer, n, _ in c["layers"]))
            if c["first"]:
                layer, i, a, b = c["first"]
                say(f"      first differing layer: {layer} (flat index {i}: conveyor {a!r}, hls4ml {b!r})")
            y = np.asarray(conv["y"]).reshape(args.samples, -1)
            say(f"      outputs: {len(np.unique(y)):,} distinct values, argmax histogram "
                f"{np.bincount(np.argmax(y, axis=1), minlength=y.shape[1]).tolist()}")
            agreement.append((f"(c) bit agreement [{label}]", f"{c['mismatches']} of {c['values']:,} differ",
                              f"traced layers: {layer_diffs} differ", "", "0",
                              c["mismatches"] == 0 and layer_diffs == 0))
        summary += agreement
        if args.keep:
            say(f"  hls4ml projects, configs and outputs: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        agree = all(row[5] for row in agreement)
        verdict = ("conveyor and hls4ml agree bit for bit on every output and traced layer value" if agree
                   else "conveyor and hls4ml DISAGREE (first differing layers above)")
        say(f"  verdict: {verdict}")

    say("\nsummary")
    widths = [max(len(str(row[i])) for row in summary + [("figure", "conveyor", "reference", "ratio",
                                                          "target")]) for i in range(5)]
    head = ("figure", "conveyor", "reference", "ratio", "target")
    say("  " + "  ".join(h.ljust(w) for h, w in zip(head, widths)) + "  met")
    for row in summary:
        say("  " + "  ".join(str(v).ljust(w) for v, w in zip(row[:5], widths)) + f"  {'yes' if row[5] else 'NO'}")
    if not args.skip_hls4ml:
        say(f"  verdict (c): {verdict}")
        return 0 if agree else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
