"""Shared-memory channels: the local executor's data plane between stage processes.

A channel carries bundles ({tensor name: array}) one way, from one producer process to one
consumer process, one request per message (batch 1), many requests in flight:

- **data**: a POSIX shared-memory segment cut into `nslots` fixed-size slots. A slot holds
  one bundle, every array at a 64-byte aligned offset. The slot size and the *planned
  layout* (names, shapes, dtypes, offsets) come from the stage specs: the tensors crossing
  the cut with their static shapes and dtypes, float values made by an emulator stage
  counted as float64 (`channel_layouts`). Arrays never travel through a pipe.
- **control**: one socketpair (a duplex `multiprocessing.connection.Connection`). The
  producer sends `(request_id, slot, header)` once the bundle is in the slot; `header` is
  None when the bundle has the planned layout, else a tuple of (name, dtype, shape, offset)
  placing differently typed or shaped arrays inside the same slot. A bundle that fits no slot
  (not expected: only if a backend returns far larger values than the graph declares) or
  holds Python objects travels pickled in the message instead, with slot -1. The consumer
  sends the slot index back (4 bytes) once it no longer reads the slot.
- **back-pressure**: the producer owns the free slots (initially all of them). With none
  free it blocks until the consumer returns one, so a slow stage stalls the stages before
  it and, at the head of the pipeline, the sender.
- **ownership**: the parent process creates (and alone unlinks) every segment; stage
  processes attach by name without registering with the resource tracker. A channel is never
  repaired: when either end dies, the parent makes a fresh segment and socketpair and hands
  the surviving end's process its new end (`send_conn`: SCM_RIGHTS over its control
  connection).

The arrays a `Receiver` hands out are views into the slot: they are valid until the slot is
freed, after which the producer may overwrite them.
"""

from __future__ import annotations

import itertools
import os
import pickle
import select
import struct
import sys
from collections import deque
from dataclasses import dataclass
from multiprocessing import reduction, resource_tracker, shared_memory
from multiprocessing.connection import Connection
from typing import Any, Iterable, Mapping

import numpy as np

#: every segment this package creates is named SEGMENT_PREFIX + "<creator pid>-<n>"
SEGMENT_PREFIX = "conveyor-"
ALIGN = 64
_FREE = struct.Struct("i")
_counter = itertools.count()


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass(frozen=True)
class Layout:
    """Where each array of a bundle sits inside a slot."""

    entries: tuple[tuple[str, str, tuple[int, ...], int], ...]  # name, dtype str, shape, offset
    slot_bytes: int

    @classmethod
    def of(cls, tensors: Iterable[tuple[str, Any, tuple[int, ...]]], extra_bytes: int = 0) -> "Layout":
        """`tensors`: (name, dtype, shape) in bundle order."""
        entries, off = [], 0
        for name, dtype, shape in tensors:
            dt = np.dtype(dtype)
            shape = tuple(int(d) for d in shape)
            entries.append((name, dt.str, shape, off))
            off = _align(off + int(np.prod(shape, dtype=np.int64)) * dt.itemsize)
        return cls(tuple(entries), max(ALIGN, _align(off + extra_bytes)))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(e[0] for e in self.entries)


@dataclass(frozen=True)
class ChannelDesc:
    """What a process needs to attach to a channel's segment (picklable, small)."""

    index: int          # channel i feeds stage i; channel S feeds the parent
    segment: str        # shared-memory name
    nslots: int
    layout: Layout


