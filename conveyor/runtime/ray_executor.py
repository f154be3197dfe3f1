"""The `ray` executor: one Ray actor per stage, placed on the node that holds its device.

    Pipeline(plan, graph, executor="ray", address="ray://head:10001" or None, ...)

Stages are long-lived actors (`StageActor`: a `StageWorker`, weights resident), one CPU
each (a Compiled Graph channel keeps a core busy). Placement uses resources as labels:
- a stage whose device name is itself a cluster resource (a node started with
  `--resources '{"fpga0": 1}'`) asks for that resource: it lands on that board's node;
- else an FPGA stage asks for `{"fpga": 1}` when the cluster offers at least one `fpga`
  per FPGA stage (a fraction of the offered `fpga` when there are fewer, so that the
  stages still land on FPGA nodes, sharing them); with no `fpga` resource anywhere,
  FPGA stages are not constrained (emulated anywhere);
- a stage with the `gpu` backend asks for `num_gpus=1`.

Data path. By default the stages are joined by a Ray Compiled Graph (`ray.dag`):
preallocated shared-memory channels (across nodes, pushed by the raylets), driven from an
asyncio loop in a background thread (`execute_async`: the channel writer and the result
reader each run on their own thread, so a full channel never blocks the result reader —
with the synchronous `execute`, a chain of single-buffer cross-node channels deadlocks once
the driver submits more than the channels hold). If compiling fails, or with
`use_compiled_graph=False`, stages are chained with plain actor calls
(`actor.call.remote(rid, previous_ref)`), results resolved by Ray's own threads.

Faults. Actors are created with `max_restarts`; a dead stage actor is restarted by Ray
with its weights reloaded (its constructor runs again). Plain calls: `max_task_retries`
makes Ray resubmit the calls that were lost. Compiled graph: an actor death tears the
graph down; the executor waits for the actors to come back, compiles a new graph and
replays, in order, every request not yet delivered (their inputs are kept until
delivered). Each request is delivered exactly once (the executor drops a second result for
an id already delivered). Once a stage has died more than `max_restarts` times, every
pending and later request fails with a `RuntimeFault` naming the stage. An exception
inside a stage fails only that request (`_Failed` travels down the chain).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

from conveyor.errors import RuntimeFault
from conveyor.runtime.ray_stage import EchoActor, StageActor, _Failed
from conveyor.runtime.metrics import combine_replicas
from conveyor.runtime.stages import StageSpec, replica_specs, route

log = logging.getLogger("conveyor.runtime.ray")

try:  # the executor needs ray; importing this module without it gives a clear error
    import ray
    from ray.exceptions import RayActorError, RayChannelError, RayError
except ImportError:  # pragma: no cover - exercised only without ray
    ray = None


def _require_ray():
    if ray is None:
        raise RuntimeFault("executor 'ray' needs the ray package: pip install 'conveyor[ray]'")


def _copy_out(payload):
    """Detach a result from any zero-copy buffer it may still view."""
    if isinstance(payload, dict):
        return {k: np.array(v, copy=True) for k, v in payload.items()}
    return payload


def _bundle_bytes(spec: StageSpec) -> int:
    """A generous estimate of one bundle leaving `spec`'s stage (float64 worst case)."""
    total = 0
    tensors = getattr(spec.graph, "tensors", {})
    for name in set(spec.forwards) | set(spec.needs):
        t = tensors.get(name)
        if t is not None:
            total += int(np.prod(t.shape, dtype=np.int64)) * max(8, np.dtype(t.dtype).itemsize)
    return total


