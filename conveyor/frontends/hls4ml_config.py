"""hls4ml's configuration (config.yml) read into conveyor's terms.

hls4ml writes (and its users edit) a YAML file like

    Part: xcvu13p-flga2577-2-e          # or XilinxPart (older files)
    ClockPeriod: 5                       # ns
    IOType: io_parallel
    HLSConfig:
      Model: {Precision: ap_fixed<16,6>, ReuseFactor: 1, Strategy: Latency}
      LayerType: {Dense: {Precision: {accum: ap_fixed<24,10>}}}
      LayerName: {fc1: {Precision: {weight: ap_fixed<8,3>, result: ap_fixed<16,6,AP_RND,AP_SAT>}, ReuseFactor: 4}}

`read_hls4ml_config(path, graph)` gives an `Hls4mlConfig`: a conveyor precision config with
hls4ml's meaning (a Model precision P is `hls4ml:P`: accumulators of P too, see
conveyor.numerics.hls4ml_defaults; `order` from IOType), the per-layer ReuseFactor and Strategy (for the planner to
pin), IOType, part and clock; and `unused`: every key conveyor read but does not act on
(Compression, BramFactor, Trace, OutputDir, ...), by its path in the file, never silently
dropped. hls4ml's precision resolution is LayerName > LayerType > Model, per variable, then the
entity's `default`; conveyor's is nodes > op_types > top-level role > default, so the mapping
is one to one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from conveyor.errors import PrecisionError

#: hls4ml layer class (LayerType keys, hls4ml 1.3.0 model/layers.py) -> conveyor op types
LAYER_TYPES: dict[str, tuple[str, ...]] = {
    "Dense": ("Dense", "Gemm", "MatMul"),
    "Conv1D": ("Conv",), "Conv2D": ("Conv",), "Conv": ("Conv",),
    "Pooling1D": ("MaxPool", "AveragePool"), "Pooling2D": ("MaxPool", "AveragePool"),
    "GlobalPooling1D": ("GlobalAveragePool",), "GlobalPooling2D": ("GlobalAveragePool",),
    "Activation": ("Relu", "Sigmoid", "Tanh"), "ParametrizedActivation": ("LeakyRelu",),
    "LeakyReLU": ("LeakyRelu",), "Softmax": ("Softmax",),
    "BatchNormalization": ("BatchNormalization",), "LSTM": ("LSTM",), "GRU": ("GRU",),
    "Merge": ("Add", "Sub", "Mul"), "Concatenate": ("Concat",),
    "Resize": ("Resize", "Upsample"), "UpSampling1D": ("Resize", "Upsample"), "UpSampling2D": ("Resize", "Upsample"),
}
#: hls4ml precision variables -> conveyor roles
VARIABLES = {"weight": "weight", "bias": "bias", "result": "result", "accum": "accum",
             "scale": "weight", "recurrent_weight": "weight", "recurrent_bias": "bias"}
#: keys of a Model / LayerType / LayerName entry conveyor reads
_ENTRY_KEYS = {"Precision", "ReuseFactor", "Strategy"}
_TOP_KEYS = {"HLSConfig", "IOType", "Part", "XilinxPart", "ClockPeriod"}
IO_TYPES = ("io_parallel", "io_stream")
STRATEGIES = ("latency", "resource")


@dataclass(frozen=True)
class Hls4mlConfig:
    """What an hls4ml config says, in conveyor's terms (see the module docstring)."""

    precision: Mapping[str, Any]             # a conveyor precision config (PrecisionConfig.from_dict)
    reuse_factor: Mapping[str, int]          # node name -> ReuseFactor (every node of the graph)
    strategy: Mapping[str, str]              # node name -> "latency" | "resource"
    io_type: str = "io_parallel"
    part: str | None = None
    clock_period_ns: float | None = None
    unused: tuple[str, ...] = field(default_factory=tuple)  # "path: value" of keys conveyor does not act on

    @property
    def clock_hz(self) -> float | None:
        return None if self.clock_period_ns is None else 1e9 / self.clock_period_ns


