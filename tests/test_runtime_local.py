"""The local executor: one process per stage over shared-memory channels; bit-exact results,
many requests in flight, per-request errors, a killed stage recovered (every request exactly
once), a stage given up after max_restarts, nothing left behind."""

from __future__ import annotations

import glob
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest

from conveyor import zoo
from conveyor.errors import ModelError, RuntimeFault
from conveyor.hardware import Cluster
from conveyor.planner import plan as make_plan
from conveyor.runtime import local_faults  # noqa: F401 - registers the "faulty" backend
from conveyor.runtime.channels import SEGMENT_PREFIX, Layout, Segment, channel_layouts
from conveyor.runtime.local import LocalExecutor
from conveyor.runtime.pipeline import Pipeline
from conveyor.runtime.stages import build_stages
from conveyor.runtime.worker import StageWorker

PRECISION = "ap_fixed<16,6>"
_graphs: dict = {}


def graph(name):
    if name not in _graphs:
        _graphs[name] = zoo.build(name)
    return _graphs[name]


def plan_for(name, k, board="zcu102", method="equal"):
    p = make_plan(graph(name), Cluster.uniform(board, k, link="aurora-10g"), precision=PRECISION, method=method)
    assert len(p.stages) == k, f"{name}: wanted a {k}-stage plan, got {len(p.stages)}"
    return p


def inputs(g, n, seed=0):
    """n requests for the single-input model g, each of the input's full (batch-1) shape."""
    t = g.inputs[0]
    return list(np.random.default_rng(seed).standard_normal((n,) + tuple(t.shape)).astype(t.dtype))


def ours_left():
    segs = glob.glob(f"/dev/shm/{SEGMENT_PREFIX}{os.getpid()}-*")
    kids = [p for p in mp.active_children() if p.name.startswith("conveyor-stage")]
    return segs, kids


@pytest.fixture(autouse=True)
def nothing_left_behind():
    yield
    segs, kids = ours_left()
    assert not kids, f"stage processes left running: {kids}"
    assert not segs, f"shared-memory segments left: {segs}"


def in_process(specs, xs):
    """The same stages run one after the other in this process, for each input: the reference."""
    workers = [StageWorker(spec) for spec in specs]
    out = []
    for x in xs:
        bundle = {specs[0].needs[0]: x}
        for w in workers:
            bundle = w.process(bundle)
        out.append(bundle)
    return out


# ---- results ---------------------------------------------------------------------------------

CASES = [("digits-cnn", 1, "zcu102", "equal"), ("digits-cnn", 2, "zcu102", "equal"),
         ("digits-cnn", 4, "zcu102", "equal"), ("jet-mlp", 1, "zcu102", "equal"),
         ("jet-mlp", 2, "zcu102", "equal"), ("jet-mlp", 4, "zcu102", "equal"),
         ("alexnet-conv", 1, "alveo-u250", "conveyor"), ("alexnet-conv", 2, "zcu102", "conveyor"),
         ("alexnet-conv", 4, "zcu102", "conveyor"), ("resnet18", 4, "alveo-u250", "conveyor")]