class RayExecutor:
    """Executor `ray` (see the module docstring).

    address: a Ray cluster to join (None: the Ray this process already joined, else a new
        local one, dashboard off); a Ray this executor did not start is never shut down.
    use_compiled_graph: join stages with a Ray Compiled Graph (falls back to plain actor
        calls, logging why, when compiling fails).
    max_restarts: restarts per stage actor before its requests fail with RuntimeFault.
    num_cpus_per_stage: CPUs each stage actor reserves (1).
    max_inflight: requests inside the compiled graph at once (default 2 * stages + 2).
    buffer_size_bytes: compiled-graph channel size (default: from the largest bundle).
    fpga_resource: the custom resource naming FPGA nodes ("fpga").
    start_timeout_s: how long to wait for the stages to be placed and loaded.
    init_options: more keyword arguments for `ray.init` when this executor starts Ray.
    """

    def __init__(self, address: str | None = None, use_compiled_graph: bool = True, max_restarts: int = 3, *,
                 num_cpus_per_stage: float = 1, max_inflight: int | None = None,
                 buffer_size_bytes: int | None = None, fpga_resource: str = "fpga",
                 start_timeout_s: float = 180.0, recover_timeout_s: float = 120.0,
                 init_options: dict | None = None, **options):
        _require_ray()
        if options:
            raise RuntimeFault(f"executor 'ray': unknown options {sorted(options)}; accepted: address, "
                               "use_compiled_graph, max_restarts, num_cpus_per_stage, max_inflight, "
                               "buffer_size_bytes, fpga_resource, start_timeout_s, recover_timeout_s, init_options")
        self.address = address
        self.use_compiled_graph = use_compiled_graph
        self.max_restarts = int(max_restarts)
        self.num_cpus_per_stage = num_cpus_per_stage
        self.max_inflight = max_inflight
        self.buffer_size_bytes = buffer_size_bytes
        self.fpga_resource = fpga_resource
        self.start_timeout_s = start_timeout_s
        self.recover_timeout_s = recover_timeout_s
        self.init_options = dict(init_options or {})
        self.mode: str | None = None          # "compiled" | "plain" once started
        self.fallback_reason: str | None = None
        self.actors: list = []
        self.placement: list[dict] = []
        self._owns_ray = False
        self._lock = threading.Lock()
        self._inputs: OrderedDict[int, dict] = OrderedDict()  # undelivered requests, by id
        self._broken: RuntimeFault | None = None
        self._closing = False
        self._restarts: list[int] = []
        self._pids: list[int | None] = []
        self._nodes: list[str | None] = []
        self._submitted = 0
        self._delivered = 0
        self.recoveries = 0

    # ---- lifecycle -------------------------------------------------------------------
    def start(self, specs: list[StageSpec], deliver: Callable[[int, Any], None], paced: bool,
              time_scale: float = 1.0) -> None:
        self.specs = list(specs)
        # one actor per device: a replicated stage has one per replica (every n-th request each)
        self.workers: list[StageSpec] = []
        self._by_stage: list[list[int]] = []
        for spec in self.specs:
            reps = replica_specs(spec)
            self._by_stage.append(list(range(len(self.workers), len(self.workers) + len(reps))))
            self.workers += reps
        self._deliver_cb = deliver
        self.paced = paced
        self.time_scale = time_scale
        n = len(self.workers)
        self._connect(n)
        self._restarts = [0] * n
        self._pids = [None] * n
        self._nodes = [None] * n
        if self.max_inflight is None:
            self.max_inflight = max(8, 2 * n + 2)
        try:
            self._create_actors()
            if self.use_compiled_graph and len(self.workers) > len(self.specs):
                self.mode = "plain"
                self.fallback_reason = ("the plan replicates stages, and a compiled graph sends every request "
                                        "through the same actors")
                log.info("ray executor: %s; joining stages with plain actor calls", self.fallback_reason)
            elif self.use_compiled_graph:
                self._start_compiled()
            else:
                self.mode = "plain"
        except BaseException:
            self.close()
            raise

    def _connect(self, n_stages: int) -> None:
        if ray.is_initialized():
            if self.address is not None:
                log.info("ray executor: this process already joined a Ray cluster; using it (address %s ignored)",
                         self.address)
            return
        kwargs = {"logging_level": logging.WARNING, "log_to_driver": False}
        kwargs.update(self.init_options)
        if self.address is None:  # a local Ray: room for one CPU per stage even on a small machine
            kwargs.setdefault("include_dashboard", False)
            kwargs.setdefault("num_cpus", max(os.cpu_count() or 1, int(np.ceil(n_stages * self.num_cpus_per_stage))))
        ray.init(address=self.address, **kwargs)
        self._owns_ray = True

    def _stage_options(self, spec: StageSpec, resources: dict, n_fpga_stages: int) -> dict:
        opts: dict[str, Any] = {"num_cpus": self.num_cpus_per_stage, "max_restarts": self.max_restarts}
        custom: dict[str, float] = {}
        kind = _device_kind(spec)
        if spec.device in resources and spec.device not in ("CPU", "GPU", "memory", "object_store_memory"):
            custom[spec.device] = 1
            where = f"resource '{spec.device}'"
        elif kind == "fpga" and resources.get(self.fpga_resource, 0) > 0:
            offered = resources[self.fpga_resource]
            share = 1 if offered >= n_fpga_stages else offered / n_fpga_stages
            custom[self.fpga_resource] = share
            where = f"resource '{self.fpga_resource}'={share:g}"
        else:
            where = "anywhere" if kind != "fpga" else f"anywhere (the cluster offers no '{self.fpga_resource}')"
        if spec.backend == "gpu":
            if resources.get("GPU", 0) < 1:
                raise RuntimeFault(f"stage {spec.index} on '{spec.device}' uses the gpu backend, but the Ray cluster "
                                   "has no GPU; run it with backends={device: 'cpu'} or add a GPU node")
            opts["num_gpus"] = 1
            where += ", 1 GPU"
        if custom:
            opts["resources"] = custom
        self.placement.append({"index": spec.index, "device": spec.device, "placed": where})
        return opts

    def _create_actors(self) -> None:
        resources = ray.cluster_resources()
        n_fpga = sum(1 for s in self.workers if _device_kind(s) == "fpga")
        if n_fpga and resources.get(self.fpga_resource, 0) <= 0:
            log.info("ray executor: the cluster offers no '%s' resource; FPGA stages are placed anywhere",
                     self.fpga_resource)
        cls = ray.remote(StageActor)
        copy_inputs = self.use_compiled_graph
        self.actors = []
        for spec in self.workers:
            opts = self._stage_options(spec, resources, n_fpga)
            self.actors.append(cls.options(**opts).remote(spec, self.paced, copy_inputs, self.time_scale))
        refs = [a.ready.remote() for a in self.actors]
        deadline = time.monotonic() + self.start_timeout_s
        for i, ref in enumerate(refs):
            try:
                info = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
            except ray.exceptions.GetTimeoutError:
                raise RuntimeFault(f"stage {self.workers[i].index} on '{self.workers[i].device}' was not placed within "
                                   f"{self.start_timeout_s:g} s (asked for {self.placement[i]['placed']}; cluster "
                                   f"resources {ray.available_resources()})") from None
            except RayError as e:
                raise RuntimeFault(f"stage {self.workers[i].index} on '{self.workers[i].device}' failed to load: "
                                   f"{_short(e)}") from None
            self._pids[i] = info["pid"]
            self._nodes[i] = info["node_id"]

    def close(self) -> None:
        with self._lock:
            if self._closing:
                return
            self._closing = True
        if getattr(self, "_loop", None) is not None:
            try:
                asyncio.run_coroutine_threadsafe(self._stop_tasks(), self._loop).result(timeout=10)
            except Exception:
                pass
        dag, self._dag = getattr(self, "_dag", None), None
        _teardown_and_kill(dag, self.actors)
        if getattr(self, "_loop", None) is not None:
            try:
                asyncio.run_coroutine_threadsafe(_cancel_all(), self._loop).result(timeout=5)
            except Exception:
                pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        self.actors = []
        if self._owns_ray and ray.is_initialized():
            _shutdown_ray()
            self._owns_ray = False

    # ---- requests --------------------------------------------------------------------
    def send(self, request_id: int, bundle: dict[str, np.ndarray], block: bool = True) -> bool:
        """Never waits (Ray queues the call), so `block` changes nothing."""
        if self._closing:
            raise RuntimeFault("the ray executor is closed")
        if self._broken is not None:
            raise self._broken
        with self._lock:
            self._inputs[request_id] = bundle
            self._submitted += 1
        if self.mode == "compiled":
            self._loop.call_soon_threadsafe(self._enqueue, request_id)
        else:
            self._send_plain(request_id, bundle)
        return True

    def _deliver(self, rid: int, result) -> None:
        """Exactly once per request id."""
        with self._lock:
            if self._inputs.pop(rid, None) is None:
                return
            self._delivered += 1
        if isinstance(result, _Failed):
            result = RuntimeFault(result.message)
        self._deliver_cb(rid, result)

    def _fail_all(self, fault: RuntimeFault) -> None:
        self._broken = fault
        with self._lock:
            rids = list(self._inputs)
        for rid in rids:
            self._deliver(rid, fault)

    # ---- plain actor calls -----------------------------------------------------------
    def _send_plain(self, rid: int, bundle) -> None:
        ref = (rid, bundle)
        for rows in self._by_stage:
            a = self.actors[rows[route(rid, len(rows))]]
            # a call lost with a dead actor is resubmitted to its restarted self (the restarts
            # themselves are bounded by max_restarts); per call, so that a compiled graph's
            # loop on the same actor is never retried
            ref = a.call.options(max_task_retries=-1).remote(rid, ref)
        ref.future().add_done_callback(lambda f, rid=rid: self._plain_done(rid, f))

    def _plain_done(self, rid: int, fut) -> None:
        try:
            _, payload = fut.result()
        except RayActorError as e:
            stage = self._stage_of(e)
            fault = RuntimeFault(f"stage {self.workers[stage].index} on '{self.workers[stage].device}' died and "
                                 f"could not be restarted "
                                 f"(max_restarts={self.max_restarts}): {_short(e)}" if stage is not None else
                                 f"a stage actor died and could not be restarted: {_short(e)}")
            self._deliver(rid, fault)
            if not self._closing:
                self._fail_all(fault)
            return
        except Exception as e:
            self._deliver(rid, RuntimeFault(f"request {rid} failed in the ray executor: {_short(e)}"))
            return
        self._deliver(rid, _copy_out(payload))

    def _stage_of(self, err) -> int | None:
        aid = getattr(err, "actor_id", None)
        for i, a in enumerate(self.actors):
            if aid is not None and a._actor_id.hex() == aid:
                return i
        return None

    # ---- compiled graph --------------------------------------------------------------
    # Everything below runs on one asyncio loop in a background thread ("conveyor-ray-dag"):
    # `_supervise` runs `_pump` (submits requests as capacity allows; `_collect` tasks
    # await the results in order) until a failure is signalled — by a collector, by the
    # pump, or by `_watch` seeing the graph torn down (Ray tears a compiled graph down when
    # one of its actors dies, and pending results then never arrive) — then `_recover`s.
    def _start_compiled(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self._loop.run_forever, name="conveyor-ray-dag", daemon=True)
        self._loop_thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._setup_async(), self._loop).result(timeout=self.start_timeout_s)
        except Exception as e:
            self.fallback_reason = f"{type(e).__name__}: {_short(e)}"
            log.warning("ray executor: Compiled Graph unavailable (%s); joining stages with plain actor calls",
                        self.fallback_reason)
            dag, self._dag = getattr(self, "_dag", None), None
            if dag is not None:
                try:
                    dag.teardown()
                except Exception:
                    pass
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join(timeout=10)
            self._loop.close()
            self._loop = None
            self.mode = "plain"
            return
        self.mode = "compiled"

    async def _setup_async(self) -> None:
        self._queue: deque[int] = deque()
        self._wakeup = asyncio.Event()
        self._failed = asyncio.Event()
        self._failure: BaseException | None = None
        self._generation = 0
        self._stalled = 0  # recoveries since the last delivered result
        self._collectors: set[asyncio.Task] = set()
        self._tasks: list[asyncio.Task] = []
        self._dag = None
        self._dag = await self._compile_and_warm()
        self._tasks = [asyncio.ensure_future(self._supervise()), asyncio.ensure_future(self._watch())]

    async def _compile_and_warm(self):
        """Compile, then send one no-op item through (a `_Failed` marker every stage passes
        on): the first execution starts Ray's helper processes, which takes seconds."""
        from ray.dag import InputNode

        with InputNode() as inp:
            x = inp
            for a in self.actors:
                x = a.process.bind(x)
        size = self.buffer_size_bytes
        if size is None:
            biggest = max([_bundle_bytes(s) for s in self.specs] + [0])
            size = max(1 << 20, 2 * biggest + (64 << 10))
        dag = x.experimental_compile(enable_asyncio=True, _max_inflight_executions=self.max_inflight,
                                     _buffer_size_bytes=int(size))
        self._dag = dag
        result = await asyncio.wait_for(await dag.execute_async((-1, _Failed("warm-up"))), self.start_timeout_s)
        if isinstance(result, BaseException):
            raise result
        return dag

    def _enqueue(self, rid: int) -> None:
        if self.mode != "compiled":  # fell back to plain calls meanwhile
            with self._lock:
                bundle = self._inputs.get(rid)
            if bundle is not None:
                self._send_plain(rid, bundle)
            return
        self._queue.append(rid)
        self._wakeup.set()

    def _signal(self, err: BaseException, generation: int) -> None:
        if generation == self._generation and self._failure is None:
            self._failure = err
            self._failed.set()

    async def _stop_tasks(self) -> None:
        for t in self._tasks + list(self._collectors):
            t.cancel()
        await asyncio.gather(*self._tasks, *self._collectors, return_exceptions=True)

    async def _supervise(self) -> None:
        while not self._closing and self._broken is None:
            self._capacity = asyncio.Semaphore(self.max_inflight)
            pump = asyncio.ensure_future(self._pump(self._generation))
            self._tasks.append(pump)
            await self._failed.wait()
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            self._tasks.remove(pump)
            if self._closing:
                return
            await self._recover()
            if self.mode != "compiled":
                return

    async def _watch(self) -> None:
        """Notice a failed graph even when no result is pending: a stage's execution loop
        (a task Ray runs on each actor for the graph's lifetime) ended, or the graph was
        torn down."""
        while not self._closing:
            await asyncio.sleep(0.1)
            dag = self._dag
            if dag is None or self._failure is not None:
                continue
            if dag.is_teardown:
                self._signal(RayChannelError("the compiled graph was torn down"), self._generation)
                continue
            loops = list(getattr(dag, "worker_task_refs", {}).values())
            if loops:
                done, _ = ray.wait(loops, num_returns=1, timeout=0, fetch_local=False)
                if done:
                    self._signal(RayChannelError("a stage's compiled-graph loop ended (its actor died?)"),
                                 self._generation)

    async def _pump(self, generation: int) -> None:
        while True:
            if not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._capacity.acquire()
            if not self._queue:
                self._capacity.release()
                continue
            rid = self._queue.popleft()
            with self._lock:
                bundle = self._inputs.get(rid)
            if bundle is None:  # delivered meanwhile
                self._capacity.release()
                continue
            try:
                fut = await self._dag.execute_async((rid, bundle))
            except asyncio.CancelledError:
                self._queue.appendleft(rid)
                raise
            except Exception as e:
                self._queue.appendleft(rid)
                self._capacity.release()
                self._signal(e, generation)
                return
            task = asyncio.ensure_future(self._collect(rid, fut, generation))
            self._collectors.add(task)
            task.add_done_callback(self._collectors.discard)

    async def _collect(self, rid: int, fut, generation: int) -> None:
        try:
            result = await fut
            del fut
            if isinstance(result, BaseException):  # errors come back as values, too
                raise result
            out_rid, payload = result
            payload = _copy_out(payload)
            del result
        except asyncio.CancelledError:
            raise
        except Exception as e:
            # Stages catch their own errors (a failed request comes back as `_Failed`), so
            # anything here is the graph failing — an actor died, a channel closed (Ray may
            # also surface that as a TypeError from its result cache): rebuild and replay.
            self._signal(e, generation)
            return
        self._stalled = 0
        self._deliver(out_rid, payload)
        if generation == self._generation:
            self._capacity.release()

    async def _recover(self) -> None:
        """A stage actor died: tear the graph down, wait for Ray to restart the actor,
        compile a new graph and replay every undelivered request in order."""
        err, self._failure = self._failure, None
        self._failed.clear()
        self._generation += 1
        self.recoveries += 1
        self._stalled += 1
        log.warning("ray executor: compiled graph failed (%s); rebuilding it", _short(err))
        pending = list(self._collectors)
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        loop = asyncio.get_running_loop()
        dag, self._dag = self._dag, None
        if dag is not None:
            try:
                await loop.run_in_executor(None, dag.teardown)
            except Exception as e:  # it may have torn itself down already
                log.debug("teardown after a failure: %s", e)
        fault = await loop.run_in_executor(None, self._await_actors)
        if fault is None and self._stalled > self.max_restarts + 1:
            fault = RuntimeFault(f"the compiled graph failed {self._stalled} times in a row without delivering a "
                                 f"result: {_short(err)}")
        if fault is not None:
            self._queue.clear()
            self._fail_all(fault)  # and send() refuses from now on
            return
        try:
            self._dag = await self._compile_and_warm()
        except Exception as e:
            self.fallback_reason = f"recompiling after a failure: {type(e).__name__}: {_short(e)}"
            log.warning("ray executor: %s; continuing with plain actor calls", self.fallback_reason)
            self._dag = None
            self.mode = "plain"
            self._queue.clear()
            with self._lock:
                replay = list(self._inputs.items())
            for rid, bundle in replay:
                self._send_plain(rid, bundle)
            return
        with self._lock:
            self._queue = deque(self._inputs)  # every undelivered request, in id order
        log.info("ray executor: compiled graph rebuilt; replaying %d requests", len(self._queue))
        self._wakeup.set()

    def _await_actors(self) -> RuntimeFault | None:
        """Wait until every stage answers; count restarts; a stage dead for good is a fault."""
        deadline = time.monotonic() + self.recover_timeout_s
        for i, a in enumerate(self.actors):
            while True:
                try:
                    info = ray.get(a.ready.remote(), timeout=max(0.1, deadline - time.monotonic()))
                    break
                except ray.exceptions.ActorUnavailableError:  # restarting
                    if time.monotonic() > deadline:
                        return RuntimeFault(f"stage {i} on '{self.specs[i].device}' did not come back within "
                                            f"{self.recover_timeout_s:g} s")
                    time.sleep(0.05)
                except ray.exceptions.GetTimeoutError:
                    return RuntimeFault(f"stage {i} on '{self.specs[i].device}' did not come back within "
                                        f"{self.recover_timeout_s:g} s")
                except RayActorError as e:
                    self._restarts[i] = max(self._restarts[i], self.max_restarts) + 1
                    return RuntimeFault(f"stage {i} on '{self.specs[i].device}' died more than max_restarts="
                                        f"{self.max_restarts} times: {_short(e)}")
            if info["pid"] != self._pids[i]:
                self._restarts[i] += 1
                self._pids[i], self._nodes[i] = info["pid"], info["node_id"]
        return None

    # ---- stats -----------------------------------------------------------------------
    def stage_stats(self) -> list[dict]:
        """One row per plan stage (a replicated stage sums its replicas, listed under "replicas")."""
        refs = [a.stats.remote() for a in self.actors]
        rows = []
        for i, spec in enumerate(self.workers):
            row = {"index": spec.index, "device": spec.device, "backend": spec.backend, "items": None,
                   "busy_s": None, "overruns": None, "restarts": self._restart_count(i), "node_id": self._nodes[i],
                   "pid": self._pids[i], "alive": False, "mode": self.mode}
            if i < len(refs):
                try:
                    s = ray.get(refs[i], timeout=10)
                    row.update(items=s["items"], busy_s=s["busy_s"], overruns=s["overruns"], node_id=s["node_id"],
                               pid=s["pid"], alive=True)
                except Exception:
                    pass
            rows.append(row)
        out = [combine_replicas([rows[i] for i in idx]) for idx in getattr(self, "_by_stage", [])]
        with self._lock:
            in_flight = len(self._inputs)
        for row in out:
            row["executor_in_flight"] = in_flight
        return out

    def _restart_count(self, i: int) -> int:
        """Ray's own count (GCS actor table) when it can be read, else the restarts seen."""
        try:
            from ray._private import state

            info = state.state.actor_table(self.actors[i]._actor_id.hex())
            return max(int(info.get("NumRestarts", 0)), self._restarts[i])
        except Exception:
            return self._restarts[i]


