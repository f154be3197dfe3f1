"""The `local` executor: one OS process per stage, bundles over shared-memory channels.

    with Pipeline(plan, graph, executor="local", slots=4, max_restarts=3) as p: ...

Processes and channels (S stages, channels 0..S; `conveyor.runtime.channels` has the wire
format):

    parent ──ch0──▶ stage 0 ──ch1──▶ stage 1 ── … ──chS──▶ parent (collector thread → deliver)
       ╰──────── ctrl (one socketpair per stage: stop, rebinds; errors, ready) ────────╯

A stage the plan replicates over n devices runs as n processes, replica r taking the
requests whose id is r mod n (`stages.route`); between two stages there is then one channel
per pair of their processes (a mesh; boundary b, producer a, consumer c), and each process
reads from every channel into it and writes to the one its request routes to.

- Each stage process (forkserver context by default: a fork of a single-threaded server that
  has already imported the runtime; `spawn` on request) builds its `StageWorker` once
  (weights resident) and loops: wait on its control connection and its input channel;
  receive `(request_id, slot, header)`; `worker.process` the bundle (views into the slot);
  write the result into a free slot of the output channel and announce it; return the input
  slot. Channel i is a ring of `slots` fixed-size slots in one shared-memory segment, sized
  from the specs; only small control messages cross the sockets. A full ring blocks its
  producer (back-pressure); `send` blocks the same way on channel 0.
- The parent keeps every request's input bundle until the request is delivered, and
  delivers each request id at most once (a dict of requests in flight, popped on delivery).
- An exception while processing one request is sent to the parent over the stage's control
  connection and fails that request alone; the stage keeps serving.
- A supervisor thread waits on every stage's control connection and process sentinel. When
  a stage process dies it is restarted (its weights loaded again) with fresh input and
  output channels; the neighbours are handed their new ends (SCM_RIGHTS over their control
  connections), and every request not yet delivered is replayed from stage 0. Copies that
  survive elsewhere in the pipeline and the replays meet at the collector, which keeps the
  first. A request that a stage was computing when it died, `poison_limit` times, fails
  alone with a `RuntimeFault` instead of being replayed again (a request that crashes its
  stage must not take the pipeline down).
- A stage that dies more than `max_restarts` times within `restart_window_s` is given up:
  every pending request gets a `RuntimeFault` naming the stage, its device and the last
  failure; later `send`s fail at once.
- `close` stops the stages (then terminates, then kills those that linger), joins the
  threads, and unmaps and unlinks every segment; a `weakref.finalize` does the same at
  interpreter exit for an executor never closed. Segment names start with
  `conveyor-<parent pid>-`.

Stage processes never import the user's main module (`_start_without_main`), so a plain
script without `if __name__ == "__main__":` can start a pipeline. Backends
registered in `conveyor.runtime.device.BACKENDS` travel to the stage processes by reference
(their module must be importable there); `env=` sets environment variables in them.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import pickle
import threading
import time
import weakref
from collections import deque
from multiprocessing.connection import wait
from typing import Any, Callable

import numpy as np

from conveyor.errors import RuntimeFault
from conveyor.runtime import device as _device
from conveyor.runtime.channels import (
    Layout,
    Receiver,
    Segment,
    Sender,
    channel_layouts,
    send_conn,
)
from conveyor.runtime.local_stage import (
    BUSY,
    CONSUMED,
    CURRENT,
    ITEMS,
    OVERRUNS,
    PRODUCED,
    StageBoot,
    stage_main,
    stats_bytes,
    stats_view,
)
from conveyor.runtime.metrics import combine_replicas
from conveyor.runtime.stages import replica_specs, route

START_METHODS = ("forkserver", "spawn")
_PRELOAD = ["conveyor.runtime.local_stage"]  # not "__main__": stage processes never run the user's script
_PREP_LOCK = threading.Lock()


def _start_without_main(process) -> None:
    """Start `process` without the user's main module: multiprocessing's preparation data
    ('init_main_from_path' / 'init_main_from_name') would make the child import __main__ again,
    running a script that lacks `if __name__ == "__main__":` a second time in every stage. Stage
    processes need nothing from __main__ (their target and arguments live in conveyor)."""
    from multiprocessing import spawn

    with _PREP_LOCK:
        original = spawn.get_preparation_data

        def without_main(name):
            data = original(name)
            data.pop("init_main_from_path", None)
            data.pop("init_main_from_name", None)
            return data

        spawn.get_preparation_data = without_main
        try:
            process.start()
        finally:
            spawn.get_preparation_data = original


PARENT = -1  # the parent process, as a channel end


class _Stage:
    """The parent's record of one stage process (one per replica of a replicated stage)."""

    def __init__(self, spec, row: int, stage: int, replica: int):
        self.spec = spec
        self.row = row            # its index among the processes, and its stats row
        self.stage = stage        # the plan stage it runs
        self.replica = replica    # its position among that stage's replicas
        self.process = None
        self.ctrl = None
        self.ctrl_lock = threading.Lock()
        self.pid: int | None = None
        self.restarts = 0
        self.deaths: deque[float] = deque()
        self.last_error: str | None = None
        self.ready = False

    @property
    def where(self) -> str:
        return f"stage {self.spec.index} on device '{self.spec.device}' ({self.spec.backend})"


