"""conveyor serve: a real server on a loopback port (a `conveyor serve` subprocess), called
with tritonclient.http and plain HTTP; outputs bit for bit against graph.run; bad input,
unknown model, body limit, overload, a killed stage, SIGTERM."""

from __future__ import annotations

import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.http as httpclient

from conveyor import zoo
from conveyor.hardware import Cluster
from conveyor.planner import plan as make_plan

PRECISION = "ap_fixed<16,6>"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


class Served:
    def __init__(self, tmp_path, model, k, *extra, paced_latency_s: float | None = None,
                 ready_within_s: float = 60):
        self.graph = zoo.build(model)
        self.plan = make_plan(self.graph, Cluster.uniform("zcu102", k, link="aurora-10g"), precision=PRECISION,
                              method="equal")
        if paced_latency_s:  # slow motion: every request takes about this long, whatever the machine's speed
            extra = (*extra, "--paced", "--time-scale", repr(paced_latency_s / self.plan.latency_s))
        path = tmp_path / f"{model}.plan.json"
        self.plan.save(path)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, PYTHONPATH=ROOT)
        self.proc = subprocess.Popen([sys.executable, "-m", "conveyor.cli", "serve", str(path), "--model", model,
                                      "--port", str(self.port), *extra], env=env, cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + ready_within_s
        while time.monotonic() < deadline:
            try:
                if http("GET", self.url + "/v2/health/ready")[0] == 200:
                    return
            except OSError:
                pass
            assert self.proc.poll() is None, self.proc.stdout.read()
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {ready_within_s:g} s")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    s = Served(tmp_path_factory.mktemp("serve"), "digits-cnn", 2)
    yield s
    assert s.stop() == 0


def xs(g, n, seed=0):
    t = g.inputs[0]
    return list(np.random.default_rng(seed).standard_normal((n,) + tuple(t.shape)).astype(t.dtype))


def test_tritonclient_binary_and_json_bit_exact(digits):
    g, name = digits.graph, digits.graph.name
    client = httpclient.InferenceServerClient(url=f"127.0.0.1:{digits.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(name)
    meta = client.get_model_metadata(name)
    assert meta["inputs"][0]["shape"] == list(g.inputs[0].shape)
    for binary in (True, False):
        for x in xs(g, 3, seed=int(binary)):
            inp = httpclient.InferInput(g.input_names[0], list(x.shape), "FP32")
            inp.set_data_from_numpy(x, binary_data=binary)
            res = client.infer(name, [inp], outputs=[httpclient.InferRequestedOutput("output", binary_data=binary)])
            ref = g.run(x, precision=digits.plan.precision)["output"]
            got = res.as_numpy("output")
            assert got.dtype == ref.dtype and np.array_equal(got, ref)


def test_plain_json_and_errors(digits):
    g, name = digits.graph, digits.graph.name
    x = xs(g, 1, seed=5)[0]
    body = {"inputs": [{"name": g.input_names[0], "datatype": "FP32", "shape": list(x.shape),
                        "data": x.ravel().tolist()}]}
    st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", json.dumps(body).encode())
    assert st == 200
    out = json.loads(raw)["outputs"][0]
    ref = g.run(x, precision=digits.plan.precision)["output"]
    assert np.array_equal(np.array(out["data"], dtype=ref.dtype).reshape(out["shape"]), ref)

    def bad(mutate, expect):
        b = json.loads(json.dumps(body))
        mutate(b["inputs"][0])
        st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", json.dumps(b).encode())
        assert st == 400, raw
        msg = json.loads(raw)["error"]
        assert all(e in msg for e in expect), msg

    bad(lambda i: i.update(shape=[1, 8, 8]), ["expected shape [1, 1, 8, 8]", "got [1, 8, 8]"])
    bad(lambda i: i.update(datatype="INT32"), ["expected datatype FP32", "INT32"])
    bad(lambda i: i.update(name="nope"), ["'nope'", "expected ['input']"])
    st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", b"{not json")
    assert st == 400 and "malformed JSON" in json.loads(raw)["error"]
    st, _, raw = http("POST", f"{digits.url}/v2/models/other/infer", json.dumps(body).encode())
    assert st == 404 and "'other'" in json.loads(raw)["error"]
    st, _, _ = http("GET", f"{digits.url}/v2/models/other")
    assert st == 404
    st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", b" " * (10 << 20))
    assert st == 413
    st, _, raw = http("GET", f"{digits.url}/metrics")
    text = raw.decode()
    assert st == 200 and 'conveyor_request_failures_total{model="%s",reason="bad_request"}' % name in text
    assert "conveyor_stage_busy_fraction" in text and "conveyor_request_latency_seconds_bucket" in text


def test_raw_binary_tensor_extension_bit_exact(digits):
    """What `curl --data-binary @req.bin -H 'Inference-Header-Content-Length: N'` sends: a JSON
    header, then the raw little-endian input bytes; the output asked for as binary comes back
    after the response's own JSON header, split at its Inference-Header-Content-Length."""
    g, name = digits.graph, digits.graph.name
    x = xs(g, 1, seed=11)[0]
    raw_in = x.astype("<f4").tobytes()
    head = json.dumps({"id": "r1", "inputs": [{"name": g.input_names[0], "datatype": "FP32", "shape": list(x.shape),
                                                 "parameters": {"binary_data_size": len(raw_in)}}],
                       "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    st, headers, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", head + raw_in,
                            {"Inference-Header-Content-Length": str(len(head)),
                             "Content-Type": "application/octet-stream"})
    assert st == 200, raw
    n = int(headers["Inference-Header-Content-Length"])
    meta = json.loads(raw[:n])
    assert meta["id"] == "r1" and meta["model_name"] == name
    (out,) = meta["outputs"]
    ref = g.run(x, precision=digits.plan.precision)["output"]
    assert out["name"] == "output" and out["datatype"] == "FP64" and out["shape"] == list(ref.shape)
    assert out["parameters"]["binary_data_size"] == len(raw) - n == ref.nbytes
    got = np.frombuffer(raw[n:], dtype="<f8").reshape(out["shape"])
    assert np.array_equal(got, ref)
    # binary bytes that do not match the declared size, or a header length past the body: 400
    st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", head + raw_in[:-4],
                      {"Inference-Header-Content-Length": str(len(head))})
    assert st == 400 and "expected 256 bytes of binary data, got 252" in json.loads(raw)["error"]
    st, _, raw = http("POST", f"{digits.url}/v2/models/{name}/infer", head,
                      {"Inference-Header-Content-Length": str(len(head) + 1)})
    assert st == 400 and "Inference-Header-Content-Length" in json.loads(raw)["error"]


def test_chunked_body_answered_and_cut_at_the_limit(digits):
    """A body without Content-Length (chunked transfer encoding): read as it comes, answered
    bit for bit; past the body limit, 413 (the limit is checked chunk by chunk)."""
    import http.client

    g, name = digits.graph, digits.graph.name
    x = xs(g, 1, seed=13)[0]
    raw_in = x.astype("<f4").tobytes()
    head = json.dumps({"inputs": [{"name": g.input_names[0], "datatype": "FP32", "shape": list(x.shape),
                                   "parameters": {"binary_data_size": len(raw_in)}}],
                       "outputs": [{"name": "output", "parameters": {"binary_data": True}}]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", digits.port, timeout=30)
    conn.request("POST", f"/v2/models/{name}/infer", iter([head, raw_in[:100], raw_in[100:]]),
                 {"Inference-Header-Content-Length": str(len(head)), "Transfer-Encoding": "chunked"},
                 encode_chunked=True)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, body
    n = int(r.getheader("Inference-Header-Content-Length"))
    ref = g.run(x, precision=digits.plan.precision)["output"]
    assert np.array_equal(np.frombuffer(body[n:], "<f8").reshape(ref.shape), ref)
    conn.close()
    conn = http.client.HTTPConnection("127.0.0.1", digits.port, timeout=30)
    big = b" " * (64 << 10)
    conn.request("POST", f"/v2/models/{name}/infer", iter([big] * 4), {"Transfer-Encoding": "chunked"},
                 encode_chunked=True)  # 256 KiB; the limit is 4 x 20 x 256 + 64 KiB = 84 KiB
    r = conn.getresponse()
    assert r.status == 413 and "over the limit" in json.loads(r.read())["error"]
    conn.close()


def _raw_exchange(port: int, requests: bytes, wait_s: float = 3.0) -> tuple[bytes, bool]:
    """Send `requests` on one connection; (all bytes answered, whether the server closed it)."""
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(requests)
        s.settimeout(wait_s)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
            return data, True
        except socket.timeout:
            return data, False


def test_answer_framing_keep_alive_and_close(digits):
    """The /infer answer is written by the server itself (one write, not web.Response): two
    pipelined HTTP/1.1 requests on one connection are answered in order and the connection
    stays open; HTTP/1.1 `Connection: close` and plain HTTP/1.0 are answered and closed;
    HTTP/1.0 keep-alive is answered `Connection: keep-alive` and kept open."""
    g, name = digits.graph, digits.graph.name
    x1, x2 = xs(g, 2, seed=17)
    refs = [g.run(x, precision=digits.plan.precision)["output"] for x in (x1, x2)]

    def req(x, version="HTTP/1.1", extra=""):
        body = json.dumps({"id": "r", "inputs": [{"name": g.input_names[0], "datatype": "FP32",
                                                  "shape": list(x.shape), "data": x.ravel().tolist()}]}).encode()
        return (f"POST /v2/models/{name}/infer {version}\r\nHost: t\r\nContent-Type: application/json\r\n{extra}"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body

    def answers(data: bytes) -> list[tuple[str, dict, dict]]:
        out = []
        while data:
            head, _, rest = data.partition(b"\r\n\r\n")
            status, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v for k, v in (ln.split(": ", 1) for ln in lines)}
            n = int(headers["content-length"])
            out.append((status, headers, json.loads(rest[:n])))
            data = rest[n:]
        return out

    def check(ans, ref):
        status, headers, body = ans
        assert status.endswith(" 200 OK") and headers["content-type"] == "application/json" and "date" in headers
        assert body["id"] == "r" and np.array_equal(np.asarray(body["outputs"][0]["data"]).reshape(ref.shape), ref)

    data, closed = _raw_exchange(digits.port, req(x1) + req(x2))
    got = answers(data)
    assert not closed and len(got) == 2 and all(a[0].startswith("HTTP/1.1 ") for a in got)
    check(got[0], refs[0])
    check(got[1], refs[1])
    assert all("connection" not in a[1] for a in got)
    for version, extra, header, closes in (("HTTP/1.1", "Connection: close\r\n", "close", True),
                                           ("HTTP/1.0", "", None, True),
                                           ("HTTP/1.0", "Connection: keep-alive\r\n", "keep-alive", False)):
        data, closed = _raw_exchange(digits.port, req(x1, version, extra), wait_s=1.0 if not closes else 3.0)
        (a,) = answers(data)
        assert a[0].startswith(version + " ") and a[1].get("connection") == header and closed == closes, (version, a)
        check(a, refs[0])


def served_ok(s, headers=None) -> float:
    """conveyor_requests_total{code="200"}: inference requests answered 200 so far."""
    text = http("GET", s.url + "/metrics", headers=headers)[2].decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("conveyor_requests_total{") and 'code="200"' in ln]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def cmdline(pid) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def parent(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def descendants(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                with open(f"/proc/{d}/cmdline", "rb") as f:
                    kids[int(d)] = (ppid, f.read())
            except (OSError, IndexError, ValueError):
                pass
    out, frontier = [], [pid]
    while frontier:
        p = frontier.pop()
        for c, (pp, _) in kids.items():
            if pp == p:
                out.append(c)
                frontier.append(c)
    return out


def test_overload_token_killed_stage_and_sigterm(tmp_path):
    # paced at 50 ms a request, so that 16 connections at once must find the 2 slots taken (at
    # 20 ms a client slowed by a loaded machine once sent too slowly to be refused: none were)
    s = Served(tmp_path, "jet-mlp", 2, "--max-queue", "2", "--token", "secret", paced_latency_s=0.05)
    try:
        g, name = s.graph, s.graph.name
        assert http("GET", s.url + "/v2/health/live")[0] == 200  # health needs no token
        assert http("GET", f"{s.url}/v2/models/{name}")[0] == 401
        auth = {"Authorization": "Bearer secret"}
        assert http("GET", f"{s.url}/v2/models/{name}", headers=auth)[0] == 200
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{s.port}", concurrency=16)
        many = xs(g, 200, seed=7)

        def request(x):
            inp = httpclient.InferInput(g.input_names[0], list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            return client.async_infer(name, [inp], headers=auth)

        def result(pending):
            try:
                return pending.get_result().as_numpy(g.output_names[0])
            except httpclient.InferenceServerException as e:
                return e

        def call(x):
            return result(request(x))

        got = [result(r) for r in [request(x) for x in many[:100]]]  # 16 connections at once
        refused = [e for e in got if isinstance(e, Exception)]
        assert refused and all("503" in str(e.status()) or "max-queue" in e.message() for e in refused), refused[:3]
        answered = [(x, y) for x, y in zip(many, got) if not isinstance(y, Exception)]
        assert answered
        for x, y in answered:
            assert np.array_equal(y, g.run(x, precision=s.plan.precision)[g.output_names[0]])

        # kill one stage process while requests are being served, one at a time (all admitted)
        server_kids = [p for p in descendants(s.proc.pid) if parent(p) == s.proc.pid]
        forkserver = [p for p in server_kids if b"forkserver" in open(f"/proc/{p}/cmdline", "rb").read()]
        stage_pids = [p for p in descendants(forkserver[0]) if parent(p) == forkserver[0]]
        assert len(stage_pids) == 2, stage_pids
        # and poll /v2/health/ready meanwhile: 200 before the kill, 503 while the stage reloads, 200 after
        answered_before = served_ok(s, auth)
        readiness: list[tuple[float, float, int]] = []   # (sent, answered, status)
        polling = threading.Event()

        def poll():
            while not polling.is_set():
                sent = time.monotonic()
                code = http("GET", s.url + "/v2/health/ready")[0]
                readiness.append((sent, time.monotonic(), code))
                time.sleep(0.001)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        outs, killed_at = [], None
        for i, x in enumerate(many[100:140]):
            if i == 10:
                while not readiness:   # the poller has an answer from before the kill
                    time.sleep(0.001)
                killed_at = time.monotonic()
                os.kill(stage_pids[-1], signal.SIGKILL)
            outs.append(call(x))
        deadline = time.monotonic() + 30
        while not (readiness and readiness[-1][0] > killed_at and readiness[-1][2] == 200):
            assert time.monotonic() < deadline, readiness[-5:]
            time.sleep(0.01)
        polling.set()
        poller.join()
        for x, y in zip(many[100:140], outs):
            assert not isinstance(y, Exception), y
            assert np.array_equal(y, g.run(x, precision=s.plan.precision)[g.output_names[0]])
        assert served_ok(s, auth) == answered_before + 40  # each answered once (and none refused)
        # a poll in flight when the stage was killed may answer either way: only those answered
        # before the kill and those sent after it are judged
        before = [code for sent, answered, code in readiness if answered < killed_at]
        after = [code for sent, answered, code in readiness if sent > killed_at]
        assert before and set(before) == {200}, before
        assert set(after) == {200, 503} and after[-1] == 200, after
        first_down = after.index(503)
        back = first_down + after[first_down:].index(200)
        assert set(after[back:]) == {200}, after  # down once (while reloading), then up for good
        text = http("GET", s.url + "/metrics", headers=auth)[2].decode()
        assert "conveyor_stage_restarts_total" in text and any(
            line.startswith("conveyor_stage_restarts_total") and line.endswith(" 1.0") for line in text.splitlines())
        kids = descendants(s.proc.pid)
    finally:
        code = s.stop()
    assert code == 0
    assert not left_behind(kids, 5)  # the forkserver and resource tracker exit when their parent's pipe closes


def left_behind(pids, within_s: float) -> list:
    """Those of `pids` still running (not zombies) after up to `within_s` seconds."""
    def left():
        out = []
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        with open(f"/proc/{p}/cmdline", "rb") as f2:
                            out.append((p, f2.read()))
            except OSError:
                pass
        return out

    deadline = time.monotonic() + within_s
    while left() and time.monotonic() < deadline:
        time.sleep(0.1)
    return left()


def test_ray_executor_serves_bit_exact_and_stops_its_ray(tmp_path):
    """`--executor ray`: the front in the driver, one actor per stage on a local Ray the server
    starts (and owns: SIGTERM shuts it down, no Ray process left behind)."""
    s = Served(tmp_path, "jet-mlp", 2, "--executor", "ray", ready_within_s=180)
    try:
        g, name = s.graph, s.graph.name
        client = httpclient.InferenceServerClient(url=f"127.0.0.1:{s.port}")
        assert client.is_model_ready(name)
        for x in xs(g, 4, seed=3):
            inp = httpclient.InferInput(g.input_names[0], list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            got = client.infer(name, [inp]).as_numpy(g.output_names[0])
            assert np.array_equal(got, g.run(x, precision=s.plan.precision)[g.output_names[0]])
        assert served_ok(s) == 4
        text = http("GET", s.url + "/metrics")[2].decode()
        ready = [ln for ln in text.splitlines() if ln.startswith("conveyor_stage_ready{")]
        assert len(ready) == 2 and all(ln.endswith(" 1.0") for ln in ready), ready
        kids = descendants(s.proc.pid)
        raylets = [p for p in kids if b"raylet" in cmdline(p).split(b"\0")[0]]
        assert raylets, [cmdline(p)[:80] for p in kids]
    finally:
        code = s.stop()
    assert code == 0
    assert not left_behind(kids, 10)
    assert not [f for p in raylets for f in glob.glob(f"/dev/shm/sem.*{p}-*")]  # its semaphores removed too


def test_beyond_loopback_needs_token_or_insecure(tmp_path):
    r = subprocess.run([sys.executable, "-m", "conveyor.cli", "serve", "nope.json", "--model", "jet-mlp",
                        "--host", "0.0.0.0"], env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True)
    assert r.returncode == 1 and "--token" in r.stderr and "--insecure" in r.stderr