def channel_layouts(specs, paced: bool = False) -> list[Layout]:
    """The planned layout of each channel 0..S for stage specs 0..S-1.

    Channel 0 carries the graph inputs the pipeline sends to stage 0 (what stage 0 needs plus
    the inputs it passes on); channel i carries stage i-1's `forwards`. Shapes and dtypes come
    from the stage sub-graphs' tensors; a floating value produced by an emulator stage is
    laid out as float64, the emulator's carrier type. Paced, every bundle also carries its
    release time (`worker.RELEASE_KEY`, a float64 scalar)."""
    from conveyor.runtime.worker import RELEASE_KEY

    pace = [(RELEASE_KEY, np.float64, ())] if paced else []
    info: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}
    made_by: dict[str, Any] = {}
    for spec in specs:
        for name, t in spec.graph.tensors.items():
            info.setdefault(name, (np.dtype(t.dtype), tuple(t.shape)))
        for node in spec.graph.nodes:
            for o in node.outputs:
                if o:
                    made_by[o] = spec

    def entry(name: str):
        if name not in info:
            raise KeyError(f"tensor '{name}' is in no stage sub-graph")
        dt, shape = info[name]
        spec = made_by.get(name)
        if spec is not None and spec.backend == "emulator" and dt.kind == "f":
            dt = np.dtype(np.float64)
        return name, dt, shape

    first = specs[0]
    produced0 = {o for n in first.graph.nodes for o in n.outputs if o}
    names0 = list(dict.fromkeys(list(first.needs) + [t for t in first.forwards if t not in produced0]))
    layouts = [Layout.of([entry(n) for n in names0] + pace)]
    for spec in specs:
        layouts.append(Layout.of([entry(n) for n in spec.forwards] + pace))
    return layouts


# ---- segments ------------------------------------------------------------------------------


class Segment:
    """One channel's shared memory, cut into slots; caches the planned-layout views."""

    def __init__(self, shm: shared_memory.SharedMemory, desc: ChannelDesc, owner: bool):
        self.shm = shm
        self.desc = desc
        self.owner = owner
        self._views: dict[int, dict[str, np.ndarray]] = {}
        self._unlinked = False

    @classmethod
    def create(cls, index: int, nslots: int, layout: Layout) -> "Segment":
        name = f"{SEGMENT_PREFIX}{os.getpid()}-{next(_counter)}"
        shm = shared_memory.SharedMemory(name=name, create=True, size=nslots * layout.slot_bytes)
        return cls(shm, ChannelDesc(index, shm.name, nslots, layout), owner=True)

    @classmethod
    def attach(cls, desc: ChannelDesc) -> "Segment":
        """Attach without registering with the resource tracker: the creator owns the name."""
        if sys.version_info >= (3, 13):
            shm = shared_memory.SharedMemory(name=desc.segment, track=False)
        else:
            register = resource_tracker.register
            resource_tracker.register = lambda *a, **k: None
            try:
                shm = shared_memory.SharedMemory(name=desc.segment)
            finally:
                resource_tracker.register = register
        return cls(shm, desc, owner=False)

    @property
    def buf(self):
        return self.shm.buf

    def views(self, slot: int) -> dict[str, np.ndarray]:
        v = self._views.get(slot)
        if v is None:
            base = slot * self.desc.layout.slot_bytes
            v = self._views[slot] = {
                name: np.ndarray(shape, np.dtype(dt), buffer=self.shm.buf, offset=base + off)
                for name, dt, shape, off in self.desc.layout.entries}
        return v

    def write(self, slot: int, bundle: Mapping[str, np.ndarray]):
        """Copy `bundle` into `slot`; the header to send (None: planned layout).
        Raises `DoesNotFit` when it must travel pickled instead."""
        planned = self.views(slot)
        if len(bundle) == len(planned):
            try:
                if all(a.shape == planned[k].shape and a.dtype == planned[k].dtype for k, a in bundle.items()):
                    for k, a in bundle.items():
                        np.copyto(planned[k], a, casting="no")
                    return None
            except (KeyError, AttributeError):
                pass
        header, off = [], 0
        base, size = slot * self.desc.layout.slot_bytes, self.desc.layout.slot_bytes
        arrays = {k: np.asarray(a) for k, a in bundle.items()}
        for k, a in arrays.items():
            if a.dtype.hasobject or off + a.nbytes > size:
                raise DoesNotFit(k)
            header.append((k, a.dtype.str, a.shape, off))
            off = _align(off + a.nbytes)
        for (k, dt, shape, o), a in zip(header, arrays.values()):
            np.copyto(np.ndarray(shape, np.dtype(dt), buffer=self.shm.buf, offset=base + o), a, casting="no")
        return tuple(header)

    def read(self, slot: int, header) -> dict[str, np.ndarray]:
        if header is None:
            return dict(self.views(slot))
        base = slot * self.desc.layout.slot_bytes
        return {k: np.ndarray(shape, np.dtype(dt), buffer=self.shm.buf, offset=base + o) for k, dt, shape, o in header}

    def close(self) -> bool:
        """Unmap (False when arrays still view the segment: it stays mapped until exit)."""
        self._views.clear()
        try:
            self.shm.close()
            return True
        except BufferError:
            return False

    def unlink(self) -> None:
        if self.owner and not self._unlinked:
            self._unlinked = True
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