class _Resources:
    """What must not outlive the executor; also run by the finalizer at interpreter exit."""

    def __init__(self):
        self.processes: list = []
        self.segments: list[Segment] = []
        self.lock = threading.Lock()   # processes and channels being replaced (the executor's restart lock)
        self.ended = False             # the finalizer ran: nothing may be restarted any more

    def stop_processes(self, timeout_s: float) -> None:
        procs, self.processes = self.processes, []
        deadline = time.monotonic() + timeout_s
        for p in procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(1.0)
            if p.is_alive():
                p.kill()
                p.join(1.0)
        for p in procs:
            try:
                p.close()
            except ValueError:
                pass

    def release_segments(self) -> None:
        segs, self.segments = self.segments, []
        for s in segs:
            s.unlink()
            s.close()

    def cleanup(self) -> None:
        """At interpreter exit for an executor never closed. The supervisor thread is still
        alive then and would see the stages die: `ended` (checked under `lock`) keeps it from
        starting new ones behind the cleanup's back."""
        self.ended = True
        with self.lock:
            self.stop_processes(0.5)
            self.release_segments()


class LocalExecutor:
    """One process per stage on this machine (see the module docstring).

    Options: `slots` per channel ring (default 4), `max_restarts` (3) within
    `restart_window_s` (60 s), `poison_limit` (2), `start_method` ("forkserver" or "spawn"),
    `start_timeout_s` for every stage to load (600), `stop_timeout_s` for a stage to stop
    before it is terminated (5), `env`: environment variables set in the stage processes,
    `threads_per_stage`: the BLAS / OpenMP threads each stage process may use (default: the
    cores divided among the stages, at least 1 — left alone, every stage's BLAS would start
    a thread per core and spin them, and on 2 cores four emulated AlexNet stages ran 3-20x
    slower than alone)."""

    def __init__(self, *, slots: int = 4, max_restarts: int = 3, restart_window_s: float = 60.0,
                 poison_limit: int = 2, start_method: str | None = None, start_timeout_s: float = 600.0,
                 stop_timeout_s: float = 5.0, env: dict | None = None, threads_per_stage: int | None = None):
        if slots < 1:
            raise RuntimeFault(f"local executor: slots must be >= 1, got {slots}")
        method = start_method or ("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
        if method not in START_METHODS:
            raise RuntimeFault(f"local executor: start_method '{method}'; accepted: {', '.join(START_METHODS)}")
        self.slots = slots
        self.threads_per_stage = threads_per_stage
        self.max_restarts = max_restarts
        self.restart_window_s = restart_window_s
        self.poison_limit = poison_limit
        self.start_method = method
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.cleanup)
        self._lock = threading.Lock()          # requests in flight, failure state
        self._send_lock = threading.Lock()     # the head of channel 0
        self._restart_lock = self._res.lock    # channels and processes being replaced
        self._inflight: dict[int, dict[str, np.ndarray]] = {}
        self._crashes: dict[int, int] = {}
        self._failed: str | None = None
        self._closing = False
        self._started = False
        self._threads: list[threading.Thread] = []
        self._replay_cond = threading.Condition()
        self._replay_heap: list[int] = []       # request ids to send again from stage 0, oldest first
        self._replay_set: set[int] = set()
        self._stages: list[_Stage] = []

    # ---- Executor protocol ---------------------------------------------------------------
    def start(self, specs, deliver: Callable[[int, Any], None], paced: bool, time_scale: float = 1.0) -> None:
        if self._started:
            raise RuntimeFault("local executor: already started")
        if not specs:
            raise RuntimeFault("local executor: the plan has no stages")
        self._started = True
        self._deliver = deliver
        self._paced = paced
        self._time_scale = time_scale
        self._threads_per_stage = self.threads_per_stage or max(1, (os.cpu_count() or 1) // len(specs))
        self._specs = list(specs)
        self._ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            self._ctx.set_forkserver_preload(_PRELOAD)  # no effect once the server runs
        self._layouts: list[Layout] = channel_layouts(self._specs, paced)
        self._backends = self._backend_classes()
        S = len(self._specs)
        self._stages, self._by_stage = [], []
        for k, spec in enumerate(self._specs):
            self._by_stage.append([])
            for r, rspec in enumerate(replica_specs(spec)):
                self._by_stage[k].append(len(self._stages))
                self._stages.append(_Stage(rspec, len(self._stages), k, r))
        W = len(self._stages)
        # channel (b, a, c): boundary b (feeding stage b; b = S feeds the parent) from process a to c
        keys = [(b, a, c) for b in range(S + 1) for a in self._producers(b) for c in self._consumers(b)]
        self._chan_row = {key: W + i for i, key in enumerate(keys)}
        self._stats_seg = Segment.create(-1, 1, Layout((), stats_bytes(W + len(keys))))
        self._res.segments.append(self._stats_seg)
        self._stats = stats_view(self._stats_seg.buf, W + len(keys))
        self._stats[:] = 0
        self._stats[:W, CURRENT] = -1
        try:
            ends = {key: self._new_channel(key[0]) for key in keys}
            self._senders = [Sender(ends[(0, PARENT, w)][0], ends[(0, PARENT, w)][2]) for w in self._by_stage[0]]
            self._receivers = [Receiver(ends[(S, w, PARENT)][1], ends[(S, w, PARENT)][2])
                               for w in self._by_stage[S - 1]]
            for st in self._stages:
                self._spawn(st, ends)
            for (_, a, c), (_, _, seg) in ends.items():
                if PARENT not in (a, c):
                    seg.close()  # the parent never touches inner rings; it keeps the names
            self._channels = {key: e[2] for key, e in ends.items()}
            self._await_ready()
        except BaseException:
            self.close()
            raise
        self._start_thread(self._collect, "conveyor-local-collector")
        self._wake_r, self._wake_w = mp.Pipe(duplex=False)
        self._start_thread(self._supervise, "conveyor-local-supervisor")
        self._start_thread(self._replayer, "conveyor-local-replayer")

    def send(self, request_id: int, bundle: dict[str, np.ndarray], block: bool = True) -> bool:
        with self._lock:
            if self._failed:
                raise RuntimeFault(self._failed)
            if self._closing or not self._started:
                raise RuntimeFault("the local executor is closed" if self._closing else "the local executor is not started")
            self._inflight[request_id] = bundle
        try:
            if self._write(request_id, bundle, block):
                return True
        except RuntimeFault:
            with self._lock:
                mine = self._inflight.pop(request_id, None) is not None
            if mine:
                raise  # else the failure was already delivered (the stages were given up)
            return True
        with self._lock:  # block=False and no free slot: never in flight
            self._inflight.pop(request_id, None)
        return False

    def stage_stats(self) -> list[dict]:
        """One row per plan stage (a replicated stage sums its replicas, listed under
        "replicas")."""
        def process_row(st: _Stage) -> dict:
            row = self._stats[st.row]
            queue = sum(max(0, int(self._stats[r, PRODUCED] - self._stats[r, CONSUMED]))
                        for (_, _, c), r in self._chan_row.items() if c == st.row)
            return {"index": st.stage, "device": st.spec.device, "backend": st.spec.backend,
                    "items": int(row[ITEMS]), "busy_s": float(row[BUSY]), "overruns": int(row[OVERRUNS]),
                    "queue_depth": queue, "restarts": st.restarts, "pid": st.pid, "alive": _alive(st.process),
                    "ready": st.ready and _alive(st.process)}

        return [combine_replicas([process_row(self._stages[w]) for w in rows]) for rows in self._by_stage]

    def close(self) -> None:
        if self._closing:
            return
        with self._lock:
            self._closing = True
        for st in self._stages:
            self._ctrl_send(st, ("stop",))
        with self._restart_lock:
            self._res.stop_processes(self.stop_timeout_s)
        if hasattr(self, "_wake_w"):
            try:
                self._wake_w.send_bytes(b"x")
            except OSError:
                pass
        with self._replay_cond:
            self._replay_cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(5.0)
        stuck = any(t.is_alive() for t in self._threads)
        for st in self._stages:
            if st.ctrl is not None:
                st.ctrl.close()
        for end in getattr(self, "_senders", []) + getattr(self, "_receivers", []):
            end.close()
        if hasattr(self, "_stats"):
            self._stats = self._stats.copy()  # stage_stats() keeps answering after close
        got = self._send_lock.acquire(timeout=2.0)
        try:
            if got and not stuck:
                self._res.release_segments()
            else:  # a thread may still be using a ring: unlink the names, keep the mappings
                for seg in self._res.segments:
                    seg.unlink()
        finally:
            if got:
                self._send_lock.release()
        self._finalizer.detach()
        with self._lock:
            pending, self._inflight = self._inflight, {}
        for rid in sorted(pending):
            self._hand_over(rid, RuntimeFault("the local executor was closed before this request completed"))

    # ---- processes and channels -------------------------------------------------------------
    def _backend_classes(self) -> bytes:
        wanted = {s.backend for s in self._specs}
        classes = {}
        for name, cls in _device.BACKENDS.items():
            if name in wanted:
                try:
                    pickle.dumps(cls)
                    classes[name] = cls
                except Exception:  # noqa: BLE001 - defined where a stage cannot import it
                    pass
        return pickle.dumps(classes)

    def _producers(self, b: int) -> list[int]:
        """The processes writing into boundary b (b feeds stage b)."""
        return [PARENT] if b == 0 else self._by_stage[b - 1]

    def _consumers(self, b: int) -> list[int]:
        return [PARENT] if b == len(self._specs) else self._by_stage[b]

    def _in_keys(self, st: _Stage) -> list[tuple]:
        return [(st.stage, a, st.row) for a in self._producers(st.stage)]

    def _out_keys(self, st: _Stage) -> list[tuple]:
        return [(st.stage + 1, st.row, c) for c in self._consumers(st.stage + 1)]

    def _new_channel(self, b: int):
        """(producer end, consumer end, segment) of a fresh channel at boundary b."""
        seg = Segment.create(b, self.slots, self._layouts[b])
        self._res.segments.append(seg)
        a, c = self._ctx.Pipe(duplex=True)
        return a, c, seg

    def _spawn(self, st: _Stage, ends: dict) -> None:
        """Start `st`'s process on the consumer ends of its input channels and the producer
        ends of its output channels (taken from `ends`: key -> (producer, consumer, segment))."""
        ins, outs = self._in_keys(st), self._out_keys(st)
        parent_ctrl, child_ctrl = self._ctx.Pipe(duplex=True)
        boot = StageBoot(spec=st.spec, row=st.row, nrows=len(self._stats), paced=self._paced,
                         time_scale=self._time_scale, threads=self._threads_per_stage,
                         in_descs=tuple(ends[key][2].desc for key in ins),
                         in_rows=tuple(self._chan_row[key] for key in ins),
                         out_descs=tuple(ends[key][2].desc for key in outs),
                         out_rows=tuple(self._chan_row[key] for key in outs),
                         stats=self._stats_seg.desc, backends=self._backends, env=self.env)
        in_ends, out_ends = [ends[key][1] for key in ins], [ends[key][0] for key in outs]
        p = self._ctx.Process(target=stage_main, args=(boot, child_ctrl, in_ends, out_ends),
                              name=f"conveyor-stage-{st.stage}" + (f".{st.replica}" if st.replica else ""),
                              daemon=True)
        _start_without_main(p)
        self._res.processes.append(p)
        for c in [child_ctrl] + in_ends + out_ends:
            c.close()
        st.process, st.ctrl, st.pid, st.ready, st.last_error = p, parent_ctrl, p.pid, False, None

    def _await_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        waiting = {st.ctrl: st for st in self._stages}
        sentinels = {st.process.sentinel: st for st in self._stages}
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(st.where for st in waiting.values())
                raise RuntimeFault(f"local executor: {names} did not load within {self.start_timeout_s:g} s "
                                   "(start_timeout_s)")
            for obj in wait(list(waiting) + list(sentinels), left):
                if obj in waiting:
                    st = waiting[obj]
                    try:
                        msg = obj.recv()
                    except (EOFError, OSError):
                        msg = ("died",)
                    if msg[0] == "ready":
                        st.ready = True
                        del waiting[obj]
                        del sentinels[st.process.sentinel]
                    elif msg[0] == "load_failed":
                        raise RuntimeFault(f"local executor: cannot load {msg[1]}")
                elif obj in sentinels:
                    st = sentinels[obj]
                    while st.ctrl.poll(0):
                        try:
                            msg = st.ctrl.recv()
                        except (EOFError, OSError):
                            break
                        if msg[0] == "load_failed":
                            raise RuntimeFault(f"local executor: cannot load {msg[1]}")
                    raise RuntimeFault(f"local executor: {st.where} died while loading "
                                       f"({_exit_text(st.process.exitcode)})")

    def _start_thread(self, target, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        self._threads.append(t)
        t.start()

    def _ctrl_send(self, st: _Stage, msg, conn=None) -> bool:
        if st.ctrl is None:
            return False
        with st.ctrl_lock:
            try:
                st.ctrl.send(msg)
                if conn is not None:
                    send_conn(st.ctrl, conn, st.pid)
                return True
            except OSError:
                return False

    # ---- data path ---------------------------------------------------------------------------
    def _write(self, rid: int, bundle, block: bool = True) -> bool:
        """Into channel 0, blocking while its ring is full (`block=False`: False at once
        instead). The request is already in flight, so a write lost to a dying stage 0 is
        replayed after the restart."""
        if not self._send_lock.acquire(blocking=block):
            return False  # another sender is waiting for room: so would this one
        try:
            while True:
                if self._failed:
                    raise RuntimeFault(self._failed)
                if self._closing:
                    raise RuntimeFault("the local executor is closed")
                c = route(rid, len(self._senders))
                tx = self._senders[c]
                slot = tx.slot(100 if block else 0)
                if slot is None:
                    if not block:
                        return False
                    if not tx.alive:
                        time.sleep(0.005)  # stage 0 died: the supervisor is replacing the channel
                    continue
                try:
                    tx.put(rid, slot, bundle)
                    self._stats[self._chan_row[(0, PARENT, self._by_stage[0][c])], PRODUCED] = tx.sent
                except OSError:
                    pass
                return True
        finally:
            self._send_lock.release()

    def _collect(self) -> None:
        """The end of the pipeline: copy results out of the last stage's channels, return the
        slots, deliver."""
        S = len(self._specs)
        rows = [self._chan_row[(S, w, PARENT)] for w in self._by_stage[S - 1]]
        while not self._closing and not self._failed:
            live = {rx.conn: (i, rx) for i, rx in enumerate(self._receivers) if rx.alive}
            if not live:
                time.sleep(0.005)  # the last stage died: wait for the new channel
                continue
            try:  # one channel (the usual case): poll it directly, cheaper than a selector
                ready = ([c for c in live if c.poll(0.2)] if len(live) == 1 else wait(list(live), 0.2))
            except (EOFError, OSError, ValueError):
                continue  # a channel replaced meanwhile
            for conn in ready:
                i, rx = live[conn]
                try:
                    rid, slot, views = rx.recv()
                except (EOFError, OSError, ValueError):
                    continue
                result = {name: np.array(a, copy=True) for name, a in views.items()}
                del views
                rx.free(slot)
                self._stats[rows[i], CONSUMED] = rx.received
                self._complete(rid, result)

    def _hand_over(self, rid: int, result) -> None:
        """`deliver`, shielded: an exception in the callback must not stop the thread that
        calls it (the collector, the supervisor)."""
        try:
            self._deliver(rid, result)
        except Exception:  # noqa: BLE001
            import traceback

            traceback.print_exc()

    def _complete(self, rid: int, result) -> None:
        with self._lock:
            if self._inflight.pop(rid, None) is None:
                return  # delivered already (a replay's duplicate), or failed with the pipeline
            self._crashes.pop(rid, None)
        self._hand_over(rid, result)

    # ---- faults --------------------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._closing and not self._failed and not self._res.ended:
            objs = {self._wake_r: None}
            for st in self._stages:
                if st.process is not None:
                    objs[st.ctrl] = st
                    objs[st.process.sentinel] = st
            try:
                ready = wait(list(objs), 1.0)
            except (OSError, ValueError):
                continue
            if self._closing:
                return
            dead = []
            for obj in ready:
                st = objs.get(obj)
                if st is None:
                    continue
                if obj is st.ctrl:
                    self._drain_ctrl(st)
                elif st not in dead:
                    dead.append(st)
            for st in dead:
                if self._closing or self._failed:
                    return
                try:
                    self._on_death(st)
                except Exception as e:  # noqa: BLE001 - cannot restart (fork failed, no memory...)
                    self._give_up(f"{st.where} died and could not be restarted: {type(e).__name__}: {e}")
                    return

    def _drain_ctrl(self, st: _Stage) -> None:
        while True:
            try:
                if not st.ctrl.poll(0):
                    return
                msg = st.ctrl.recv()
            except (EOFError, OSError):
                return
            if msg[0] == "error":
                self._complete(msg[1], msg[2])
            elif msg[0] == "ready":
                st.ready = True
            elif msg[0] == "load_failed":
                st.last_error = msg[1]

    def _on_death(self, st: _Stage) -> None:
        k = st.row
        self._drain_ctrl(st)
        with self._restart_lock:  # never join a process while close() or the finalizer does
            if self._closing or self._res.ended:
                return
            st.process.join(1.0)
        code = st.process.exitcode
        if st.last_error is None:
            st.last_error = f"{st.where}: process {st.pid} {_exit_text(code)}"
        now = time.monotonic()
        st.deaths.append(now)
        while st.deaths and now - st.deaths[0] > self.restart_window_s:
            st.deaths.popleft()
        if len(st.deaths) > self.max_restarts:
            self._give_up(f"{st.where} failed {len(st.deaths)} times within {self.restart_window_s:g} s; "
                          f"gave up after {self.max_restarts} restarts (max_restarts={self.max_restarts}). "
                          f"Last failure: {st.last_error}")
            return
        poisoned = None
        rid = int(self._stats[k, CURRENT])
        if st.ready and rid >= 0:
            with self._lock:
                if rid in self._inflight:
                    self._crashes[rid] = self._crashes.get(rid, 0) + 1
                    if self._crashes[rid] >= self.poison_limit:
                        poisoned = rid
        self._stats[k, CURRENT] = -1
        self._restart(k)
        if poisoned is not None:
            self._complete(poisoned, RuntimeFault(
                f"{st.where} died {self.poison_limit} times while processing this request; not retried"))
        with self._lock:
            replay = list(self._inflight)
        with self._replay_cond:
            for rid in replay:
                if rid not in self._replay_set:
                    self._replay_set.add(rid)
                    heapq.heappush(self._replay_heap, rid)
            self._replay_cond.notify()

    def _restart(self, w: int) -> None:
        """A fresh process for process w with fresh input and output channels; hand the
        neighbours (or the parent's own head and tail) their new ends."""
        st = self._stages[w]
        with self._restart_lock:
            if self._closing or self._res.ended:
                return
            ins, outs = self._in_keys(st), self._out_keys(st)
            old = [self._channels[key] for key in ins + outs]
            if st.process is not None:
                try:
                    self._res.processes.remove(st.process)
                except ValueError:
                    pass
                try:
                    st.process.close()
                except ValueError:
                    pass
            if st.ctrl is not None:
                st.ctrl.close()
            ends = {key: self._new_channel(key[0]) for key in ins + outs}
            for key, e in ends.items():
                self._channels[key] = e[2]
                self._stats[self._chan_row[key], :] = 0
            st.restarts += 1
            self._spawn(st, ends)
            for key in ins:  # producer ends: to the parent's head, or the previous stage's process
                producer, _, seg = ends[key]
                if key[1] == PARENT:
                    self._senders[st.replica] = Sender(producer, seg)
                else:
                    seg.close()
                    self._ctrl_send(self._stages[key[1]], ("rebind_out", st.replica, seg.desc), producer)
                    producer.close()
            for key in outs:  # consumer ends: to the parent's tail, or the next stage's process
                _, consumer, seg = ends[key]
                if key[2] == PARENT:
                    self._receivers[st.replica] = Receiver(consumer, seg)
                else:
                    seg.close()
                    self._ctrl_send(self._stages[key[2]], ("rebind_in", st.replica, seg.desc), consumer)
                    consumer.close()
            for seg in old:
                seg.unlink()  # the parent's own mapping of head and tail rings goes at close()

    def _replayer(self) -> None:
        """Sends again, oldest first, the requests in flight when a stage died (one thread, so
        that deaths in quick succession queue each request once)."""
        while True:
            with self._replay_cond:
                while not self._replay_heap and not self._closing and not self._failed:
                    self._replay_cond.wait(1.0)
                if self._closing or self._failed:
                    return
                rid = heapq.heappop(self._replay_heap)
                self._replay_set.discard(rid)
            with self._lock:
                bundle = self._inflight.get(rid)
            if bundle is None:
                continue  # delivered meanwhile
            try:
                self._write(rid, bundle)
            except RuntimeFault:
                return

    def _give_up(self, message: str) -> None:
        with self._lock:
            self._failed = message
            pending, self._inflight = self._inflight, {}
        for st in self._stages:
            self._ctrl_send(st, ("stop",))
        with self._restart_lock:
            self._res.stop_processes(1.0)
        with self._replay_cond:
            self._replay_cond.notify_all()
        for rid in sorted(pending):
            self._hand_over(rid, RuntimeFault(message))


def _alive(process) -> bool:
    try:
        return process is not None and process.is_alive()
    except ValueError:  # closed: it was stopped
        return False


def _exit_text(code) -> str:
    if code is None:
        return "did not exit"
    if code < 0:
        import signal

        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
