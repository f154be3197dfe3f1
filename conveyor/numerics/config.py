"""Precision for a whole graph, in the spirit of hls4ml's configuration but flatter.

A config is a plain dict (or YAML file) that a Plan file can carry:

    default: "ap_fixed<16,6>"          # every role of every node, and the graph inputs
    accum: auto                        # a role for all nodes (auto: wide enough that every sum is exact)
    input: "ap_fixed<16,6>"            # graph inputs (default: `default`)
    op_types:                          # per op type
      Softmax: {result: "ap_fixed<18,8,AP_RND,AP_SAT>"}
    nodes:                             # per node or layer name (`/fc1/Gemm` or `fc1`; wins over op_types)
      conv1: {weight: "ap_fixed<8,3>", result: "ap_fixed<16,6,AP_RND_CONV,AP_SAT>"}
    order: onnx                        # a Dense after a Flatten sums in C,H,W (onnx, hls4ml_io_stream) or H,W,C (hls4ml_io_parallel)
    tables:                            # lookup tables of the nonlinear functions (docs/numerics.md)
      sigmoid: {size: 1024, min: -8, max: 8, format: "ap_fixed<18,8>"}
      softmax: {implementation: stable}

Roles: `weight`, `bias`, `accum`, `result`, and for the recurrent ops (LSTM, GRU) `state`
(the hidden state h) and `cell` (LSTM's cell state c). A role is resolved from the most
specific place that names it: nodes > op_types > top-level role key > default, except that
`state` and `cell` fall back to the node's `result` (hls4ml keeps both in the layer's
`res_T`; docs/numerics.md, "Kernels", item 7). Formats are
ap_fixed family strings (`ap_fixed<16,6>`, `fixed<8,3>`, `ap_int<8>` ...) or block
floating point (`mx:fp8_e4m3`, `mx:int8/32`, `msfp12`).

A bare format string ("ap_fixed<16,6>") is `{default: ...}`: exact accumulators.
"hls4ml:ap_fixed<16,6>" is what hls4ml 1.3.0 does with that model precision
(conveyor.numerics.hls4ml_defaults): accumulators of the model precision too.
"hls4ml-name:ap_fixed<16,6>" is hls4ml's granularity="name" config (its 'auto' types): the
config carries `infer: hls4ml_name` and the per-node types are derived when a graph is at hand
(conveyor.graph.names.resolve_config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

from conveyor.errors import PrecisionError

ROLES = ("weight", "bias", "accum", "result", "state", "cell")
#: roles that, when no place names them, take the node's `result` format instead of `default`
RESULT_LIKE = ("state", "cell")
AUTO = "auto"
_TOP_KEYS = {"default", "input", "op_types", "nodes", "tables", "order", "infer", *ROLES}
#: `infer:` values: per-node types derived from the graph (hls4ml_name: hls4ml's 'auto' inference)
INFERS = ("hls4ml_name",)
#: the order a Dense/Gemm fed by a Flatten of a [N, C, H, W] tensor sums its inputs in:
#: "onnx" (C, H, W: the graph's own, conveyor's default, what code generation writes),
#: "hls4ml_io_parallel" (H, W, C: hls4ml's RemoveTransposeBeforeFlatten permutes the weights),
#: "hls4ml_io_stream" (C, H, W: hls4ml keeps the transpose)
ORDERS = ("onnx", "hls4ml_io_parallel", "hls4ml_io_stream")
#: the lookup tables a config may set and the keys each takes (defaults: conveyor.ops.lut)
TABLE_KEYS = {
    "sigmoid": ("size", "min", "max", "format"),
    "tanh": ("size", "min", "max", "format"),
    "lrn": ("size", "min", "max", "format"),
    "softmax": ("implementation",),
    "softmax_exp": ("size", "format", "input"),
    "softmax_inv": ("size", "format", "input"),
    "hard_sigmoid": ("slope", "shift"),              # HardSigmoid / HardSwish: hls4ml's slope_t, shift_t
    "layernorm": ("size", "range_power2", "format"),  # hls4ml's table_size, table_range_power2, table_t
    **{t: ("size", "min", "max", "format") for t in ("exp", "sqrt", "reciprocal", "erf", "gelu")},  # conveyor's
}
SOFTMAX_IMPLEMENTATIONS = ("stable", "latency", "argmax")


@lru_cache(maxsize=None)
def parse_format(text: str):
    """A number format from its text: block floating point (`mx:...`, `msfp...`) or ap_fixed family."""
    t = text.strip()
    if t.lower().startswith(("mx:", "msfp")):
        from conveyor.numerics.mx import parse_block_format

        return parse_block_format(t)
    from conveyor.numerics.fixed import FixedType, _TYPE_RE

    if not _TYPE_RE.match(t):  # neither family: say both, briefly
        raise PrecisionError(f"{t!r} is not a number format; accepted: ap_fixed<W,I[,Q[,O[,N]]]>, "
                             "ap_ufixed<W,I,...>, ap_int<W>, ap_uint<W>, mx:<element>[/<block>] or msfp<N>")
    return FixedType.parse(t)


@dataclass(frozen=True)
class NodePrecision:
    """The formats one node computes in; `accum` is None for 'auto' (exact). `tables` holds
    the config's lookup-table settings ({name: {key: value}}, see TABLE_KEYS), unparsed.
    `state` / `cell`: the recurrent state formats of LSTM / GRU (None: `result`)."""

    weight: Any
    bias: Any
    accum: Any
    result: Any
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False)
    state: Any = None
    cell: Any = None


@dataclass(frozen=True)
class PrecisionConfig:
    default: str
    roles: Mapping[str, str] = field(default_factory=dict)
    input: str | None = None
    op_types: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    nodes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    order: str = "onnx"
    infer: str | None = None

    # ---- construction ------------------------------------------------------------------

    @classmethod
    def coerce(cls, value: "PrecisionConfig | Mapping | str") -> "PrecisionConfig":
        """A config from a config, a dict, or a single format string (used everywhere)."""
        if isinstance(value, PrecisionConfig):
            return value
        if isinstance(value, str):
            return cls.from_dict({"default": value})
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise PrecisionError(f"precision must be a format string, a dict or a PrecisionConfig, got {type(value).__name__}")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PrecisionConfig":
        from conveyor.fileio import read_document

        path, data = read_document(path, "precision config", PrecisionError)
        return cls.from_dict(data, source=path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "precision") -> "PrecisionConfig":
        if not isinstance(data, Mapping):
            raise PrecisionError(f"{source}: a precision config is a mapping with keys {sorted(_TOP_KEYS)}")
        unknown = set(data) - _TOP_KEYS
        if unknown:
            raise PrecisionError(f"{source}: unknown keys {sorted(unknown)}; accepted: {sorted(_TOP_KEYS)}")
        if "default" not in data:
            raise PrecisionError(f"{source}: 'default' is required (e.g. default: \"ap_fixed<16,6>\")")
        data = _with_hls4ml_defaults(data)
        default = _format_text(data["default"], f"{source}.default", allow_auto=False)
        roles = {r: _format_text(data[r], f"{source}.{r}", allow_auto=r == "accum") for r in ROLES if r in data}
        inp = _format_text(data["input"], f"{source}.input", allow_auto=False) if "input" in data else None
        order = data.get("order", "onnx")
        if order not in ORDERS:
            raise PrecisionError(f"{source}.order: {order!r}; accepted: {list(ORDERS)}")
        infer = data.get("infer")
        if infer is not None and infer not in INFERS:
            raise PrecisionError(f"{source}.infer: {infer!r}; accepted: {list(INFERS)}")
        return cls(
            order=order,
            infer=infer,
            default=default,
            roles=roles,
            input=inp,
            op_types=_role_table(data.get("op_types", {}), f"{source}.op_types"),
            nodes=_role_table(data.get("nodes", {}), f"{source}.nodes"),
            tables=_tables(data.get("tables", {}), f"{source}.tables"),
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"default": self.default, **self.roles}
        if self.input is not None:
            out["input"] = self.input
        if self.order != "onnx":
            out["order"] = self.order
        if self.infer is not None:
            out["infer"] = self.infer
        for key in ("op_types", "nodes", "tables"):
            value = getattr(self, key)
            if value:
                out[key] = {k: dict(v) for k, v in value.items()}
        return out

    # ---- resolution --------------------------------------------------------------------

    def role_text(self, node_name: str, op_type: str, role: str) -> str:
        for table, key in ((self.nodes, node_name), (self.op_types, op_type)):
            if role in table.get(key, {}):
                return table[key][role]
        if role in self.roles:
            return self.roles[role]
        if role in RESULT_LIKE:
            return self.role_text(node_name, op_type, "result")
        return AUTO if role == "accum" else self.default

    def for_node(self, node_name: str, op_type: str) -> NodePrecision:
        formats = {}
        for role in ROLES:
            text = self.role_text(node_name, op_type, role)
            formats[role] = None if text == AUTO else parse_format(text)
        return NodePrecision(**formats, tables=self.tables)

    def input_format(self):
        return parse_format(self.input or self.default)

    def restricted(self, node_names: set[str], op_types: set[str]) -> "PrecisionConfig":
        """The same config with only the overrides that concern these nodes and op types
        (for a pipeline stage's sub-graph)."""
        from dataclasses import replace

        return replace(self, nodes={k: v for k, v in self.nodes.items() if k in node_names},
                       op_types={k: v for k, v in self.op_types.items() if k in op_types})

    def with_node_keys(self, resolve) -> "PrecisionConfig":
        """The same config with every `nodes:` key passed through `resolve` (a layer name such as
        `fc1` -> its node name `/fc1/Gemm`; None: keep the key, check_against then names it).
        Two keys for one node merge; a role they set differently is an error."""
        from dataclasses import replace

        merged: dict[str, dict[str, str]] = {}
        origin: dict[str, str] = {}
        for key, roles in self.nodes.items():
            target = resolve(key) or key
            entry = merged.setdefault(target, {})
            for role, text in roles.items():
                if role in entry and entry[role] != text:
                    raise PrecisionError(f"precision.nodes: '{origin[target]}' and '{key}' both name node "
                                         f"'{target}' and set {role} to {entry[role]!r} and {text!r}; keep one")
                entry[role] = text
            origin.setdefault(target, key)
        return self if merged == {k: dict(v) for k, v in self.nodes.items()} else replace(self, nodes=merged)

    def check_against(self, node_names: set[str], op_types: set[str], graph_name: str) -> None:
        """Reject overrides that name no node or op type of the graph (a typo would be silent)."""
        bad_nodes = sorted(set(self.nodes) - node_names)
        if bad_nodes:
            raise PrecisionError(f"precision.nodes names {bad_nodes}, which graph '{graph_name}' does not have; "
                                 f"its nodes: {sorted(node_names)[:20]}{' ...' if len(node_names) > 20 else ''}")
        bad_ops = sorted(set(self.op_types) - op_types)
        if bad_ops:
            raise PrecisionError(f"precision.op_types names {bad_ops}; graph '{graph_name}' has op types {sorted(op_types)}")

    def table(self, name: str, default: Mapping[str, Any]) -> dict[str, Any]:
        return {**default, **self.tables.get(name, {})}


def _with_hls4ml_defaults(data: Mapping) -> Mapping:
    """`default: "hls4ml:<format>"` -> hls4ml's defaults for that format (numerics.hls4ml_defaults),
    under whatever else `data` sets (its tables merged by name)."""
    from conveyor.numerics.hls4ml_defaults import expand

    base = expand(data["default"]) if isinstance(data["default"], str) else None
    if base is None:
        return data
    out = {**base, **{k: v for k, v in data.items() if k != "default"}}
    out["tables"] = {**base["tables"], **dict(data.get("tables") or {})}
    return out


def _format_text(value: Any, where: str, *, allow_auto: bool) -> str:
    if not isinstance(value, str):
        raise PrecisionError(f"{where}: expected a format string such as \"ap_fixed<16,6>\" or \"mx:fp8_e4m3\", got {value!r}")
    text = value.strip()
    if text == AUTO:
        if not allow_auto:
            raise PrecisionError(f"{where}: 'auto' is accepted only for the accum role")
        return AUTO
    try:
        parse_format(text)
    except PrecisionError as e:
        raise PrecisionError(f"{where}: {e}") from None
    return text


def _role_table(data: Any, where: str) -> dict[str, dict[str, str]]:
    if not isinstance(data, Mapping):
        raise PrecisionError(f"{where}: expected a mapping of name -> {{role: format}}")
    out = {}
    for name, roles in data.items():
        if isinstance(roles, str):  # shorthand: every role but accum
            roles = {r: roles for r in ROLES if r != "accum"}
        if not isinstance(roles, Mapping):
            raise PrecisionError(f"{where}.{name}: expected {{role: format}} with roles {list(ROLES)}")
        unknown = set(roles) - set(ROLES)
        if unknown:
            raise PrecisionError(f"{where}.{name}: unknown roles {sorted(unknown)}; accepted: {list(ROLES)}")
        out[str(name)] = {r: _format_text(v, f"{where}.{name}.{r}", allow_auto=r == "accum") for r, v in roles.items()}
    return out


def _tables(data: Any, where: str) -> dict[str, dict[str, Any]]:
    if not isinstance(data, Mapping):
        raise PrecisionError(f"{where}: expected a mapping of function -> {{size, min, max, format, ...}}")
    out = {}
    for name, spec in data.items():
        if name not in TABLE_KEYS:
            raise PrecisionError(f"{where}.{name}: unknown table; accepted: {sorted(TABLE_KEYS)}")
        keys = TABLE_KEYS[name]
        if not isinstance(spec, Mapping) or set(spec) - set(keys):
            raise PrecisionError(f"{where}.{name}: expected keys {list(keys)}, got {spec!r}")
        entry: dict[str, Any] = {}
        for k, v in spec.items():
            at = f"{where}.{name}.{k}"
            if k == "size":
                if isinstance(v, bool) or not isinstance(v, int) or v < 2:
                    raise PrecisionError(f"{at}: expected an integer >= 2, got {v!r}")
                entry[k] = int(v)
            elif k in ("min", "max"):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or float(v) != int(v):
                    raise PrecisionError(f"{at}: expected an integer (the table index is data * size / "
                                         f"(max - min) in integer arithmetic, as in hls4ml), got {v!r}")
                entry[k] = float(v)
            elif k == "range_power2":
                if isinstance(v, bool) or not isinstance(v, int) or not -32 < v < 32:
                    raise PrecisionError(f"{at}: expected an integer in (-32, 32) (the table covers variances "
                                         f"in [0, 2^-range_power2)), got {v!r}")
                entry[k] = int(v)
            elif k in ("format", "input", "slope", "shift"):
                text = _format_text(v, at, allow_auto=False)
                if text.lower().startswith(("mx:", "msfp")):
                    raise PrecisionError(f"{at}: lookup tables are addressed and stored in ap_fixed formats, got {text!r}")
                entry[k] = text
            else:  # implementation
                if v not in SOFTMAX_IMPLEMENTATIONS:
                    raise PrecisionError(f"{at}: {v!r} unknown; accepted: {list(SOFTMAX_IMPLEMENTATIONS)}")
                entry[k] = v
        if "min" in entry and "max" in entry and entry["max"] <= entry["min"]:
            raise PrecisionError(f"{where}.{name}: max {entry['max']} must exceed min {entry['min']}")
        out[str(name)] = entry
    return out