@pytest.mark.parametrize("name,k,board,method", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bit_exact_with_in_process_emulation(name, k, board, method):
    g = graph(name)
    p = plan_for(name, k, board, method)
    n = {"alexnet-conv": 3, "resnet18": 1}.get(name, 8)
    xs = inputs(g, n, seed=k)
    with Pipeline(p, g, executor="local") as pipe:
        outs = list(pipe.map(xs))
        assert [s["backend"] for s in pipe.stats()["stages"]] == ["emulator"] * k
    for x, out in zip(xs, outs):
        ref = g.run(x, precision=p.precision)
        for name_ in g.output_names:
            assert out[name_].dtype == ref[name_].dtype
            assert np.array_equal(out[name_], ref[name_])


def test_cpu_stages_match_onnxruntime_in_one_process():
    import onnxruntime as ort

    from conveyor.frontends.export import to_onnx

    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 4)
    sess = ort.InferenceSession(to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
    xs = inputs(g, 16)
    specs = build_stages(p, g, {s.device: "cpu" for s in p.stages})
    with Pipeline(p, g, executor="local", backends={s.device: "cpu" for s in p.stages}) as pipe:
        outs = list(pipe.map(xs))
    for x, out, ref in zip(xs, outs, in_process(specs, xs)):
        assert np.array_equal(out["output"], ref["output"])
        np.testing.assert_allclose(out["output"], sess.run(None, {g.input_names[0]: x})[0], rtol=1e-5, atol=1e-5)


def test_many_in_flight_come_back_in_order():
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 4)
    xs = inputs(g, 50, seed=3)
    with Pipeline(p, g, executor="local", max_in_flight=16) as pipe:
        outs = list(pipe.map(xs))
        st = pipe.stats()
    refs = [g.run(x, precision=p.precision)["output"] for x in xs]
    assert len(outs) == 50
    assert all(np.array_equal(o["output"], r) for o, r in zip(outs, refs))
    assert st["completed"] == 50 and st["failed"] == 0
    assert [s["items"] for s in st["stages"]] == [50] * 4
    assert all(set(s) >= {"index", "device", "backend", "items", "busy_s", "queue_depth", "restarts", "pid"}
               for s in st["stages"])


def test_try_submit_queues_only_what_fits_without_waiting():
    """try_submit (an event loop's way in) never waits: None when the pipeline holds
    max_in_flight requests or when stage 0's ring is full; what it accepts comes back exact."""
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 2)
    xs = inputs(g, 12, seed=5)
    refs = [g.run(x, precision=p.precision)["output"] for x in xs]
    with Pipeline(p, g, executor="local", max_in_flight=2) as pipe:
        a, b = pipe.try_submit(xs[0]), pipe.try_submit(xs[1])
        assert a is not None and b is not None
        assert pipe.try_submit(xs[2]) is None  # two in flight: full
        assert np.array_equal(a.result(30)["output"], refs[0]) and np.array_equal(b.result(30)["output"], refs[1])
        c = pipe.try_submit(xs[2])
        assert c is not None and np.array_equal(c.result(30)["output"], refs[2])
        assert pipe.stats()["completed"] == 3
    # a ring of one slot in front of a slow (paced) stage 0 fills long before max_in_flight
    with Pipeline(p, g, executor="local", max_in_flight=12, slots=1, paced=True, time_scale=2e4) as pipe:
        got = [(i, pipe.try_submit(x)) for i, x in enumerate(xs)]
        taken = [(i, f) for i, f in got if f is not None]
        assert len(taken) < len(xs), "every request fitted: the ring never filled"
        assert all(np.array_equal(f.result(60)["output"], refs[i]) for i, f in taken)
        assert pipe.stats()["completed"] == len(taken) and pipe.stats()["failed"] == 0


def test_spawn_start_method_works_too():
    g = graph("jet-mlp")
    p = plan_for("jet-mlp", 2)
    xs = inputs(g, 4)
    with Pipeline(p, g, executor="local", start_method="spawn") as pipe:
        outs = list(pipe.map(xs))
    for x, out in zip(xs, outs):
        assert np.array_equal(out["output"], g.run(x, precision=p.precision)["output"])


def test_a_bad_request_fails_alone():
    g = graph("jet-mlp")
    p = plan_for("jet-mlp", 2)
    xs = inputs(g, 4)
    with Pipeline(p, g, executor="local") as pipe:
        good = [pipe.submit(x) for x in xs[:2]]
        wrong_shape = pipe.submit(np.zeros((1, 17), np.float32))
        wrong_dtype = pipe.submit(np.zeros((1, 16), np.float64))
        more = [pipe.submit(x) for x in xs[2:]]
        with pytest.raises(ModelError, match=r"expected float32\[1, 16\], got float32\[1, 17\]"):
            wrong_shape.result(10)
        with pytest.raises(ModelError, match=r"expected float32\[1, 16\], got float64\[1, 16\]"):
            wrong_dtype.result(10)
        for f, x in zip(good + more, xs):
            assert np.array_equal(f.result(10)["output"], g.run(x, precision=p.precision)["output"])


