"""Code generation and C simulation, measured side by side. A script, not a test:

    python benchmarks/codegen.py [--models jet-mlp:1 digits-cnn:2 alexnet-conv:4 resnet18:4] [--vgg] [--hls4ml]
                                 [--io-types io_parallel io_stream]

Per (zoo model, boards offered) at ap_fixed<16,6> (the plan may use fewer boards: the table says how many):
1. `conveyor.compile` (plan -> HLS projects): wall time and the Python process's peak memory
   (tracemalloc peak of the compile call);
2. per board, a cold g++ build of its C simulation (no cache; the precompiled ap_types /
   nnet_utils headers, made once per machine, are used): wall time and g++'s peak resident
   memory (os.wait4's ru_maxrss of that one process);
3. the chained C simulation of N items: items/s, against the emulator's batched `graph.run`
   on the same items (the ratio csim / emulator), and whether every output value is equal.
`--vgg` adds vgg16-conv on 8 boards (8 builds of ~20-40 s each; 1 item). `--hls4ml` adds
hls4ml 1.3.0's own C simulation (`predict()`, its venv as benchmarks/numerics.py makes it)
of the jet MLP on the same inputs: items/s beside conveyor's csim of the same network.
`--io-types io_parallel io_stream` compiles each model both ways (codegen/stream.py) and
measures them side by side in one run.
Wall times on a shared machine include waiting for the CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from conveyor.cli import _resolve_cluster, _resolve_model  # noqa: E402
from conveyor.codegen import compile as compile_plan  # noqa: E402
from conveyor.codegen.csim import _compiler, _gxx, compare, run_board  # noqa: E402
from conveyor.planner import plan  # noqa: E402

Q16 = "ap_fixed<16,6>"
ITEMS = {"jet-mlp": 2000, "digits-cnn": 360, "alexnet-conv": 2, "resnet18": 1, "vgg16-conv": 1}


def inputs(model: str, graph, n: int) -> np.ndarray:
    if model == "digits-cnn":
        from conveyor.zoo import digits_dataset

        return digits_dataset("test")[0][:n].astype(np.float64)
    shape = graph.inputs[0].shape[1:]
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)) * 2.0 if model == "jet-mlp" else rng.uniform(0, 1, size=(n, *shape))


def cold_build(board_dir: Path, exe: Path) -> tuple[float, float]:
    """(seconds, peak MiB) of one g++ process building the board's C simulation."""
    t0 = time.perf_counter()
    p = subprocess.Popen(_gxx(_compiler(), board_dir, "-o", str(exe)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read().decode(errors="replace")
    p.stdout.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode:
        raise SystemExit(f"{board_dir.name}: g++ failed:\n{out[-3000:]}")
    return time.perf_counter() - t0, usage.ru_maxrss / 1024


def bench(model: str, boards: int, work: Path, io_type: str = "io_parallel") -> dict:
    graph = _resolve_model(model)
    p = plan(graph, _resolve_cluster(f"zynq7035:{boards}"), precision=Q16)
    out = work / f"{model}-{boards}-{io_type}"
    tracemalloc.start()
    t0 = time.perf_counter()
    manifest = compile_plan(p, graph, out, io_type=io_type)
    compile_s = time.perf_counter() - t0
    compile_mib = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    builds, exes = [], []
    for b in manifest["boards"]:
        exe = out / b["device"] / "csim"
        s, mib = cold_build(out / b["device"], exe)
        builds.append((b["device"], s, mib))
        exes.append(exe)
        print(f"  {model} {b['device']}: g++ {s:.1f} s, peak {mib:.0f} MiB", flush=True)
    x = inputs(model, graph, ITEMS[model])
    n = len(x)
    env = {graph.input_names[0]: x.reshape(n, -1)}
    t0 = time.perf_counter()
    runs = []
    from conveyor.codegen.csim import BoardRun

    for b, exe in zip(manifest["boards"], exes):
        t1 = time.perf_counter()
        o = run_board(exe, b, env, out / b["device"] / "firmware" / "weights")
        runs.append(BoardRun(b["device"], n, time.perf_counter() - t1, 0.0, False, o))
        env.update(o)
    csim_s = time.perf_counter() - t0
    xs = x.reshape((n, *graph.inputs[0].shape[1:]))
    gb = graph.with_batch(n)
    gb.run(xs, precision=p.precision)   # warm-up (builds the batched emulator)
    t0 = time.perf_counter()
    gb.run(xs, precision=p.precision)
    emu_s = time.perf_counter() - t0
    bad = compare(graph, p.precision, {graph.input_names[0]: xs}, runs)
    return {"model": model, "io_type": io_type, "boards": len(manifest["boards"]), "items": n, "compile_s": compile_s, "compile_mib": compile_mib,
            "builds": builds, "csim_per_s": n / csim_s, "emu_per_s": n / emu_s, "equal": bad is None, "bad": bad,
            "env": env, "x": x, "graph": graph, "plan": p}


def bench_hls4ml(res: dict, work: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numerics  # benchmarks/numerics.py: hls4ml's venv, its config, its child script

    py = numerics.hls4ml_python(None)
    graph, x = res["graph"], res["x"].astype(np.float32)
    cfg = numerics.hls4ml_config(graph, Q16)
    hls = numerics.run_hls4ml(py, graph, x, cfg, work / "hls4ml", trace_rows=0, repeat=3)
    per_s = len(x) / float(np.min(hls["predict_s"]))
    same = np.array_equal(np.asarray(hls["y"], np.float64).reshape(len(x), -1), res["env"]["output"])
    print(f"hls4ml 1.3.0 csim (predict, jet-mlp, {len(x)} items): {per_s:,.0f} items/s; conveyor csim "
          f"{res['csim_per_s']:,.0f} items/s (ratio conveyor / hls4ml {res['csim_per_s'] / per_s:.2f}); "
          f"outputs equal to conveyor's csim: {same}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="*", default=["jet-mlp:1", "digits-cnn:2", "alexnet-conv:4", "resnet18:4"])
    ap.add_argument("--vgg", action="store_true", help="also vgg16-conv on 8 boards")
    ap.add_argument("--hls4ml", action="store_true", help="also hls4ml 1.3.0's C simulation of jet-mlp")
    ap.add_argument("--io-types", nargs="*", default=["io_parallel"], choices=["io_parallel", "io_stream"],
                    help="compile each model as io_parallel and/or io_stream firmware")
    args = ap.parse_args(argv)
    todo = [(m.split(":")[0], int(m.split(":")[1])) for m in args.models] + ([("vgg16-conv", 8)] if args.vgg else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="conveyor-bench-codegen-") as tmp:
        for model, boards in todo:
            for io_type in args.io_types:
                print(f"{model} on {boards} zynq7035, {io_type} ...", flush=True)
                results.append(bench(model, boards, Path(tmp), io_type))
        print()
        print(f"{'model':14} {'io':>11} {'boards':>6} {'compile':>9} {'py peak':>8} {'g++ per board (max)':>22} "
              f"{'g++ peak':>9} {'csim/s':>9} {'emu/s':>9} {'csim/emu':>9} {'bit-exact':>9}")
        for r in results:
            gmax = max(s for _, s, _ in r["builds"])
            mem = max(m for _, _, m in r["builds"])
            print(f"{r['model']:14} {r['io_type']:>11} {r['boards']:>6} {r['compile_s']:>8.2f}s {r['compile_mib']:>6.0f}Mi "
                  f"{gmax:>21.1f}s {mem:>7.0f}Mi {r['csim_per_s']:>9.3g} {r['emu_per_s']:>9.3g} "
                  f"{r['csim_per_s'] / r['emu_per_s']:>9.3f} {str(r['equal']):>9}")
            if not r["equal"]:
                print(f"   first difference: {r['bad']}")
        if args.hls4ml:
            jet = next((r for r in results if r["model"] == "jet-mlp" and r["io_type"] == "io_parallel"), None)
            if jet is None:
                print("--hls4ml needs jet-mlp among --models")
            else:
                bench_hls4ml(jet, Path(tmp))
    return 0 if all(r["equal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
