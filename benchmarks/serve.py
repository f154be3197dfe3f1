"""Benchmark of `conveyor serve`: what the HTTP front adds over the in-process Pipeline.
A script, not a test; loopback only, bounded in requests and seconds per load point:

    python benchmarks/serve.py [--models digits-cnn,alexnet-conv] [--requests 200] [--seconds 8]
                               [--paced-seconds 15] [--time-scale S] [--clients 1,4,16]
                               [--loads 0.25,0.5,0.9]

For each plan, the same harness drives three targets with the same inputs and the same
arrival schedules, one target at a time (never two at once on the shared cores), each load
point on the three in turn (so that the shared machine's drift falls on all alike):
  pipeline  the in-process Pipeline (`pipe.submit(x).result()`): the reference;
  triton    a `conveyor serve` subprocess called with `tritonclient.http` (binary tensors);
  raw       the same server called with a keep-alive `http.client` connection sending the
            binary tensor extension (JSON header + raw bytes, output asked as binary).
Load points:
  closed loop  1, 4, 16 clients, each sending its next request when its answer came back;
  open loop    Poisson arrivals at 25/50/90 % of the plan's throughput (a dispatcher hands
               each arrival at its time to a pool of 32 connections; latency runs from the
               scheduled arrival, so a stalled server cannot hide its queueing).
Plans:
  digits-cnn    planned here on 2 ZCU102 boards (equal split), not paced: the emulation is the
                bottleneck, so "the plan's throughput" for the open loop is the in-process
                pipeline's measured closed-loop throughput at 16 clients;
  alexnet-conv  the plan of record (docs/reports/alexnet-conv-zynq7035x4.plan.json), paced,
                in slow motion at the time scale benchmarks/runtime.py calibrates (its
                throughput: 1 / (modeled interval x scale)).
Every answer is checked bit for bit against graph.run for its input; a mismatch counts as an
error.

Overhead, two figures. "ovh": served percentile - pipeline percentile at the same load point
(the only one that closed loops allow: their arrivals depend on the answers). "paired", at
open-loop points: the percentile of the per-request difference, served latency minus the
in-process latency of the same arrival (same schedule, same input; both targets answered it
correctly). The target is read from the paired figure, and the old one is printed beside it:
the issue defines the overhead per request ("served latency minus the in-process Pipeline's
latency for the same requests"). On the paced plan the p99 of either run is the tail of the
schedule's queueing (quiet machine, 50 % load: in-process p50 ~295 ms, p99 ~565 ms); those
requests waited for stage 0 anyway, so time a served request loses on its way in can be
hidden at the very percentile the old figure reads, while pairing keeps it (reasoned from
the pacing model; not yet shown on a quiet machine: the only runs so far were at load 3-8,
where the stages overran the schedule and both figures read hundreds of ms). Target: batch-1 p99 overhead <= 1
ms at 50 % load, 0 errors; the ratio to it is printed, for both figures.

Server CPU per request (served points): the server process's CPU time over the point (all
its threads, from /proc/PID/task/*/schedstat; not its stage processes, nor the client) over
the requests answered; less sensitive to the shared machine's load than latency is.

What is measured: wall time on this machine (client, server and stages share its cores).
What is modeled: the paced plan's board and link times. Nothing here runs on an FPGA.
"""

from __future__ import annotations

import argparse
import http.client
import importlib.util
import json
import os
import platform
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

TARGET_P99_OVERHEAD_S = 1e-3  # the target: batch-1 p99 overhead at 50 % load
CLIENTS = (1, 4, 16)
LOADS = (0.25, 0.5, 0.9)
POOL = 32          # connections serving the open loop's arrivals
DISTINCT = 8       # distinct inputs, cycled (each checked against its graph.run reference)
HEADER = "Inference-Header-Content-Length"