def read_hls4ml_config(source: str | os.PathLike | Mapping, graph) -> Hls4mlConfig:
    """`source`: a config.yml path (or its parsed mapping); `graph`: the model it configures
    (layer names resolve to its nodes; LayerType entries to the op types it has)."""
    if isinstance(source, Mapping):
        where, data = "hls4ml config", source
    else:
        from conveyor.fileio import read_document

        where, data = read_document(source, "hls4ml config", PrecisionError)
    if not isinstance(data, Mapping):
        raise PrecisionError(f"{where}: an hls4ml config is a mapping with keys such as HLSConfig, IOType, Part")
    unused = [f"{k}: {_short(v)}" for k, v in data.items() if k not in _TOP_KEYS]
    hls = data.get("HLSConfig", data if "Model" in data else None)  # a bare HLSConfig is accepted too
    if not isinstance(hls, Mapping) or "Model" not in hls:
        raise PrecisionError(f"{where}: no HLSConfig.Model; expected e.g. HLSConfig: {{Model: {{Precision: ap_fixed<16,6>}}}}")
    if hls is data:
        unused = []
    unused += [f"HLSConfig.{k}: {_short(v)}" for k, v in hls.items() if k not in ("Model", "LayerType", "LayerName")]

    model = _entry(hls["Model"], "HLSConfig.Model", unused)
    precision: dict[str, Any] = {}
    mp = model.get("Precision", "ap_fixed<16,6>")  # hls4ml's own default
    roles = _precision(mp, "HLSConfig.Model.Precision", unused, with_default=True)
    if "default" not in roles:
        raise PrecisionError(f"{where}: HLSConfig.Model.Precision needs a default (e.g. Precision: ap_fixed<16,6>)")
    precision["default"] = "hls4ml:" + roles.pop("default")
    precision.update(roles)

    present_ops = {n.op_type for n in graph.nodes}
    op_types: dict[str, dict[str, str]] = {}
    type_rf: dict[str, int] = {}
    type_strategy: dict[str, str] = {}
    for cls, entry in (hls.get("LayerType") or {}).items():
        at = f"HLSConfig.LayerType.{cls}"
        ops = LAYER_TYPES.get(str(cls))
        if ops is None:
            unused.append(f"{at}: no conveyor op for hls4ml layer type {cls!r} (known: {sorted(LAYER_TYPES)})")
            continue
        entry = _entry(entry, at, unused)
        roles = _precision(entry.get("Precision"), f"{at}.Precision", unused) if "Precision" in entry else {}
        for op in ops:
            if op in present_ops:
                if roles:
                    op_types[op] = roles
                _read_engine(entry, at, op, type_rf, type_strategy)

    from conveyor.graph.names import resolve

    nodes: dict[str, dict[str, str]] = {}
    name_rf: dict[str, int] = {}
    name_strategy: dict[str, str] = {}
    for name, entry in (hls.get("LayerName") or {}).items():
        at = f"HLSConfig.LayerName.{name}"
        node = resolve(graph, str(name))
        if node is None:  # hls4ml's own input layer, or a layer conveyor folded away (or a typo)
            unused.append(f"{at}: graph '{graph.name}' has no layer {name!r}")
            continue
        entry = _entry(entry, at, unused)
        if "Precision" in entry:
            roles = _precision(entry["Precision"], f"{at}.Precision", unused, with_default=True)
            if "default" in roles:  # hls4ml: <name>_default covers every variable not named
                d = roles.pop("default")
                roles = {**{r: d for r in ("weight", "bias", "result", "accum")}, **roles}
            if roles:
                nodes[node] = roles
        _read_engine(entry, at, node, name_rf, name_strategy)
    if op_types:
        precision["op_types"] = op_types
    if nodes:
        precision["nodes"] = nodes

    model_rf = _reuse(model.get("ReuseFactor", 1), "HLSConfig.Model.ReuseFactor")
    model_strategy = _strategy(model.get("Strategy", "Latency"), "HLSConfig.Model.Strategy")
    reuse = {n.name: name_rf.get(n.name, type_rf.get(n.op_type, model_rf)) for n in graph.nodes}
    strategy = {n.name: name_strategy.get(n.name, type_strategy.get(n.op_type, model_strategy)) for n in graph.nodes}

    io_type = str(data.get("IOType", "io_parallel"))
    if io_type not in IO_TYPES:
        raise PrecisionError(f"{where}: IOType {io_type!r}; accepted: {list(IO_TYPES)}")
    precision["order"] = f"hls4ml_{io_type}"  # the order its Dense after a Flatten sums in
    part = data.get("Part", data.get("XilinxPart"))
    if "Part" in data and "XilinxPart" in data and data["Part"] != data["XilinxPart"]:
        unused.append(f"XilinxPart: {data['XilinxPart']} (Part {data['Part']} wins)")
    clock = data.get("ClockPeriod")
    if clock is not None and (isinstance(clock, bool) or not isinstance(clock, (int, float)) or clock <= 0):
        raise PrecisionError(f"{where}: ClockPeriod {clock!r}; expected a positive number of nanoseconds")
    from conveyor.numerics.config import PrecisionConfig

    PrecisionConfig.from_dict(precision, source=where)  # every format parses, or the error names it
    return Hls4mlConfig(precision=precision, reuse_factor=reuse, strategy=strategy, io_type=io_type,
                        part=None if part is None else str(part),
                        clock_period_ns=None if clock is None else float(clock), unused=tuple(unused))