def test_an_error_inside_a_stage_fails_that_request_only():
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 2)
    backends = {p.stages[0].device: "faulty", p.stages[1].device: "cpu"}
    xs = inputs(g, 6)
    xs[2].flat[0] = 777.0
    with Pipeline(p, g, executor="local", backends=backends, env={"CONVEYOR_FAULT_RAISE": "777"}) as pipe:
        futs = [pipe.submit(x) for x in xs]
        with pytest.raises(RuntimeError, match="injected kernel error") as info:
            futs[2].result(10)
        assert any("stage 0" in n for n in getattr(info.value, "__notes__", []))
        for i in (0, 1, 3, 4, 5):
            assert futs[i].result(10)["output"].shape == (1, 10)
        st = pipe.stats()["stages"]
        assert st[0]["restarts"] == 0 and st[0]["items"] == 5


# ---- faults ----------------------------------------------------------------------------------

def test_a_killed_stage_is_restarted_and_every_request_comes_back_once():
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 4)
    backends = {s.device: "faulty" for s in p.stages}
    specs = build_stages(p, g, backends)
    n = 120
    xs = inputs(g, n, seed=7)
    refs = [b["output"] for b in in_process(specs, xs)]
    got: dict[int, list] = {}
    cond = threading.Condition()

    def deliver(rid, result):
        with cond:
            got.setdefault(rid, []).append(result)
            cond.notify_all()

    ex = LocalExecutor(env={"CONVEYOR_FAULT_DELAY_S": "0.002"})
    ex.start(specs, deliver, False)
    try:
        sender = threading.Thread(target=lambda: [ex.send(i, {g.input_names[0]: xs[i]}) for i in range(n)])
        sender.start()
        with cond:
            assert cond.wait_for(lambda: len(got) >= 20, 20)
        victim = ex.stage_stats()[2]["pid"]
        os.kill(victim, signal.SIGKILL)
        with cond:
            assert cond.wait_for(lambda: len(got) == n, 30), f"{len(got)} of {n} delivered"
        sender.join(10)
        time.sleep(0.2)  # let stray duplicates arrive, if any got through
        stats = ex.stage_stats()
    finally:
        ex.close()
    assert sorted(got) == list(range(n))
    assert all(len(v) == 1 for v in got.values()), "a request was delivered twice"
    for i in range(n):
        assert not isinstance(got[i][0], BaseException), got[i][0]
        assert np.array_equal(got[i][0]["output"], refs[i])
    assert stats[2]["restarts"] == 1 and stats[2]["pid"] != victim
    assert [s["restarts"] for s in stats[:2] + stats[3:]] == [0, 0, 0]


def test_kill_first_and_last_stage_through_the_pipeline():
    g = graph("jet-mlp")
    p = plan_for("jet-mlp", 2)
    backends = {s.device: "faulty" for s in p.stages}
    specs = build_stages(p, g, backends)
    xs = inputs(g, 60, seed=1)
    refs = [b["output"] for b in in_process(specs, xs)]
    with Pipeline(p, g, executor="local", backends=backends, env={"CONVEYOR_FAULT_DELAY_S": "0.002"}) as pipe:
        outs = []
        for i, out in enumerate(pipe.map(xs)):
            outs.append(out)
            if i in (10, 30):
                os.kill(pipe.stats()["stages"][0 if i == 10 else 1]["pid"], signal.SIGKILL)
        st = pipe.stats()
    assert all(np.array_equal(o["output"], r) for o, r in zip(outs, refs))
    assert [s["restarts"] for s in st["stages"]] == [1, 1]
    assert st["completed"] == 60 and st["failed"] == 0