def _runtime_bench():
    """benchmarks/runtime.py (its plan of record and its time-scale calibration)."""
    spec = importlib.util.spec_from_file_location("bench_runtime", os.path.join(ROOT, "benchmarks", "runtime.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- targets: each gives one caller per client thread: x -> output array ----------------------------

class InProcess:
    name = "pipeline"

    def __init__(self, pipe, output: str):
        self.pipe, self.output = pipe, output

    def caller(self):
        return lambda x: self.pipe.submit(x).result()[self.output]


class Triton:
    name = "triton"

    def __init__(self, port: int, model: str, input_name: str, output: str):
        self.url, self.model, self.input_name, self.output = f"127.0.0.1:{port}", model, input_name, output

    def caller(self):
        import tritonclient.http as httpclient

        client = httpclient.InferenceServerClient(url=self.url, concurrency=1, network_timeout=120.0)
        req_out = [httpclient.InferRequestedOutput(self.output, binary_data=True)]

        def call(x):
            inp = httpclient.InferInput(self.input_name, list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            return client.infer(self.model, [inp], outputs=req_out).as_numpy(self.output)
        return call


class Raw:
    name = "raw"

    def __init__(self, port: int, model: str, input_name: str, output: str):
        self.port, self.path, self.input_name, self.output = port, f"/v2/models/{model}/infer", input_name, output

    def caller(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)

        def call(x):
            raw = np.ascontiguousarray(x, "<f4").tobytes()
            head = json.dumps({"inputs": [{"name": self.input_name, "datatype": "FP32", "shape": list(x.shape),
                                           "parameters": {"binary_data_size": len(raw)}}],
                               "outputs": [{"name": self.output, "parameters": {"binary_data": True}}]}).encode()
            conn.request("POST", self.path, head + raw, {HEADER: str(len(head)),
                                                          "Content-Type": "application/octet-stream"})
            r = conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"HTTP {r.status}: {body[:200]!r}")
            n = int(r.getheader(HEADER))
            (meta,) = json.loads(body[:n])["outputs"]
            return np.frombuffer(body[n:], dtype="<f8").reshape(meta["shape"])
        return call


# -- load generators ---------------------------------------------------------------------------------

def closed_loop(target, xs, refs, clients: int, requests: int, seconds: float) -> dict:
    lat, errors, lock = [], [0], threading.Lock()
    counter = iter(range(requests))
    start = time.perf_counter()
    stop_at = start + seconds

    def client():
        call = target.caller()
        while time.perf_counter() < stop_at:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            t0 = time.perf_counter()
            try:
                ok = np.array_equal(call(xs[i % DISTINCT]), refs[i % DISTINCT])
            except Exception:  # noqa: BLE001 - counted
                ok = False
            t1 = time.perf_counter()
            with lock:
                (lat.append(t1 - t0) if ok else None)
                errors[0] += not ok

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return _summary(lat, errors[0], time.perf_counter() - start)


def poisson_schedule(rate: float, requests: int, seconds: float, seed: int) -> np.ndarray:
    gaps = np.random.default_rng(seed).exponential(1.0 / rate, requests)
    t = np.cumsum(gaps)
    return t[t <= seconds] if (t <= seconds).any() else t[:1]


def open_loop(target, xs, refs, schedule: np.ndarray) -> dict:
    lat, errors, lock = {}, [0], threading.Lock()  # latency by the arrival's index in the schedule
    jobs: queue.Queue = queue.Queue()

    def worker():
        call = target.caller()
        while (job := jobs.get()) is not None:
            i, due = job
            try:
                ok = np.array_equal(call(xs[i % DISTINCT]), refs[i % DISTINCT])
            except Exception:  # noqa: BLE001 - counted
                ok = False
            t1 = time.perf_counter()
            with lock:
                if ok:
                    lat[i] = t1 - due
                errors[0] += not ok

    pool = [threading.Thread(target=worker) for _ in range(POOL)]
    for t in pool:
        t.start()
    time.sleep(0.2)  # connections made before the first arrival
    start = time.perf_counter()
    for i, at in enumerate(schedule):
        due = start + at
        if (left := due - time.perf_counter()) > 0:
            time.sleep(left)  # no spinning: the cores are the server's; lateness counts in the latency
        jobs.put((i, due))
    for _ in pool:
        jobs.put(None)
    for t in pool:
        t.join()
    out = _summary(list(lat.values()), errors[0], time.perf_counter() - start)
    out["by_index"] = lat
    out["at"] = schedule  # arrival times: completion order = order of (at + latency)
    return out


def _summary(lat, errors: int, wall_s: float) -> dict:
    a = np.asarray(lat) if lat else np.full(1, np.nan)
    p50, p99, p999 = np.percentile(a, [50, 99, 99.9])
    return {"n": len(lat), "errors": errors, "throughput": len(lat) / wall_s, "p50": p50, "p99": p99, "p999": p999}


def server_cpu_s(pid: int | None) -> float | None:
    """CPU time of the server process so far, all its threads (not its stage processes),
    from /proc/PID/task/*/schedstat (ns, Linux); None elsewhere. Per request it is less
    sensitive to a shared machine's load than latency is."""
    if pid is None:
        return None
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except OSError:
                pass  # a thread that ended meanwhile
    except OSError:
        return None
    return total / 1e9


def _measured(target, run) -> dict:
    pid = getattr(target, "server_pid", None)
    c0 = server_cpu_s(pid)
    r = run()
    c1 = server_cpu_s(pid)
    r["cpu_us"] = (c1 - c0) / max(1, r["n"] + r["errors"]) * 1e6 if c0 is not None and c1 is not None else None
    return r


def run_points(targets, xs, refs, args, rate: float | None) -> tuple[dict, float]:
    """Every load point on every target in turn (interleaved, so that the shared machine's drift
    falls on all three alike); `rate` None: the pipeline's closed-loop rate at the most clients."""
    for target in targets:
        call = target.caller()
        for i in range(4):  # warm: lazy loads, connection set-up
            call(xs[i % DISTINCT])
    out = {t.name: {} for t in targets}
    for c in args.clients:
        for t in targets:
            out[t.name][("closed", c)] = r = _measured(t, lambda: closed_loop(t, xs, refs, c, args.requests,
                                                                              args.seconds))
            print(f"   {t.name:<9}closed {c:>2} clients: {_row(r)}", flush=True)
    if rate is None:
        if not args.clients:
            raise SystemExit("digits-cnn's open-loop rate is its closed-loop throughput: give --clients")
        rate = out[targets[0].name][("closed", args.clients[-1])]["throughput"]
    for f in args.loads:
        schedule = poisson_schedule(f * rate, args.requests, args.seconds, seed=int(f * 100))
        for t in targets:
            out[t.name][("open", f)] = r = _measured(t, lambda: open_loop(t, xs, refs, schedule))
            print(f"   {t.name:<9}open {f:>4.0%} ({f * rate:6.1f}/s): {_row(r)}", flush=True)
    return out, rate


def _row(r) -> str:
    return (f"n {r['n']:>4}  {r['throughput']:7.1f}/s  p50 {r['p50'] * 1e3:8.2f}  p99 {r['p99'] * 1e3:8.2f}  "
            f"p99.9 {r['p999'] * 1e3:8.2f} ms  errors {r['errors']}"
            + (f"  server CPU {r['cpu_us']:5.0f} us/request" if r.get("cpu_us") is not None else ""))


# -- one plan ----------------------------------------------------------------------------------------

class Server:
    def __init__(self, plan_path: str, model: str, paced_scale: float | None, max_queue: int):
        self.port = free_port()
        extra = ["--paced", "--time-scale", repr(paced_scale)] if paced_scale else []
        self.proc = subprocess.Popen([sys.executable, "-m", "conveyor.cli", "serve", plan_path, "--model", model,
                                      "--port", str(self.port), "--max-queue", str(max_queue), *extra],
                                     env=dict(os.environ, PYTHONPATH=os.path.abspath(ROOT)), cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                c.request("GET", "/v2/health/ready")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.proc.stdout.read()[-2000:]}")
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("server not ready in 300 s")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def bench_plan(label: str, plan, plan_path: str, graph, paced_scale: float | None, args) -> dict:
    from conveyor.runtime import Pipeline

    rng = np.random.default_rng(0)
    t = graph.inputs[0]
    xs = [rng.standard_normal(t.shape).astype(t.dtype) for _ in range(DISTINCT)]
    refs = [graph.run(x, precision=plan.precision)[graph.output_names[0]] for x in xs]
    out_name = graph.output_names[0]
    rate = 1.0 / (plan.interval_s * paced_scale) if paced_scale else None
    server = Server(plan_path, label, paced_scale, args.max_queue)
    try:
        with Pipeline(plan, graph, paced=bool(paced_scale), time_scale=paced_scale or 1.0,
                      max_in_flight=args.max_queue) as pipe:
            targets = [InProcess(pipe, out_name)] + [cls(server.port, graph.name, graph.input_names[0], out_name)
                                                    for cls in (Triton, Raw)]
            for t in targets[1:]:
                t.server_pid = server.proc.pid
            results, rate = run_points(targets, xs, refs, args, rate)
    finally:
        code = server.stop()
    if code != 0:
        print(f"   server exited with {code} on SIGTERM")
    return {"results": results, "rate": rate}


def _blocks(order_by_completion: list[int]) -> list[int]:
    """Block ends of a permutation: k ends a block when the first k+1 requests to complete
    are exactly the first k+1 to arrive (no reordering across the boundary)."""
    ends, hi = [], -1
    for k, rank in enumerate(order_by_completion):
        hi = max(hi, rank)
        if hi == k:
            ends.append(k)
    return ends


def paired_overhead(pipe: dict, served: dict) -> dict | None:
    """Per-request overhead at an open-loop point: served latency minus the in-process
    pipeline's latency for the same arrival of the same schedule (requests answered correctly
    by both), and its percentiles; None at closed-loop points (no shared schedule).

    Reordering. The paced stage 0 serves in the order requests reach it; two arrivals a few
    ms apart that reach it in the other order in one run than in the other trade places: the
    first waits a whole pace interval more, the second that much less, and the paired figure
    shows +interval / -interval for a pair the server delayed by a few ms only. `reordered`
    counts the requests in such groups (completion order not arrival order, in either run);
    "p99_grouped" is the p99 with each group's differences replaced by the group's mean (a
    swap moves waiting between the group's members and leaves the sum: the mean is what the
    group lost, the gap between the arrivals included)."""
    a, b = pipe.get("by_index"), served.get("by_index")
    if a is None or b is None:
        return None
    common = sorted(set(a) & set(b))
    if not common:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "p99_grouped": float("nan"), "reordered": 0}
    d = np.array([b[i] - a[i] for i in common])
    p50, p99 = np.percentile(d, [50, 99])
    at = served.get("at")
    grouped, reordered = d, 0
    if at is not None:
        ranks = {}
        for run in (a, b):
            done = sorted(range(len(common)), key=lambda k: at[common[k]] + run[common[k]])
            ranks[id(run)] = _blocks(done)
        ends = sorted(set(ranks[id(a)]) & set(ranks[id(b)]))
        grouped, start = d.copy(), 0
        for e in ends:
            if e > start:
                grouped[start:e + 1] = d[start:e + 1].mean()
                reordered += e + 1 - start
            start = e + 1
    return {"n": len(d), "p50": p50, "p99": p99, "p99_grouped": float(np.percentile(grouped, 99)),
            "reordered": reordered}


def print_table(label: str, res: dict) -> None:
    r = res["results"]
    print(f"\n   {label}: served (triton | raw) vs in-process pipeline, ms; ovh = served percentile - pipeline "
          "percentile; paired = percentile of (served - pipeline) per request of the same schedule (open loop)")
    print(f"   {'point':<16}{'pipe p50':>9}{'p99':>9}{'p99.9':>9}{'tri p50':>9}{'p99':>9}{'p99.9':>9}"
          f"{'raw p50':>9}{'p99':>9}{'p99.9':>9}{'ovh p50 tri/raw':>17}{'ovh p99 tri/raw':>17}"
          f"{'paired p50 tri/raw':>20}{'paired p99 tri/raw':>20}{'grouped p99 tri/raw':>20}"
          f"{'reordered tri/raw':>18}{'thr pipe/tri/raw':>20}"
          f"{'err':>5}{'srv CPU us/req tri/raw':>24}")
    for key in r["pipeline"]:
        p, tr, rw = r["pipeline"][key], r["triton"][key], r["raw"][key]
        name = f"closed {key[1]:>2}" if key[0] == "closed" else f"open {key[1]:.0%}"
        ms = lambda v: f"{v * 1e3:9.2f}" if v < 1 else f"{v * 1e3:9.0f}"  # noqa: E731
        print(f"   {name:<16}{ms(p['p50'])}{ms(p['p99'])}{ms(p['p999'])}{ms(tr['p50'])}{ms(tr['p99'])}"
              f"{ms(tr['p999'])}{ms(rw['p50'])}{ms(rw['p99'])}{ms(rw['p999'])}"
              f"{(tr['p50'] - p['p50']) * 1e3:>9.2f}/{(rw['p50'] - p['p50']) * 1e3:<7.2f}"
              f"{(tr['p99'] - p['p99']) * 1e3:>9.2f}/{(rw['p99'] - p['p99']) * 1e3:<7.2f}"
              f"{_paired(p, tr, rw, 'p50')}{_paired(p, tr, rw, 'p99')}{_paired(p, tr, rw, 'p99_grouped')}"
              f"{_reordered(p, tr, rw)}"
              f"{p['throughput']:>8.1f}/{tr['throughput']:.1f}/{rw['throughput']:.1f}"
              f"{p['errors'] + tr['errors'] + rw['errors']:>5}"
              f"{_cpu(tr):>16}/{_cpu(rw):<7}")
    if ("open", 0.5) not in r["pipeline"]:
        print("   target: not measured (no 50 % open-loop point in this run)")
        return
    for name in ("triton", "raw"):
        p, s = r["pipeline"][("open", 0.5)], r[name][("open", 0.5)]
        errors = f"errors {s['errors'] + p['errors']} ({'met' if s['errors'] + p['errors'] == 0 else 'MISSED'})"
        po = paired_overhead(p, s)
        for how, ovh in (("p99 of the per-request overhead", po["p99"]),
                         (f"the same, reordered groups averaged ({po['reordered']} requests)", po["p99_grouped"]),
                         ("old figure, p99 served - p99 in-process", s["p99"] - p["p99"])):
            verdict = ("MISSED" if ovh > TARGET_P99_OVERHEAD_S else
                       "met" if ovh >= 0 else "served below in-process: within this machine's noise")
            print(f"   target (50 % load, {name}, {how}): {ovh * 1e3:.2f} ms / {TARGET_P99_OVERHEAD_S * 1e3:g} ms "
                  f"= ratio {ovh / TARGET_P99_OVERHEAD_S:.2f} ({verdict}); {errors}")


def _paired(p, tr, rw, q: str) -> str:
    a, b = paired_overhead(p, tr), paired_overhead(p, rw)
    if a is None or b is None:
        return f"{'-':>20}"
    return f"{a[q] * 1e3:>12.2f}/{b[q] * 1e3:<7.2f}"


def _reordered(p, tr, rw) -> str:
    a, b = paired_overhead(p, tr), paired_overhead(p, rw)
    if a is None or b is None:
        return f"{'-':>18}"
    return f"{a['reordered']:>12}/{b['reordered']:<5}"


def _cpu(r) -> str:
    return "-" if r.get("cpu_us") is None else f"{r['cpu_us']:.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="digits-cnn,alexnet-conv", help="comma list of digits-cnn, alexnet-conv")
    ap.add_argument("--requests", type=int, default=200, help="requests per load point at most")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per load point at most")
    ap.add_argument("--paced-seconds", type=float, default=15.0,
                    help="seconds per load point at most on the paced plan (its requests take seconds)")
    ap.add_argument("--max-queue", type=int, default=64, help="the server's --max-queue (and the pipeline's)")
    ap.add_argument("--time-scale", type=float, default=None, help="alexnet-conv: override the calibrated scale")
    ap.add_argument("--clients", default=",".join(map(str, CLIENTS)),
                    help="closed-loop points: comma list of client counts ('' for none)")
    ap.add_argument("--loads", default=",".join(map(str, LOADS)),
                    help="open-loop points: comma list of fractions of the plan's throughput ('' for none)")
    args = ap.parse_args(argv)
    try:
        args.clients = [int(v) for v in args.clients.split(",") if v.strip()]
        args.loads = [float(v) for v in args.loads.split(",") if v.strip()]
    except ValueError:
        ap.error(f"--clients takes integers and --loads fractions, comma-separated; got "
                 f"'{args.clients}' and '{args.loads}'")
    if any(c < 1 for c in args.clients) or any(not 0 < f < 1.5 for f in args.loads):
        ap.error(f"--clients must be >= 1 and --loads in (0, 1.5); got {args.clients} and {args.loads}")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - {"digits-cnn", "alexnet-conv"}:
        ap.error(f"--models: accepted digits-cnn, alexnet-conv; got {args.models}")

    import conveyor
    from conveyor.hardware import Cluster
    from conveyor.plan import Plan
    from conveyor.planner import plan as make_plan

    print(f"serve benchmark - {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"loopback; per point <= {args.requests} requests and <= {args.seconds:g} s "
          f"({args.paced_seconds:g} s on the paced plan); load average before: "
          + (" ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"))
    tables = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            graph = conveyor.zoo.build(model)
            if model == "digits-cnn":
                plan = make_plan(graph, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>",
                                 method="equal")
                path = os.path.join(tmp, "digits-cnn.plan.json")
                plan.save(path)
                scale = None
                print(f"\n{model}: {len(plan.stages)} stages, not paced (the emulation sets the rate)")
            else:
                rb = _runtime_bench()
                path = rb.PLAN
                plan = Plan.load(path)
                x = np.random.default_rng(0).standard_normal(graph.inputs[0].shape).astype(np.float32)
                scale = args.time_scale or rb.calibrate(plan, graph, x)[1]
                print(f"\n{model}: {len(plan.stages)} stages, paced at time scale {scale:g}: interval "
                      f"{plan.interval_s * scale * 1e3:.1f} ms ({1 / (plan.interval_s * scale):.2f}/s), latency "
                      f"{plan.latency_s * scale * 1e3:.1f} ms")
            limits = argparse.Namespace(**{**vars(args), "seconds": args.paced_seconds if scale else args.seconds})
            res = bench_plan(model, plan, path, graph, scale, limits)
            print(f"   open-loop rate basis: {res['rate']:.1f}/s; load average after: "
                  + (" ".join(f"{v:.2f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"))
            tables.append((model, res))
    for model, res in tables:
        print_table(model, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