class DoesNotFit(Exception):
    pass


# ---- the two ends ----------------------------------------------------------------------------


class Sender:
    """The producer end: owns the free slots, writes bundles, announces them."""

    def __init__(self, conn: Connection, segment: Segment | None):
        """`segment` None: a dead end (its channel was replaced before it could attach)."""
        self.conn = conn
        self.segment = segment
        self.free: deque[int] = deque(range(segment.desc.nslots) if segment else ())
        self.alive = segment is not None
        self.sent = 0
        self._poll = select.poll()
        if segment is not None:
            self._poll.register(conn.fileno(), select.POLLIN)

    def collect(self) -> None:
        """Take back the slots the consumer has returned so far."""
        self._drain(0)

    def _drain(self, timeout_ms: int | None) -> None:
        """Collect returned slots, waiting up to `timeout_ms` (None: forever) for the first."""
        if not self.alive:
            return
        try:
            if not self._poll.poll(timeout_ms):
                return
            while True:
                self.free.append(_FREE.unpack(self.conn.recv_bytes())[0])
                if not self._poll.poll(0):
                    return
        except (EOFError, OSError):
            self.alive = False

    def slot(self, timeout_ms: int | None = 0) -> int | None:
        """A free slot, waiting up to `timeout_ms` for one; None if none came (or the
        consumer is gone: `alive` turns False)."""
        self._drain(0)
        if not self.free and timeout_ms != 0:
            self._drain(timeout_ms)
        return self.free.popleft() if self.free else None

    def put(self, request_id: int, slot: int, bundle: Mapping[str, np.ndarray]) -> None:
        """Write `bundle` into `slot` and announce it (raises OSError if the consumer is gone)."""
        try:
            header = self.segment.write(slot, bundle)
            msg = (request_id, slot, header)
        except DoesNotFit:
            self.free.appendleft(slot)
            msg = (request_id, -1, {k: np.asarray(a) for k, a in bundle.items()})
        try:
            self.conn.send_bytes(pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            self.alive = False
            raise
        self.sent += 1

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


class Receiver:
    """The consumer end: receives announcements, reads slots, returns them."""

    def __init__(self, conn: Connection, segment: Segment | None):
        """`segment` None: a dead end (its channel was replaced before it could attach)."""
        self.conn = conn
        self.segment = segment
        self.alive = segment is not None
        self.received = 0

    def fileno(self) -> int:
        return self.conn.fileno()

    def recv(self) -> tuple[int, int, dict[str, np.ndarray]]:
        """(request_id, slot, bundle of views into the slot). Raises EOFError/OSError when
        the producer is gone (`alive` turns False)."""
        try:
            rid, slot, header = pickle.loads(self.conn.recv_bytes())
        except (EOFError, OSError):
            self.alive = False
            raise
        self.received += 1
        if slot < 0:
            return rid, slot, header
        return rid, slot, self.segment.read(slot, header)

    def free(self, slot: int) -> None:
        if slot < 0 or not self.alive:
            return
        try:
            self.conn.send_bytes(_FREE.pack(slot))
        except OSError:
            self.alive = False

    def close(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass


# ---- handing a connection to a running process ------------------------------------------------


def send_conn(ctrl: Connection, conn: Connection, pid: int) -> None:
    """Pass `conn`'s descriptor to the process at the other end of `ctrl` (the caller then
    closes its own copy)."""
    reduction.send_handle(ctrl, conn.fileno(), pid)


def recv_conn(ctrl: Connection) -> Connection:
    return Connection(reduction.recv_handle(ctrl))
