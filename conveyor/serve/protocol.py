"""The Open Inference Protocol (KServe v2, Triton's HTTP/REST API): request parsing and
response encoding, JSON tensors and the binary tensor data extension. Only JSON and raw
little-endian tensor bytes are ever read from a request (no pickle, nothing that carries code).

https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
https://github.com/triton-inference-server/server/blob/main/docs/protocol/extension_binary_data.md
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from conveyor.errors import ConveyorError

#: v2 datatype names <-> numpy dtypes (BYTES, FP16/BF16 strings are not tensors any plan carries)
DATATYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
             "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
             "FP16": np.float16, "FP32": np.float32, "FP64": np.float64}
_BY_DTYPE = {np.dtype(v): k for k, v in DATATYPES.items()}
HEADER_LENGTH = "Inference-Header-Content-Length"


class BadRequest(ConveyorError):
    """A request the protocol or the model does not accept: HTTP 400."""


def datatype(dtype) -> str:
    try:
        return _BY_DTYPE[np.dtype(dtype)]
    except KeyError:
        raise BadRequest(f"dtype {np.dtype(dtype)} has no v2 datatype; accepted: {', '.join(DATATYPES)}") from None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def meta(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]
    binary_outputs: frozenset[str]     # outputs to return as binary data
    requested: tuple[str, ...] | None  # outputs asked for (None: all)
    all_binary: bool                   # "binary_data_output": every output as binary


#: a binary request's JSON header up to this size is remembered (below), by its exact bytes
CACHED_HEADER_BYTES = 4096
CACHE_ENTRIES = 64


@dataclass(frozen=True)
class _Header:
    """What a request's JSON header says, checked: per input either (name, dtype, shape,
    binary size) or (name, array) for JSON data; the outputs asked for."""
    inputs: tuple
    id: str | None
    binary_outputs: frozenset[str]
    requested: tuple[str, ...] | None
    all_binary: bool


def parse_infer(body: bytes, header_length: str | None, inputs: list[TensorSpec],
                cache: dict | None = None) -> InferRequest:
    """One /infer body -> arrays checked against the model's `inputs` (name, datatype, shape).
    Binary tensors are read-only views into `body` where its byte order is the host's (no
    copy: the Pipeline copies them into its channel anyway), so `body` must not be reused.

    `cache` (a dict the caller keeps per model): the checked header of binary requests, by
    the header's exact bytes. A client sends the same header with every request of one
    shape; on a hit the JSON is neither parsed nor checked again. At one request every few
    ms the parse runs with cold caches and costs 100-300 us (measured, docs/serving.md)."""
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise BadRequest(f"{HEADER_LENGTH}: expected an integer, got '{header_length}'") from None
        if not 0 <= n <= len(body):
            raise BadRequest(f"{HEADER_LENGTH}: expected 0..{len(body)} (the body's length), got {n}")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    header = cache.get(head) if cache is not None else None
    if header is None:
        header = _parse_header(head, inputs)
        if (cache is not None and len(head) <= CACHED_HEADER_BYTES
                and all(len(entry) == 4 for entry in header.inputs)):  # every input binary
            if len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]  # the oldest
            cache[bytes(head)] = header
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in header.inputs:
        if len(entry) == 2:  # JSON data, already an array
            arrays[entry[0]] = entry[1]
            continue
        name, dtype, shape, size = entry
        if offset + size > len(binary):
            raise BadRequest(f"input '{name}': expected {size} bytes of binary data, got {len(binary) - offset}")
        a = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<"))
        if a.dtype != dtype:  # a big-endian host: into native order (the copy); else a view, no copy
            a = a.astype(dtype)
        arrays[name] = a.reshape(shape)
        offset += size
    if offset != len(binary):
        raise BadRequest(f"expected {offset} bytes of binary tensor data, got {len(binary)}")
    return InferRequest(id=header.id, inputs=arrays, binary_outputs=header.binary_outputs,
                        requested=header.requested, all_binary=header.all_binary)


def _parse_header(head: bytes, inputs: list[TensorSpec]) -> _Header:
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON in the request: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("expected a JSON object with an 'inputs' list, got "
                         f"{type(req).__name__ if not isinstance(req, dict) else 'keys ' + str(sorted(req))}")
    specs = {t.name: t for t in inputs}
    entries, seen = [], set()
    for item in req["inputs"]:
        if not isinstance(item, dict):
            raise BadRequest(f"each input must be a JSON object, got {type(item).__name__}")
        name = item.get("name")
        if name not in specs:
            raise BadRequest(f"input '{name}': the model has no such input; expected {sorted(specs)}")
        if name in seen:
            raise BadRequest(f"input '{name}' given twice")
        seen.add(name)
        spec = specs[name]
        if item.get("datatype") != spec.datatype:
            raise BadRequest(f"input '{name}': expected datatype {spec.datatype}, got {item.get('datatype')!r}")
        shape = item.get("shape")
        if not isinstance(shape, list) or tuple(shape) != spec.shape:
            raise BadRequest(f"input '{name}': expected shape {list(spec.shape)}, got {shape!r}")
        dtype = np.dtype(DATATYPES[spec.datatype])
        count = int(np.prod(spec.shape))
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if size != count * dtype.itemsize:
                raise BadRequest(f"input '{name}': expected binary_data_size {count * dtype.itemsize} "
                                 f"({spec.datatype}{list(spec.shape)}), got {size!r}")
            entries.append((name, dtype, spec.shape, size))
        else:
            data = item.get("data")
            try:
                a = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError) as e:
                raise BadRequest(f"input '{name}': data is not {spec.datatype} numbers ({e})") from None
            if a.size != count:
                raise BadRequest(f"input '{name}': expected {count} values for shape {list(spec.shape)}, "
                                 f"got {a.size}")
            entries.append((name, a.reshape(spec.shape)))
    missing = [n for n in specs if n not in seen]
    if missing:
        raise BadRequest(f"request lacks inputs {missing}; expected {[t.meta() for t in inputs]}")
    params = req.get("parameters") or {}
    requested, binary_out = None, set()
    if req.get("outputs") is not None:
        requested = []
        for o in req["outputs"]:
            if not isinstance(o, dict) or "name" not in o:
                raise BadRequest(f"each requested output must be an object with a 'name', got {o!r}")
            requested.append(o["name"])
            if (o.get("parameters") or {}).get("binary_data"):
                binary_out.add(o["name"])
        requested = tuple(requested)
    rid = req.get("id")
    return _Header(inputs=tuple(entries), id=None if rid is None else str(rid), binary_outputs=frozenset(binary_out),
                   requested=requested, all_binary=bool(params.get("binary_data_output")))


def encode_infer(model: str, req: InferRequest, outputs: dict[str, np.ndarray],
                 names: tuple[str, ...], cache: dict | None = None) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header followed by binary tensors.
    `cache` (a dict the caller keeps per model): the JSON header of all-binary answers, by
    what decides it (the request's id and outputs asked, each output's dtype and shape)."""
    wanted = req.requested or names
    for n in wanted:
        if n not in outputs:
            raise BadRequest(f"output '{n}': the model has no such output; expected {list(names)}")
    arrays = [np.asarray(outputs[n]) for n in wanted]
    binary = [a for n, a in zip(wanted, arrays) if req.all_binary or n in req.binary_outputs]
    key = None
    if cache is not None and len(binary) == len(arrays):
        key = (model, req.id, req.all_binary, req.binary_outputs, tuple((n, a.dtype.str, a.shape)
                                                                        for n, a in zip(wanted, arrays)))
    head_bytes = cache.get(key) if key is not None else None
    if head_bytes is None:
        meta = []
        for n, a in zip(wanted, arrays):
            entry = {"name": n, "datatype": datatype(a.dtype), "shape": list(a.shape)}
            if req.all_binary or n in req.binary_outputs:
                entry["parameters"] = {"binary_data_size": a.nbytes}
            else:
                entry["data"] = a.ravel().tolist()  # float64 -> JSON keeps every bit (shortest repr round trips)
            meta.append(entry)
        head = {"model_name": model, "outputs": meta}
        if req.id is not None:
            head["id"] = req.id
        head_bytes = json.dumps(head).encode()
        if key is not None:
            if len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
            cache[key] = head_bytes
    if not binary:
        return head_bytes, {"Content-Type": "application/json"}
    # tobytes and one concatenation: measured the cheapest with cold caches (31 us for 74 KB;
    # a preallocated bytearray filled through numpy 67-83 us: more code on the way)
    raw = [a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in binary]
    body = head_bytes + raw[0] if len(raw) == 1 else b"".join([head_bytes, *raw])
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(head_bytes))}