# ---- helpers ---------------------------------------------------------------------------

def _entry(entry: Any, at: str, unused: list[str]) -> Mapping:
    if not isinstance(entry, Mapping):
        raise PrecisionError(f"{at}: expected a mapping with keys {sorted(_ENTRY_KEYS)}, got {entry!r}")
    unused += [f"{at}.{k}: {_short(v)}" for k, v in entry.items() if k not in _ENTRY_KEYS]
    return entry


def _precision(value: Any, at: str, unused: list[str], with_default: bool = False) -> dict[str, str]:
    """hls4ml Precision (a type string, or {variable: type}) -> {conveyor role: format}."""
    if isinstance(value, str):
        return {"default": _type(value, at)} if with_default else {r: _type(value, at) for r in
                                                                    ("weight", "bias", "result", "accum")}
    if not isinstance(value, Mapping):
        raise PrecisionError(f"{at}: expected a type such as ap_fixed<16,6> or {{weight: ..., result: ...}}, got {value!r}")
    out: dict[str, str] = {}
    for var, text in value.items():
        if var == "default":
            if with_default:
                out["default"] = _type(text, f"{at}.default")
            else:
                out.update({r: _type(text, f"{at}.default") for r in ("weight", "bias", "result", "accum")})
            continue
        role = VARIABLES.get(str(var))
        if role is None:
            unused.append(f"{at}.{var}: {text} (conveyor has no role for hls4ml variable {var!r})")
            continue
        if str(text).strip() == "auto":
            if role == "accum":
                out[role] = "auto"
            else:
                unused.append(f"{at}.{var}: auto (only accum may be 'auto' in conveyor; the default applies)")
            continue
        out[role] = _type(text, f"{at}.{var}")
    return out


def _type(text: Any, at: str) -> str:
    from conveyor.numerics.config import parse_format

    if not isinstance(text, str):
        raise PrecisionError(f"{at}: expected a type string such as ap_fixed<16,6>, got {text!r}")
    try:
        parse_format(text)
    except PrecisionError as e:
        raise PrecisionError(f"{at}: {e}") from None
    return text.strip()


def _read_engine(entry: dict, at: str, key: str, reuse: dict, strategy: dict) -> None:
    """An entry's ReuseFactor and Strategy, where given, into `reuse[key]` / `strategy[key]`."""
    if "ReuseFactor" in entry:
        reuse[key] = _reuse(entry["ReuseFactor"], f"{at}.ReuseFactor")
    if "Strategy" in entry:
        strategy[key] = _strategy(entry["Strategy"], f"{at}.Strategy")


def _reuse(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PrecisionError(f"{at}: expected a positive integer, got {value!r}")
    return int(value)


def _strategy(value: Any, at: str) -> str:
    s = str(value).strip().lower()
    if s not in STRATEGIES:
        raise PrecisionError(f"{at}: {value!r}; accepted: Latency, Resource")
    return s


def _short(v: Any) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."
