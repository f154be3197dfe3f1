"""The stage process of the local executor (see `conveyor.runtime.local` for the protocol).

Imported by the forkserver ahead of time (preload), so that starting or restarting a stage
costs a fork and the stage's weight load, not the imports.
"""

from __future__ import annotations

import os
import pickle
import select
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from conveyor.errors import ConveyorError, RuntimeFault
from conveyor.runtime import device as _device
from conveyor.runtime.channels import ChannelDesc, Receiver, Segment, Sender, recv_conn
from conveyor.runtime.stages import route
from conveyor.runtime.worker import StageWorker

# columns of the shared stats block: one row per stage process, then one row per channel
ITEMS, BUSY, CURRENT, OVERRUNS = 0, 1, 2, 3  # process rows: items done, busy seconds, request in
                                              # hand (-1: none), paced items slower than modeled
PRODUCED, CONSUMED = 0, 1              # channel rows: announced by the producer, taken by the consumer
STAT_COLS = 4


def stats_view(buf, nrows: int) -> np.ndarray:
    return np.ndarray((nrows, STAT_COLS), np.float64, buffer=buf)


def stats_bytes(nrows: int) -> int:
    return nrows * STAT_COLS * 8


@dataclass(frozen=True)
class StageBoot:
    """Everything a stage process starts from (pickled once, at process start).

    A stage process reads from one channel per producer (the previous stage's replicas, or
    the parent) and writes to one channel per consumer (the next stage's replicas, or the
    parent), choosing the consumer with `route`."""

    spec: Any                   # StageSpec (its device: this replica's)
    row: int                    # this process's row in the stats block
    nrows: int                  # rows in the stats block
    paced: bool
    time_scale: float
    threads: int                # BLAS / OpenMP threads this stage may use
    in_descs: tuple             # ChannelDesc per producer
    in_rows: tuple              # their stats rows
    out_descs: tuple            # ChannelDesc per consumer
    out_rows: tuple
    stats: ChannelDesc          # the stats block (a segment with one "slot")
    backends: bytes             # pickled {name: Device subclass} the parent knows
    env: dict


class _Stop(Exception):
    pass