def test_a_request_that_kills_its_stage_fails_alone():
    g = graph("jet-mlp")
    p = plan_for("jet-mlp", 2)
    backends = {p.stages[0].device: "faulty", p.stages[1].device: "cpu"}
    xs = inputs(g, 5)
    xs[1].flat[0] = 555.0
    with Pipeline(p, g, executor="local", backends=backends, poison_limit=2,
                  env={"CONVEYOR_FAULT_CRASH": "555"}) as pipe:
        futs = [pipe.submit(x) for x in xs]
        with pytest.raises(RuntimeFault, match="stage 0 on device 'fpga0' .*died 2 times while processing"):
            futs[1].result(30)
        for i in (0, 2, 3, 4):
            assert futs[i].result(30)["output"].shape == (1, 5)
        assert pipe.stats()["stages"][0]["restarts"] == 2


def test_a_stage_that_cannot_come_back_is_given_up(tmp_path):
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 4)
    backends = {s.device: ("faulty" if s.device == p.stages[1].device else "cpu") for s in p.stages}
    xs = inputs(g, 8)
    env = {"CONVEYOR_FAULT_CRASH_AFTER": "3", "CONVEYOR_FAULT_MARKER": str(tmp_path / "crashed"),
           "CONVEYOR_FAULT_DELAY_S": "0.01"}
    t0 = time.monotonic()
    with Pipeline(p, g, executor="local", backends=backends, max_restarts=2, env=env) as pipe:
        futs = [pipe.submit(x) for x in xs]
        for f in futs[:3]:
            assert f.result(30)["output"].shape == (1, 10)
        errors = []
        for f in futs[3:]:
            with pytest.raises(RuntimeFault) as info:
                f.result(30)
            errors.append(str(info.value))
        assert all("stage 1 on device 'fpga1' (faulty)" in e and "max_restarts=2" in e for e in errors)
        assert "injected load failure" in errors[0]
        with pytest.raises(RuntimeFault, match="stage 1"):
            pipe.submit(xs[0]).result(1)
        assert time.monotonic() - t0 < 30
        assert pipe.stats()["stages"][1]["restarts"] == 2


# ---- lifecycle --------------------------------------------------------------------------------

def test_close_leaves_no_process_or_segment():
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 2)
    pipe = Pipeline(p, g, executor="local")
    pids = [s["pid"] for s in pipe.stats()["stages"]]
    assert len(glob.glob(f"/dev/shm/{SEGMENT_PREFIX}{os.getpid()}-*")) >= 3
    pipe(inputs(g, 1)[0])
    pipe.close()
    segs, kids = ours_left()
    assert not segs and not kids
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    with pytest.raises(RuntimeFault, match="closed"):
        pipe.submit(inputs(g, 1)[0])


_UNCLOSED = """
import os
import signal
import sys

import numpy as np
from conveyor import zoo
from conveyor.hardware import Cluster
from conveyor.planner import plan
from conveyor.runtime.pipeline import Pipeline

if __name__ == "__main__":
    g = zoo.build("jet-mlp")
    p = plan(g, Cluster.uniform("zcu102", 2, link="aurora-10g"), precision="ap_fixed<16,6>", method="equal")
    pipe = Pipeline(p, g, executor="local")
    pipe(np.zeros((1, 16), np.float32))
    print(os.getpid(), " ".join(str(s["pid"]) for s in pipe.stats()["stages"]), flush=True)
    if sys.argv[1] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    # "exit": leave without closing: the finalizer stops the stages and unlinks the rings
"""


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_an_unclosed_or_killed_parent_leaves_nothing(tmp_path, how):
    import subprocess
    import sys

    script = tmp_path / "unclosed.py"
    script.write_text(_UNCLOSED)
    proc = subprocess.run([sys.executable, str(script), how], capture_output=True, text=True, timeout=60,
                          cwd=os.path.dirname(os.path.dirname(__file__)))
    parent, *pids = [int(p) for p in proc.stdout.split()]
    assert len(pids) == 2, proc.stderr
    deadline = time.monotonic() + 30  # generous: CI machines are shared
    while time.monotonic() < deadline:
        alive = [pid for pid in pids if _running(pid)]
        segs = glob.glob(f"/dev/shm/{SEGMENT_PREFIX}{parent}-*")
        if not alive and not segs:
            break
        time.sleep(0.1)
    assert not alive, f"stage processes {alive} outlived their parent ({how})"
    assert not segs, f"segments {segs} outlived their parent ({how})"


