"""conveyor.serve.protocol without a server: binary tensors as views (no copy), the request
header and answer header caches (hits still check every request's own bytes), bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conveyor.serve.protocol import (CACHE_ENTRIES, HEADER_LENGTH, BadRequest, InferRequest, TensorSpec,
                                     encode_infer, parse_infer)

SPECS = [TensorSpec("input", "FP32", (1, 3, 4, 4)), TensorSpec("mask", "INT32", (2, 3))]


def binary_body(x, m, rid=None):
    head = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape),
                        "parameters": {"binary_data_size": x.nbytes}},
                       {"name": "mask", "datatype": "INT32", "shape": list(m.shape),
                        "parameters": {"binary_data_size": m.nbytes}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}
    if rid is not None:
        head["id"] = rid
    h = json.dumps(head).encode()
    return h + x.astype("<f4").tobytes() + m.astype("<i4").tobytes(), str(len(h))


def inputs(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((1, 3, 4, 4)).astype(np.float32), rng.integers(-9, 9, (2, 3)).astype(np.int32)


def test_binary_inputs_are_views_and_the_header_is_checked_once_per_distinct_header():
    cache: dict = {}
    for seed in range(3):  # the same header each time, other values: one cache entry, each answer its own
        x, m = inputs(seed)
        body, n = binary_body(x, m)
        req = parse_infer(body, n, SPECS, cache)
        assert np.array_equal(req.inputs["input"], x) and req.inputs["input"].dtype == np.float32
        assert np.array_equal(req.inputs["mask"], m) and req.inputs["mask"].shape == (2, 3)
        # no copy: the arrays are read-only views into the body
        assert np.shares_memory(req.inputs["input"], np.frombuffer(body, np.uint8))
        assert not req.inputs["input"].flags.writeable
        assert req.binary_outputs == frozenset({"y"}) and req.requested == ("y",) and req.id is None
        assert len(cache) == 1
    # a hit still checks this request's own binary bytes
    with pytest.raises(BadRequest, match="input 'mask': expected 24 bytes of binary data, got 20"):
        parse_infer(body[:-4], n, SPECS, cache)
    with pytest.raises(BadRequest, match="expected 216 bytes of binary tensor data, got 220"):
        parse_infer(body + b"abcd", n, SPECS, cache)
    # the cached parse and a fresh one agree
    fresh = parse_infer(body, n, SPECS)
    assert all(np.array_equal(fresh.inputs[k], req.inputs[k]) for k in fresh.inputs)


def test_json_requests_are_not_cached_and_the_cache_is_bounded():
    cache: dict = {}
    x, m = inputs(0)
    body = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 4, 4],
                                   "data": x.ravel().tolist()},
                                  {"name": "mask", "datatype": "INT32", "shape": [2, 3],
                                   "data": m.ravel().tolist()}]}).encode()
    req = parse_infer(body, None, SPECS, cache)
    assert np.array_equal(req.inputs["input"], x) and np.array_equal(req.inputs["mask"], m)
    assert cache == {}  # its data is in the header: nothing to gain, memory to lose
    for i in range(CACHE_ENTRIES + 10):  # distinct ids: distinct headers
        body, n = binary_body(x, m, rid=f"r{i}")
        assert parse_infer(body, n, SPECS, cache).id == f"r{i}"
    assert len(cache) == CACHE_ENTRIES
    # a header that fails its checks is not remembered either
    bad, n = binary_body(x, m)
    bad = bad.replace(b'"INT32"', b'"INT64"')
    with pytest.raises(BadRequest, match="input 'mask': expected datatype INT32, got 'INT64'"):
        parse_infer(bad, n, SPECS, cache)
    assert all(b"INT64" not in k for k in cache)


def decode(body, headers):
    n = int(headers[HEADER_LENGTH])
    meta = json.loads(body[:n])
    out, at = {}, n
    for o in meta["outputs"]:
        dt = {"FP64": "<f8", "INT32": "<i4", "FP32": "<f4"}[o["datatype"]]
        size = o["parameters"]["binary_data_size"]
        out[o["name"]] = np.frombuffer(body[at:at + size], dt).reshape(o["shape"])
        at += size
    assert at == len(body)
    return meta, out


def test_encode_binary_answers_with_the_header_cache():
    cache: dict = {}
    req = InferRequest(id="7", inputs={}, binary_outputs=frozenset(), requested=None, all_binary=True)
    for seed in range(2):
        rng = np.random.default_rng(seed)
        y = rng.standard_normal((2, 3, 4)).transpose(2, 0, 1)  # not C-contiguous: sent in C order
        z = rng.integers(0, 100, (5,)).astype(np.int32)
        body, headers = encode_infer("m", req, {"y": y, "z": z}, ("y", "z"), cache)
        meta, got = decode(body, headers)
        assert meta["model_name"] == "m" and meta["id"] == "7"
        assert np.array_equal(got["y"], y) and got["y"].dtype == np.float64 and np.array_equal(got["z"], z)
        assert len(cache) == 1
    # one output binary, one as JSON: answered, not cached (the JSON values change each time)
    mixed = InferRequest(id=None, inputs={}, binary_outputs=frozenset({"z"}), requested=("y", "z"), all_binary=False)
    body, headers = encode_infer("m", mixed, {"y": y, "z": z}, ("y", "z"), cache)
    n = int(headers[HEADER_LENGTH])
    meta = json.loads(body[:n])
    assert np.array_equal(np.array(meta["outputs"][0]["data"]).reshape(y.shape), y)
    assert np.array_equal(np.frombuffer(body[n:], "<i4"), z)
    assert len(cache) == 1
    with pytest.raises(BadRequest, match="output 'w': the model has no such output"):
        encode_infer("m", InferRequest(None, {}, frozenset(), ("w",), True), {"y": y}, ("y",), cache)


def test_listening_sockets_hold_a_whole_request_where_the_kernel_allows():
    import socket

    from conveyor.serve.server import MIN_SOCKET_BUFFER, listening_sockets, socket_buffer_bytes

    try:
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        with open("/proc/sys/net/core/wmem_max") as f:
            wmem_max = int(f.read())
    except OSError:
        pytest.skip("no /proc/sys/net/core (not Linux)")
    want = max(MIN_SOCKET_BUFFER, 2 * 618348 + 65536)
    got = socket_buffer_bytes(618348)
    assert got == (want if min(rmem_max, wmem_max) >= want else None)
    assert socket_buffer_bytes(min(rmem_max, wmem_max)) is None  # beyond what the kernel allows: autotuning kept
    socks = listening_sockets("127.0.0.1", 0, 1 << 20 if min(rmem_max, wmem_max) >= 1 << 20 else None)
    try:
        (s,) = socks
        assert s.getsockname()[0] == "127.0.0.1" and s.getsockname()[1] > 0
        if min(rmem_max, wmem_max) >= 1 << 20:  # Linux reports twice what was set (its bookkeeping)
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 1 << 20
            assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) >= 1 << 20
        c = socket.create_connection(s.getsockname(), timeout=5)  # it listens
        c.close()
    finally:
        for s in socks:
            s.close()