def stage_main(boot: StageBoot, ctrl, in_conns, out_conns) -> None:
    """Load the stage once, then serve: receive, process, send on, free; obey the parent."""
    os.environ.update(boot.env)
    from threadpoolctl import threadpool_limits

    threadpool_limits(boot.threads)  # in force for the process's life (only __exit__ would undo it)
    spec = boot.spec
    row = boot.row
    where = f"stage {spec.index} on '{spec.device}' ({spec.backend})"
    try:
        try:
            _device.BACKENDS.update(pickle.loads(boot.backends))
        except Exception:  # a backend class this process cannot import: use what it knows
            pass
        stats_seg = Segment.attach(boot.stats)
        stats = stats_view(stats_seg.buf, boot.nrows)
        worker = StageWorker(spec, boot.paced, boot.time_scale)
    except BaseException as e:  # noqa: BLE001 - the parent counts this as a failed (re)start
        what = str(e) if isinstance(e, ConveyorError) else f"{type(e).__name__}: {e}"  # a user error: its own words
        _send(ctrl, ("load_failed", f"{where}: {what}"))
        sys.exit(3)
    worker.items, worker.busy_s = int(stats[row, ITEMS]), float(stats[row, BUSY])  # a restart goes on counting
    if worker.pacer is not None:
        worker.pacer.overruns = int(stats[row, OVERRUNS])
    ins = [Receiver(c, _attach(d, c)) for c, d in zip(in_conns, boot.in_descs)]
    outs = [Sender(c, _attach(d, c)) for c, d in zip(out_conns, boot.out_descs)]
    retired: list = []
    ctrl_poll = select.poll()
    ctrl_poll.register(ctrl.fileno(), select.POLLIN)
    main_poll: list = []  # [poll over ctrl and the live inputs]; emptied when the inputs change
    turn = 0              # the input read first when several are ready (round robin: none starves)

    def handle_ctrl() -> None:
        try:
            msg = ctrl.recv()
        except (EOFError, OSError):
            raise _Stop from None  # the parent is gone
        if msg[0] == "stop":
            raise _Stop
        if msg[0] == "rebind_in":
            conn = recv_conn(ctrl)
            retired.append(ins[msg[1]])
            ins[msg[1]] = Receiver(conn, _attach(msg[2], conn))
            main_poll.clear()
        elif msg[0] == "rebind_out":
            conn = recv_conn(ctrl)
            retired.append(outs[msg[1]])
            outs[msg[1]] = Sender(conn, _attach(msg[2], conn))

    def send_on(rid: int, result) -> None:
        """To the next stage, waiting for a free slot; a rebind while waiting redirects it."""
        c = route(rid, len(outs))
        while True:
            while ctrl_poll.poll(0):
                handle_ctrl()
            out = outs[c]
            if out.alive:
                slot = out.slot(0)
                if slot is not None:
                    try:
                        out.put(rid, slot, result)
                        stats[boot.out_rows[c], PRODUCED] = out.sent
                    except OSError:
                        pass  # the next stage died: the parent replays what was in flight
                    return
            poll = select.poll()
            poll.register(ctrl.fileno(), select.POLLIN)
            if out.alive:
                poll.register(out.conn.fileno(), select.POLLIN)
            for fd, _ in poll.poll():
                if fd == ctrl.fileno():
                    handle_ctrl()
                else:
                    out.collect()  # returned slots (or notice the end)
                    if out.free:
                        break

    _send(ctrl, ("ready", os.getpid()))
    try:
        while True:
            if not main_poll:
                poll = select.poll()
                poll.register(ctrl.fileno(), select.POLLIN)
                for r in ins:
                    if r.alive:
                        poll.register(r.fileno(), select.POLLIN)
                main_poll[:] = [poll]
            ready = [fd for fd, _ in main_poll[0].poll()]
            if ctrl.fileno() in ready:
                handle_ctrl()
                continue
            if len(ins) == 1:
                p = 0
            else:
                p = next((p for p in ((turn + j) % len(ins) for j in range(len(ins)))
                          if ins[p].alive and ins[p].fileno() in ready), None)
                if p is None:
                    continue
                turn = (p + 1) % len(ins)
            src = ins[p]
            try:
                rid, slot, bundle = src.recv()
            except (EOFError, OSError):
                main_poll.clear()  # the previous stage died: wait for the parent's rebind
                continue
            stats[boot.in_rows[p], CONSUMED] = src.received
            stats[row, CURRENT] = rid
            try:
                result = worker.process(bundle)
            except Exception as e:  # noqa: BLE001 - fails this request only
                del bundle
                src.free(slot)
                stats[row, CURRENT] = -1
                _send(ctrl, ("error", rid, _portable(e, where)))
                continue
            stats[row, CURRENT] = -1  # a death from here on is not this request's doing
            stats[row, ITEMS], stats[row, BUSY] = worker.items, worker.busy_s  # before the result is seen
            stats[row, OVERRUNS] = worker.overruns
            send_on(rid, result)
            del bundle, result
            src.free(slot)
            if retired:
                retired[:] = [r for r in retired if not _retire(r)]
    except _Stop:
        pass
    finally:
        try:
            worker.close()
        except Exception:  # noqa: BLE001
            pass


def _attach(desc: ChannelDesc, conn):
    """The channel's segment; None when the parent has already replaced the channel (a
    neighbour died meanwhile): the end is dead and a rebind follows."""
    try:
        return Segment.attach(desc)
    except FileNotFoundError:
        conn.close()
        return None


def _retire(end) -> bool:
    end.close()
    return end.segment is None or end.segment.close()


def _send(ctrl, msg) -> None:
    try:
        ctrl.send(msg)
    except OSError:
        pass


def _portable(e: BaseException, where: str) -> BaseException:
    """The exception itself when it survives pickling (with a note saying where), else a
    RuntimeFault carrying its text."""
    try:
        if hasattr(e, "add_note"):
            e.add_note(f"in {where}")
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeFault(f"{where}: {type(e).__name__}: {e}")