def _running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_stage_that_cannot_load_fails_the_start():
    g = graph("digits-cnn")
    p = plan_for("digits-cnn", 2)
    with pytest.raises(RuntimeFault, match="stage 1 on '.*' .*unknown backend 'nope'"):
        Pipeline(p, g, executor="local", backends={p.stages[0].device: "cpu", p.stages[1].device: "nope"})


# ---- channels -------------------------------------------------------------------------------

def test_channel_layouts_follow_the_cuts():
    g = graph("resnet18")
    p = plan_for("resnet18", 4, "alveo-u250", "conveyor")
    specs = build_stages(p, g)
    layouts = channel_layouts(specs)
    assert len(layouts) == 5
    assert layouts[0].names == tuple(g.input_names)
    assert [lay.names for lay in layouts[1:]] == [tuple(s.forwards) for s in specs]
    # emulator stages carry float64 values
    assert all(np.dtype(e[1]) == np.float64 for lay in layouts[1:] for e in lay.entries)
    assert any(len(lay.entries) > 1 for lay in layouts)  # a skip connection crosses a cut


@pytest.mark.parametrize("name,k,board,method", [c for c in CASES if c[0] != "resnet18"],
                         ids=[f"{c[0]}-{c[1]}" for c in CASES if c[0] != "resnet18"])
def test_planned_layouts_fit_what_the_stages_send(name, k, board, method):
    """The bundles really travel in their slots' planned layout (no per-message header, no
    pickled fallback): names, dtypes and shapes are those the stages produce."""
    g = graph(name)
    p = plan_for(name, k, board, method)
    for backends in (None, {s.device: "cpu" for s in p.stages}):
        specs = build_stages(p, g, backends)
        layouts = channel_layouts(specs)
        bundle = {g.input_names[0]: inputs(g, 1)[0]}
        for i, spec in enumerate(specs + [None]):
            planned = {n: (np.dtype(dt), shape) for n, dt, shape, _ in layouts[i].entries}
            assert {n: (a.dtype, a.shape) for n, a in bundle.items()} == planned, f"channel {i}"
            if spec is not None:
                bundle = StageWorker(spec).process(bundle)


def test_segment_places_unplanned_bundles_or_says_they_do_not_fit():
    lay = Layout.of([("a", np.float32, (4, 4))])
    seg = Segment.create(0, 2, lay)
    try:
        a = np.arange(16, dtype=np.float32).reshape(4, 4)
        assert seg.write(1, {"a": a}) is None
        assert np.array_equal(seg.read(1, None)["a"], a)
        small = np.arange(3, dtype=np.int16)
        header = seg.write(0, {"b": small})
        assert np.array_equal(seg.read(0, header)["b"], small)
        from conveyor.runtime.channels import DoesNotFit

        with pytest.raises(DoesNotFit):
            seg.write(0, {"a": a.astype(np.float64)})
    finally:
        seg.close()
        seg.unlink()


# ---- replicated stages -------------------------------------------------------------------------

def replicated_plan(name="digits-cnn"):
    """A 3-stage plan whose stages run on 2, 3 and 2 devices: the parent feeds two processes,
    the stages meet 2x3 and 3x2, and two processes feed the parent."""
    import dataclasses

    p = plan_for(name, 3)
    extra = [("fpga3",), ("fpga4", "fpga5"), ("fpga6",)]
    return dataclasses.replace(p, stages=tuple(dataclasses.replace(st, replicas=r) for st, r in zip(p.stages, extra)))


