"""The HTTP front over one Pipeline (aiohttp; docs/serving.md says why): Open Inference
Protocol routes, admission (max_queue -> 503), body limit (413), bearer token, metrics.

    Server(plan, graph, name="digits").run(host="127.0.0.1", port=8000)   # until SIGTERM/SIGINT
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import hmac
import ipaddress
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from aiohttp import web
from aiohttp.http import SERVER_SOFTWARE

from conveyor.errors import ConveyorError, ModelError
from conveyor.serve.metrics import ServeMetrics
from conveyor.serve.protocol import HEADER_LENGTH, BadRequest, TensorSpec, datatype, encode_infer, parse_infer

JSON_OVERHEAD = 20  # a JSON number of a float takes up to ~20 characters: the body limit's factor


MIN_SOCKET_BUFFER = 1 << 20  # bytes; see socket_buffer_bytes


class _TooLarge(Exception):
    pass


def socket_buffer_bytes(in_bytes: int) -> int | None:
    """The send and receive buffer sizes for the listening socket (its connections inherit
    them): room for a whole binary request (2 x its tensor bytes + 64 KiB), at least 1 MiB.
    Linux starts a connection's receive buffer at 128 KiB and grows it as data comes; until
    then a 618 KB body crosses in several client-blocks, server-reads rounds, and the
    reads come in pieces that glibc's malloc maps and unmaps afresh. Measured on a bare
    aiohttp server, 618 KB in and 74 KB out, 5 runs each (docs/serving.md): without, p50
    267-935 us, bimodal (the slow runs: 315 minor page faults and ~700 us of server CPU per
    request); with, 255-302 us, 2-14 faults, 151-204 us CPU. None (keep the kernel's
    autotuning) where net.core.rmem_max or wmem_max is below the size: a fixed buffer capped
    there measured worse than autotuning (p50 741-1100 us at 208 KiB)."""
    want = max(MIN_SOCKET_BUFFER, 2 * in_bytes + 65536)
    try:
        for name in ("rmem_max", "wmem_max"):
            with open(f"/proc/sys/net/core/{name}") as f:
                if int(f.read()) < want:
                    return None
    except (OSError, ValueError):
        return None  # not Linux, or not readable: leave the kernel's defaults
    return want


def listening_sockets(host: str, port: int, buffer_bytes: int | None) -> list[socket.socket]:
    """Bound, listening TCP sockets for every address `host` resolves to, with
    SO_RCVBUF/SO_SNDBUF set to `buffer_bytes` (None: left as they are)."""
    socks = []
    try:
        for family, kind, proto, _, addr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                               flags=socket.AI_PASSIVE):
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # as asyncio does
            if buffer_bytes:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buffer_bytes)
            s.bind(addr)
            s.listen(128)
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Server:
    """One model's server. The pipeline loads in the background after the socket is bound
    (`/v2/health/live` answers at once; `/v2/health/ready` once every stage has loaded)."""

    def __init__(self, plan, graph, *, name: str | None = None, executor: str = "local", backends=None,
                 paced: bool = False, time_scale: float = 1.0, max_queue: int = 64, token: str | None = None,
                 max_body_bytes: int | None = None, **executor_options):
        if max_queue < 1:
            raise ConveyorError(f"max_queue must be >= 1, got {max_queue}")
        self.plan, self.graph = plan, graph
        self.name = name or graph.name
        self.max_queue = max_queue
        self.token = token
        self.inputs = [TensorSpec(t.name, datatype(t.dtype), tuple(t.shape)) for t in graph.inputs]
        self.in_bytes = in_bytes = sum(int(np.prod(t.shape)) * np.dtype(t.dtype).itemsize for t in graph.inputs)
        # JSON writes each value in up to ~20 bytes; 4x that (and 64 KiB for headers) is "a few times"
        self.max_body_bytes = max_body_bytes or 4 * JSON_OVERHEAD * in_bytes + 65536
        self._pipe_args = dict(executor=executor, backends=backends, paced=paced, time_scale=time_scale,
                               max_in_flight=max_queue, **executor_options)
        self.pipeline = None
        self.load_error: str | None = None
        self.outputs: list[TensorSpec] = []
        self._output_names: tuple[str, ...] = ()
        self._in_flight = 0
        self._submitter = ThreadPoolExecutor(1, thread_name_prefix="conveyor-serve-submit")
        self.metrics = ServeMetrics(self.name, lambda: self.pipeline.stats() if self.pipeline else None)
        # the per-model children, looked up once (labels() takes a lock and a dict lookup per call)
        self._latency = self.metrics.latency.labels(self.name)
        self._answered = self.metrics.requests.labels(self.name, "200")
        self._gauge = self.metrics.in_flight.labels(self.name)
        self._header_cache: dict = {}  # checked request headers (protocol.parse_infer)
        self._head_cache: dict = {}    # answers' JSON headers (protocol.encode_infer)
        self.app = self._make_app()

    # ---- lifecycle ----------------------------------------------------------------------
    def _own_pipeline(self) -> None:
        """The pipeline's owner thread: opens it, lives as long as the server, closes it. It must
        outlive the pipeline: the processes a local Ray is started with die with the thread that
        started them (PR_SET_PDEATHSIG follows the thread, not the process)."""
        from conveyor.runtime import Pipeline

        pipe = None
        try:
            pipe = Pipeline(self.plan, self.graph, **self._pipe_args)
            probe = {t.name: np.zeros(t.shape, t.dtype) for t in self.graph.inputs}
            out = pipe.submit(probe).result()  # a warm-up, and the outputs' datatypes as served
            self.outputs = [TensorSpec(n, datatype(out[n].dtype), tuple(out[n].shape)) for n in self.graph.output_names]
            self._output_names = tuple(t.name for t in self.outputs)
            self.pipeline = pipe
        except Exception as e:  # noqa: BLE001 - reported by /v2/health/ready and the log
            self.load_error = f"{type(e).__name__}: {e}"
            print(f"conveyor serve: cannot load the pipeline: {self.load_error}", flush=True)
        self._stopping.wait()
        if pipe is not None:
            pipe.close()

    async def _on_startup(self, app) -> None:
        self._stopping = threading.Event()
        self._owner = threading.Thread(target=self._own_pipeline, name="conveyor-serve-pipeline", daemon=True)
        self._owner.start()

    async def _on_cleanup(self, app) -> None:
        self._stopping.set()  # aiohttp has finished the requests in flight
        await asyncio.get_running_loop().run_in_executor(None, self._owner.join)
        self._submitter.shutdown(wait=True)

    def ready(self) -> bool:
        if self.pipeline is None:
            return False
        return all(s.get("ready", s.get("alive")) for s in self.pipeline.executor.stage_stats())

    def run(self, host: str = "127.0.0.1", port: int = 8000, print_fn=print) -> None:
        """Serve until SIGTERM/SIGINT: then stop accepting, finish what is in flight, close.
        The listening sockets' buffers hold a whole binary request (socket_buffer_bytes)."""
        socks = listening_sockets(host, port, socket_buffer_bytes(self.in_bytes))
        web.run_app(self.app, sock=socks, print=print_fn, shutdown_timeout=60.0, access_log=None,
                    handle_signals=True)

    # ---- routes -------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        # the token check only where there is a token: a middleware is one more layer on every request
        app = web.Application(client_max_size=self.max_body_bytes,
                              middlewares=[self._auth] if self.token is not None else [])
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        r = app.router
        r.add_get("/v2/health/live", self._live)
        r.add_get("/v2/health/ready", self._ready)
        r.add_get("/v2", self._server_meta)
        r.add_get("/v2/models/{name}", self._model_meta)
        r.add_get("/v2/models/{name}/ready", self._model_ready)
        r.add_post("/v2/models/{name}/infer", self._infer)
        r.add_get("/metrics", self._metrics)
        return app

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if not request.path.startswith("/v2/health/"):
            got = request.headers.get("Authorization", "")
            if not hmac.compare_digest(got.encode(), f"Bearer {self.token}".encode()):
                self.metrics.failed("unauthorized")
                return _error(401, "expected 'Authorization: Bearer <token>' (the server's --token)",
                              {"WWW-Authenticate": "Bearer"})
        return await handler(request)

    async def _live(self, request):
        return web.json_response({"live": True})

    async def _ready(self, request):
        ok = await asyncio.get_running_loop().run_in_executor(None, self.ready)
        body = {"ready": ok} if self.load_error is None else {"ready": False, "error": self.load_error}
        return web.json_response(body, status=200 if ok else 503)

    async def _server_meta(self, request):
        from importlib.metadata import PackageNotFoundError, version

        try:
            v = version("conveyor")
        except PackageNotFoundError:
            v = "dev"
        return web.json_response({"name": "conveyor", "version": v, "extensions": ["binary_tensor_data"]})

    def _model_or_404(self, request) -> web.Response | None:
        name = request.match_info["name"]
        if name != self.name:
            self.metrics.failed("unknown_model")
            return _error(404, f"unknown model '{name}'; this server serves '{self.name}'")
        return None

    async def _model_meta(self, request):
        if (bad := self._model_or_404(request)) is not None:
            return bad
        return web.json_response({"name": self.name, "versions": ["1"], "platform": "conveyor",
                                  "inputs": [t.meta() for t in self.inputs],
                                  "outputs": [t.meta() for t in self.outputs]})

    async def _model_ready(self, request):
        if (bad := self._model_or_404(request)) is not None:
            return bad
        ok = await asyncio.get_running_loop().run_in_executor(None, self.ready)
        return web.json_response({"name": self.name, "ready": ok}, status=200 if ok else 503)

    async def _metrics(self, request):
        text = await asyncio.get_running_loop().run_in_executor(None, self.metrics.text)
        return web.Response(body=text, headers={"Content-Type": "text/plain; version=0.0.4"})

    async def _infer(self, request: web.Request):
        if (bad := self._model_or_404(request)) is not None:
            return bad
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            self.metrics.failed("too_large")  # refused before the body is read
            return _error(413, f"body of {request.content_length} bytes; the limit is {self.max_body_bytes}")
        if self.pipeline is None:
            self.metrics.failed("not_ready")
            return _error(503, "the model is still loading" if self.load_error is None else self.load_error,
                          {"Retry-After": "1"})
        if self._in_flight >= self.max_queue:
            self.metrics.failed("overloaded")
            return _error(503, f"{self._in_flight} requests in flight (--max-queue {self.max_queue}); retry",
                          {"Retry-After": "1"})
        self._in_flight += 1
        self._gauge.inc()
        t0 = time.perf_counter()
        try:
            try:
                body = await self._read_body(request)
            except (_TooLarge, web.HTTPRequestEntityTooLarge):
                self.metrics.failed("too_large")
                return _error(413, f"body over the limit of {self.max_body_bytes} bytes")
            try:
                req = parse_infer(body, request.headers.get(HEADER_LENGTH), self.inputs, self._header_cache)
            except BadRequest as e:
                self.metrics.failed("bad_request")
                return _error(400, str(e))
            loop = asyncio.get_running_loop()
            # On the loop's own thread when there is room (no thread hop on the way in); a
            # request that must wait for room waits on the submit thread, never on the loop
            fut = self.pipeline.try_submit(req.inputs)
            if fut is None:
                fut = await loop.run_in_executor(self._submitter, self.pipeline.submit, req.inputs)
            if not fut.done():
                # woken straight from the pipeline's thread: one call_soon_threadsafe, no
                # future chaining (asyncio.wrap_future copies state across two futures)
                waiter = loop.create_future()
                fut.add_done_callback(functools.partial(_wake_from_thread, loop, waiter))
                await waiter
            try:
                out = fut.result()
            except ModelError as e:
                self.metrics.failed("bad_request")
                return _error(400, str(e))
            except ConveyorError as e:
                self.metrics.failed("pipeline")
                return _error(500, str(e))
            try:
                payload, headers = encode_infer(self.name, req, out, self._output_names, self._head_cache)
            except BadRequest as e:
                self.metrics.failed("bad_request")
                return _error(400, str(e))
            self._latency.observe(time.perf_counter() - t0)
            self._answered.inc()
            return _Answer(request, payload, headers)
        finally:
            self._in_flight -= 1
            self._gauge.dec()

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body, copied once (`request.read()` copies it twice more: into a
        bytearray, then into bytes). Chunked bodies are cut at the limit as they come."""
        content = request.content
        if hasattr(content, "set_read_chunk_size"):  # where aiohttp has it: no pausing the socket mid-body
            content.set_read_chunk_size(self.max_body_bytes)
        chunks, size = [], 0
        while chunk := await content.readany():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge(size)
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _Answer:
    """A 200 answer to /infer, written as one bytes object with one `transport.write`:
    status line, headers and body built here instead of by `web.Response`. aiohttp's own
    path (a Response, its CIMultiDict headers, `prepare` serializing them, `write_eof`) ran
    ~330 us of the event loop per answer in the server, cold caches (handler return ->
    written, measured per request, docs/serving.md); the bytes on the wire are the same
    headers aiohttp writes (Content-Type, Content-Length, Date, Server; Connection as the
    request's version and keep-alive need). aiohttp's request loop calls only `prepare`,
    `write_eof` and reads `keep_alive` of what a handler returns (web_protocol.py)."""

    __slots__ = ("keep_alive", "status", "_data")

    def __init__(self, request: web.Request, body: bytes, headers: dict[str, str]):
        self.status = 200
        version = request.version
        self.keep_alive = keep = request.keep_alive
        lines = [f"HTTP/{version.major}.{version.minor} 200 OK"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        lines += [f"Content-Length: {len(body)}", f"Date: {_http_date()}", f"Server: {SERVER_SOFTWARE}"]
        if keep and version < (1, 1):
            lines.append("Connection: keep-alive")
        elif not keep and version >= (1, 1):
            lines.append("Connection: close")
        self._data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    async def prepare(self, request: web.Request) -> None:
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ConnectionResetError("the client closed the connection before its answer")
        # no drain: what the kernel does not take at once waits in the transport's buffer,
        # bounded by the requests admitted (--max-queue) x the answer's size
        transport.write(self._data)
        self._data = b""

    async def write_eof(self, data: bytes = b"") -> None:
        return None


_date_cache = [0, ""]


def _http_date() -> str:
    """The Date header's value (RFC 9110 IMF-fixdate), formatted once a second."""
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[0], _date_cache[1] = now, email.utils.formatdate(now, usegmt=True)
    return _date_cache[1]


def _wake_from_thread(loop: asyncio.AbstractEventLoop, waiter: asyncio.Future, _done) -> None:
    """A Future's done callback (on the pipeline's thread): wake `waiter` on `loop`."""
    try:
        loop.call_soon_threadsafe(_set_done, waiter)
    except RuntimeError:
        pass  # the loop has closed meanwhile: nobody is waiting


def _set_done(waiter: asyncio.Future) -> None:
    if not waiter.done():  # not cancelled meanwhile
        waiter.set_result(None)


def _error(status: int, message: str, headers: dict | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)