def _shutdown_ray() -> None:
    """ray.shutdown(); for a Ray started here, also remove the named semaphores its raylet
    leaves in /dev/shm (Ray does not unlink those of compiled-graph channels: sem.hdr<pid>-*
    and sem.obj<pid>-*)."""
    pids = []
    try:
        node = ray._private.worker._global_node
        if node is not None and node.head:  # this process started it
            pids = [p.process.pid for p in node.all_processes.get("raylet", [])]
    except Exception:  # private API: best effort
        pids = []
    ray.shutdown()
    import glob

    for pid in pids:
        for f in glob.glob(f"/dev/shm/sem.hdr{pid}-*") + glob.glob(f"/dev/shm/sem.obj{pid}-*"):
            try:
                os.unlink(f)
            except OSError:
                pass


def _teardown_and_kill(dag, actors) -> None:
    """Tear a compiled graph down (at once when healthy; if it hangs, killing the actors
    unblocks it), then kill the actors for good."""
    t = None
    if dag is not None:
        t = threading.Thread(target=_quietly, args=(dag.teardown,), daemon=True)
        t.start()
        t.join(timeout=5)
    for a in actors:
        try:
            ray.kill(a, no_restart=True)
        except Exception:
            pass
    if t is not None:
        t.join(timeout=30)