def test_replica_specs_time_each_replica_as_one_of_n():
    from conveyor.runtime.stages import replica_specs

    g = graph("digits-cnn")
    spec = build_stages(replicated_plan(), g)[1]
    reps = replica_specs(spec)
    assert [r.device for r in reps] == ["fpga1", "fpga4", "fpga5"]
    assert all(r.timing[0] == (spec.timing[0][0] * 3, spec.timing[0][1]) and r.timing[1:] == spec.timing[1:]
               for r in reps)
    assert all(r.replicas == () and r.index == 1 for r in reps)
    plain = build_stages(plan_for("digits-cnn", 3), g)[1]
    assert replica_specs(plain)[0] is plain and len(replica_specs(plain)) == 1


def test_replicated_stages_share_the_work_and_stay_bit_exact():
    g = graph("digits-cnn")
    p = replicated_plan()
    xs = inputs(g, 60, seed=5)
    refs = [b["output"] for b in in_process(build_stages(p, g), xs)]
    with Pipeline(p, g, executor="local", max_in_flight=12) as pipe:
        outs = list(pipe.map(xs))
        st = pipe.stats()["stages"]
    assert all(np.array_equal(o["output"], r) for o, r in zip(outs, refs))
    assert [len(s["replicas"]) for s in st] == [2, 3, 2]
    # every n-th request by id: an exact share each
    assert [[r["items"] for r in s["replicas"]] for s in st] == [[30, 30], [20, 20, 20], [30, 30]]
    assert [r["device"] for r in st[1]["replicas"]] == ["fpga1", "fpga4", "fpga5"]
    assert all(s["items"] == 60 for s in st)


def test_a_killed_replica_is_restarted_and_every_request_comes_back_once():
    g = graph("digits-cnn")
    p = replicated_plan()
    backends = {s.device: "faulty" for s in p.stages}  # a replicated stage: its first device's backend
    xs = inputs(g, 90, seed=9)
    refs = [b["output"] for b in in_process(build_stages(p, g, backends), xs)]
    with Pipeline(p, g, executor="local", backends=backends, max_in_flight=12,
                  env={"CONVEYOR_FAULT_DELAY_S": "0.002"}) as pipe:
        outs = []
        for i, out in enumerate(pipe.map(xs)):
            outs.append(out)
            if i == 15:
                os.kill(pipe.stats()["stages"][1]["replicas"][2]["pid"], signal.SIGKILL)
            if i == 45:
                os.kill(pipe.stats()["stages"][2]["replicas"][1]["pid"], signal.SIGKILL)
        stats = pipe.stats()
    assert all(np.array_equal(o["output"], r) for o, r in zip(outs, refs))
    assert stats["completed"] == 90 and stats["failed"] == 0
    assert [[r["restarts"] for r in s["replicas"]] for s in stats["stages"]] == [[0, 0], [0, 0, 1], [0, 1]]


@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_plain_script_without_main_guard(tmp_path, method):
    """Stage processes never run the user's script again (no `if __name__ == "__main__":`)."""
    import subprocess
    import sys

    script = tmp_path / "plain.py"
    script.write_text(
        "import numpy as np\n"
        "from conveyor import zoo\nfrom conveyor.hardware import Cluster\nfrom conveyor.planner import plan\n"
        "from conveyor.runtime import Pipeline\n"
        "print('SCRIPT RAN', flush=True)\n"
        "g = zoo.build('jet-mlp')\n"
        "p = plan(g, Cluster.uniform('zcu102', 2, link='aurora-10g'), precision='ap_fixed<16,6>', method='equal')\n"
        "x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(g.inputs[0].dtype)\n"
        f"with Pipeline(p, g, start_method='{method}') as pipe:\n"
        "    y = pipe(x)\n"
        "ref = g.run(x, precision=p.precision)\n"
        "assert all(np.array_equal(y[n], ref[n]) for n in g.output_names)\n"
        "print('OK', flush=True)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=root))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["SCRIPT", "RAN", "OK"], r.stdout  # the script ran once, in the parent only
