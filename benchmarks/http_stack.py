"""Which HTTP stack for `conveyor serve`: a trivial echo POST round trip over loopback,
aiohttp vs Starlette on uvicorn, side by side in one run (keep-alive client, 256-byte body).

    python benchmarks/http_stack.py [N]
"""

import http.client
import multiprocessing as mp
import socket
import sys
import time

import numpy as np


def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_aiohttp(p):
    from aiohttp import web

    async def echo(request):
        return web.Response(body=await request.read())

    app = web.Application()
    app.router.add_post("/echo", echo)
    web.run_app(app, host="127.0.0.1", port=p, print=None, access_log=None)


def run_starlette(p):
    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    async def echo(request):
        return Response(await request.body())

    uvicorn.run(Starlette(routes=[Route("/echo", echo, methods=["POST"])]), host="127.0.0.1", port=p,
                log_level="error", access_log=False)


def measure(target, n):
    p = port()
    proc = mp.get_context("spawn").Process(target=target, args=(p,), daemon=True)
    proc.start()
    body = b"x" * 256
    for _ in range(100):
        try:
            c = http.client.HTTPConnection("127.0.0.1", p)
            c.request("POST", "/echo", body)
            c.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        c.request("POST", "/echo", body)
        assert c.getresponse().read() == body
        lat.append(time.perf_counter() - t0)
    proc.terminate()
    proc.join()
    return np.percentile(lat, [50, 99]) * 1e6


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    res = {name: measure(f, n) for name, f in (("aiohttp", run_aiohttp), ("starlette+uvicorn", run_starlette))}
    for name, (p50, p99) in res.items():
        print(f"{name:18s} echo p50 {p50:7.1f} us  p99 {p99:7.1f} us")
    print(f"ratio starlette/aiohttp p50 {res['starlette+uvicorn'][0] / res['aiohttp'][0]:.2f}")
