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


def parse_infer(body: bytes, header_length: str | None, inputs: list[TensorSpec]) -> InferRequest:
    """One /infer body -> arrays checked against the model's `inputs` (name, datatype, shape)."""
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
    try:
        req = json.loads(head)
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"malformed JSON in the request: {e}") from None
    if not isinstance(req, dict) or not isinstance(req.get("inputs"), list):
        raise BadRequest("expected a JSON object with an 'inputs' list, got "
                         f"{type(req).__name__ if not isinstance(req, dict) else 'keys ' + str(sorted(req))}")
    specs = {t.name: t for t in inputs}
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for item in req["inputs"]:
        if not isinstance(item, dict):
            raise BadRequest(f"each input must be a JSON object, got {type(item).__name__}")
        name = item.get("name")
        if name not in specs:
            raise BadRequest(f"input '{name}': the model has no such input; expected {sorted(specs)}")
        if name in arrays:
            raise BadRequest(f"input '{name}' given twice")
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
            if offset + size > len(binary):
                raise BadRequest(f"input '{name}': expected {size} bytes of binary data, "
                                 f"got {len(binary) - offset}")
            a = np.frombuffer(binary[offset:offset + size], dtype=dtype.newbyteorder("<")).astype(dtype)
            offset += size
        else:
            data = item.get("data")
            try:
                a = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError) as e:
                raise BadRequest(f"input '{name}': data is not {spec.datatype} numbers ({e})") from None
            if a.size != count:
                raise BadRequest(f"input '{name}': expected {count} values for shape {list(spec.shape)}, "
                                 f"got {a.size}")
        arrays[name] = a.reshape(spec.shape)
    missing = [n for n in specs if n not in arrays]
    if missing:
        raise BadRequest(f"request lacks inputs {missing}; expected {[t.meta() for t in inputs]}")
    if offset != len(binary):
        raise BadRequest(f"expected {offset} bytes of binary tensor data, got {len(binary)}")
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
    return InferRequest(id=None if rid is None else str(rid), inputs=arrays, binary_outputs=frozenset(binary_out),
                        requested=requested, all_binary=bool(params.get("binary_data_output")))


def encode_infer(model: str, req: InferRequest, outputs: dict[str, np.ndarray],
                 names: tuple[str, ...]) -> tuple[bytes, dict[str, str]]:
    """The response body and its headers: JSON, or a JSON header followed by binary tensors."""
    wanted = req.requested or names
    for n in wanted:
        if n not in outputs:
            raise BadRequest(f"output '{n}': the model has no such output; expected {list(names)}")
    meta, chunks = [], []
    for n in wanted:
        a = np.ascontiguousarray(outputs[n])
        entry = {"name": n, "datatype": datatype(a.dtype), "shape": list(a.shape)}
        if req.all_binary or n in req.binary_outputs:
            raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = a.ravel().tolist()  # float64 -> JSON keeps every bit (shortest repr round trips)
        meta.append(entry)
    head = {"model_name": model, "outputs": meta}
    if req.id is not None:
        head["id"] = req.id
    head_bytes = json.dumps(head).encode()
    if not chunks:
        return head_bytes, {"Content-Type": "application/json"}
    return head_bytes + b"".join(chunks), {"Content-Type": "application/octet-stream",
                                          HEADER_LENGTH: str(len(head_bytes))}