def _quietly(fn) -> None:
    try:
        fn()
    except Exception as e:
        log.debug("ignored while closing: %s", e)


async def _cancel_all() -> None:
    """Cancel what is left on the executor's loop (Ray's channel readers included)."""
    me = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not me]
    for t in rest:
        t.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


def _device_kind(spec: StageSpec) -> str:
    """Where the stage must run: a stage the user moved to a host backend (cpu, gpu) where
    that backend runs; any other stage on a node of the plan's device kind."""
    if spec.backend in ("cpu", "gpu"):
        return spec.backend
    return spec.device_kind


def _short(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- measurement -------------------------------------------------------------------------
def measure_hop_overhead(payload_bytes=(1024, 1 << 20), hops: int = 2, requests: int = 200, *,
                         modes=("compiled", "plain"), address: str | None = None, warmup: int = 20,
                         actor_options: dict | None = None) -> list[dict]:
    """Round-trip latency of one request at a time through `hops` pass-through stage actors
    (`EchoActor`: copies its bundle, like a stage), for each payload size and mode, over the
    path the executor uses: "compiled" = an asyncio Compiled Graph (`execute_async`), "plain"
    = chained actor calls. Per hop = round trip / (hops + 1): the driver's send and receive
    count as hops. Uses the Ray this process joined, else starts one (dashboard off).
    `actor_options` go to the actors (e.g. `{"resources": {"fpga": 1}}` to cross nodes).

    Returns rows: mode, payload_bytes, hops, round_trip_p50_s, round_trip_p99_s,
    per_hop_p50_s, per_hop_p99_s.
    """
    _require_ray()
    owns = False
    if not ray.is_initialized():
        kwargs = {"logging_level": logging.WARNING, "log_to_driver": False}
        if address is None:  # a CPU per actor, even on a machine with fewer cores (they mostly wait)
            kwargs.update(include_dashboard=False, num_cpus=max(os.cpu_count() or 1, hops))
        ray.init(address=address, **kwargs)
        owns = True
    rows = []
    opts = {"num_cpus": 1, **(actor_options or {})}
    bundles = {size: {"x": np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)} for size in payload_bytes}

    def row(mode, size, lat):
        lat_a = np.asarray(lat)
        p50, p99 = float(np.percentile(lat_a, 50)), float(np.percentile(lat_a, 99))
        return {"mode": mode, "payload_bytes": int(size), "hops": hops, "round_trip_p50_s": p50,
                "round_trip_p99_s": p99, "per_hop_p50_s": p50 / (hops + 1), "per_hop_p99_s": p99 / (hops + 1)}

    async def compiled(actors):
        from ray.dag import InputNode

        with InputNode() as inp:
            x = inp
            for a in actors:
                x = a.process.bind(x)
        dag = x.experimental_compile(enable_asyncio=True,
                                     _buffer_size_bytes=max(1 << 20, 2 * max(payload_bytes) + (64 << 10)))
        out = []
        try:
            for size, bundle in bundles.items():
                lat = []
                for i in range(warmup + requests):
                    t0 = time.perf_counter()
                    result = await (await dag.execute_async((i, bundle)))
                    if isinstance(result, BaseException):
                        raise result
                    payload = _copy_out(result[1])
                    dt = time.perf_counter() - t0
                    del result, payload
                    if i >= warmup:
                        lat.append(dt)
                out.append(row("compiled", size, lat))
        finally:
            _teardown_and_kill(dag, actors)
            await _cancel_all()
        return out

    try:
        for mode in modes:
            actors = [ray.remote(EchoActor).options(**opts).remote(mode == "compiled") for _ in range(hops)]
            ray.get([a.ready.remote() for a in actors])
            if mode == "compiled":
                rows += asyncio.run(compiled(actors))
                continue
            try:
                for size, bundle in bundles.items():
                    lat = []
                    for i in range(warmup + requests):
                        t0 = time.perf_counter()
                        ref = (i, bundle)
                        for a in actors:
                            ref = a.call.remote(i, ref)
                        payload = _copy_out(ray.get(ref)[1])
                        dt = time.perf_counter() - t0
                        del payload
                        if i >= warmup:
                            lat.append(dt)
                    rows.append(row("plain", size, lat))
            finally:
                for a in actors:
                    ray.kill(a, no_restart=True)
    finally:
        if owns:
            _shutdown_ray()
    return rows
