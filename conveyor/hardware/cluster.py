"""`Cluster`: named devices (FPGA boards, CPU or GPU hosts) and the links between them.

A cluster file (YAML) or dict looks like::

    name: alexnet-4x
    topology: chain          # chain | ring | switch
    link: srio-10g           # default link between neighbours
    devices:
      - {name: fpga0, board: zynq7035}
      - {name: fpga1, board: zynq7035, clock_hz: 200.0e+6}   # per-device override
      - {name: host, host: xeon-gold-6248}
    links:                   # optional: change a link, or add one the topology lacks
      - {between: [fpga1, host], link: pcie3-x16}
    catalog:                 # optional: extra or changed catalog entries (same shape as the catalog files)
      boards: {...}

`to_dict()` writes this shape with a `catalog` section holding every entry the cluster
uses, so a Plan that embeds it keeps its figures even if the package catalog changes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from conveyor.errors import HardwareSpecError
from conveyor.hardware.catalog import Catalog, catalog, extend_catalog
from conveyor.hardware.specs import Board, Host, Link, spec_entry
from conveyor.hardware.yaml_marks import (
    REQUIRED,
    Where,
    as_map,
    as_str,
    choice,
    integer,
    list_of,
    load_marked,
    number,
    read_fields,
    unknown_name,
)

TOPOLOGIES = ("chain", "ring", "switch")
DEFAULT_LINK = "srio-10g"
BOARD_OVERRIDES = {
    "clock_hz": number(),
    "dram_bytes": integer(),
    "dram_bandwidth_Bps": number(strict=False),
    "hbm_bytes": integer(),
    "hbm_bandwidth_Bps": number(strict=False),
    "power_w": number(),
}
HOST_OVERRIDES = {
    "peak_flops": number(),
    "mem_bandwidth_Bps": number(),
    "mem_bytes": integer(minimum=1),
    "tdp_w": number(),
}
LINK_OVERRIDES = {"bandwidth_Bps": number(), "latency_s": number(strict=False)}

Overrides = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Device:
    """One device of a cluster.  `spec` is the resolved Board or Host (overrides applied);
    `base` is the catalog entry before the overrides."""

    name: str
    kind: str  # "fpga" | "cpu" | "gpu"
    spec: Board | Host
    overrides: Overrides = ()
    base: Board | Host | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.base is None:
            object.__setattr__(self, "base", self.spec)

    @property
    def board(self) -> Board:
        if not isinstance(self.spec, Board):
            raise HardwareSpecError(f"device {self.name!r} is a {self.kind} host, not an FPGA board")
        return self.spec

    @property
    def host(self) -> Host:
        if not isinstance(self.spec, Host):
            raise HardwareSpecError(f"device {self.name!r} is an FPGA board, not a host")
        return self.spec


@dataclass(frozen=True)
class Connection:
    """A direct link between devices `a` and `b` (either direction)."""

    a: str
    b: str
    link: Link
    overrides: Overrides = ()
    base: Link | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.base is None:
            object.__setattr__(self, "base", self.link)

    def joins(self, a: str, b: str) -> bool:
        return {self.a, self.b} == {a, b}


@dataclass(frozen=True)
class Cluster:
    """Devices, a topology, a default link and every direct connection.

    chain: consecutive devices are linked; ring: also last to first; switch: every pair
    is one switch hop apart.  `links` holds all direct connections, overrides applied.
    """

    name: str
    devices: tuple[Device, ...]
    topology: str
    link: Link
    links: tuple[Connection, ...] = ()
    description: str = ""
    catalog: Catalog | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise HardwareSpecError(
                f"cluster {self.name!r}: topology {self.topology!r}; accepted: {', '.join(TOPOLOGIES)}"
            )
        seen: set[str] = set()
        for d in self.devices:
            if d.name in seen:
                raise HardwareSpecError(f"cluster {self.name!r}: duplicate device name {d.name!r}")
            seen.add(d.name)

    # ------------------------------------------------------------------ queries

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.devices)

    @property
    def fpgas(self) -> tuple[Device, ...]:
        return tuple(d for d in self.devices if d.kind == "fpga")

    def __len__(self) -> int:
        return len(self.devices)

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise HardwareSpecError(f"cluster {self.name!r}: {unknown_name('device', name, self.names)}")

    def neighbors(self, name: str) -> tuple[str, ...]:
        self.device(name)
        return tuple(c.b if c.a == name else c.a for c in self.links if name in (c.a, c.b))

    def link_between(self, a: str, b: str) -> Link:
        """The link joining devices `a` and `b` directly; HardwareSpecError if there is none."""
        self.device(a), self.device(b)
        for c in self.links:
            if c.joins(a, b):
                return c.link
        near = ", ".join(self.neighbors(a)) or "nothing"
        raise HardwareSpecError(
            f"cluster {self.name!r}: no direct link between {a!r} and {b!r} "
            f"(topology {self.topology}; {a!r} is linked to {near})"
        )

    # ------------------------------------------------------------------ building

    @classmethod
    def load(cls, path: str | Path, *, catalog: Catalog | None = None) -> "Cluster":
        """Read a cluster YAML file; errors name the file, line and field."""
        tree, where = load_marked(path)
        return _parse(tree, where, catalog)

    @classmethod
    def from_dict(
        cls, d: Mapping[str, Any], *, catalog: Catalog | None = None, source: str = "<cluster dict>"
    ) -> "Cluster":
        """Inverse of `to_dict` (and accepts the cluster-file shape); `source` names the input in errors."""
        return _parse(d, Where(source), catalog)

    @classmethod
    def uniform(
        cls,
        board: str,
        k: int,
        link: str = DEFAULT_LINK,
        topology: str = "chain",
        *,
        name: str | None = None,
        catalog: Catalog | None = None,
    ) -> "Cluster":
        """k identical devices named fpga0..fpga{k-1} (or cpu0.., gpu0.. when `board` is a host)."""
        cat = _catalog(catalog)
        if board in cat.boards:
            key, prefix = "board", "fpga"
        elif board in cat.hosts:
            key, prefix = "host", cat.hosts[board].kind
        else:
            raise HardwareSpecError(
                f"Cluster.uniform: {unknown_name('board', board, cat.boards)}; "
                f"known hosts: {', '.join(sorted(cat.hosts))}"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise HardwareSpecError(f"Cluster.uniform: k must be an integer >= 1, got {k!r}")
        d = {
            "name": name or f"{board}-x{k}",
            "topology": topology,
            "link": link,
            "devices": [{"name": f"{prefix}{i}", key: board} for i in range(k)],
        }
        return _parse(d, Where("Cluster.uniform"), cat)

    # ------------------------------------------------------------------ writing

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML/JSON-ready) that `from_dict` turns back into an equal Cluster."""
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out["topology"] = self.topology
        out["link"] = self.link.name
        out["devices"] = [
            {"name": d.name, ("board" if d.kind == "fpga" else "host"): d.base.name, **dict(d.overrides)}
            for d in self.devices
        ]
        default = {_pair(*e) for e in _topology_edges(self.names, self.topology)}
        extra = [
            {"between": [c.a, c.b], "link": c.base.name, **dict(c.overrides)}
            for c in self.links
            if _pair(c.a, c.b) not in default or c.base != self.link or c.overrides
        ]
        if extra:
            out["links"] = extra
        out["catalog"] = self._used_catalog()
        return out

    def _used_catalog(self) -> dict[str, dict[str, Any]]:
        parts, boards, hosts, links = {}, {}, {}, {self.link.name: self.link}
        links.update((c.base.name, c.base) for c in self.links)
        for d in self.devices:
            if isinstance(d.base, Board):
                boards[d.base.name] = d.base
                parts[d.base.part.name] = d.base.part
            else:
                hosts[d.base.name] = d.base
        cat = _catalog(self.catalog)
        for b in list(boards.values()):
            if b.cpu is not None:
                hosts.setdefault(b.cpu, cat.hosts.get(b.cpu))
            for name in b.network_links:
                links.setdefault(name, cat.links.get(name))
        sections = {"parts": parts, "links": links, "hosts": hosts, "boards": boards}
        return {
            s: {n: spec_entry(x) for n, x in sorted(t.items()) if x is not None}
            for s, t in sections.items()
            if t
        }


# ----------------------------------------------------------------------------- parsing


def _catalog(cat: Catalog | None) -> Catalog:
    return catalog() if cat is None else cat


def _pair(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


def _topology_edges(names: tuple[str, ...], topology: str) -> list[tuple[str, str]]:
    """The (a, b) device pairs the topology links directly, in device order."""
    if topology == "switch":
        return [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    edges = list(zip(names, names[1:]))
    if topology == "ring" and len(names) > 2:
        edges.append((names[-1], names[0]))
    return edges


def _raw_list(value: Any, where: Where) -> list:
    if not isinstance(value, (list, tuple)):
        raise where.error(f"expected a list, got {value!r} ({type(value).__name__})")
    return value


def _raw_map(value: Any, where: Where) -> Mapping:
    return as_map(value, where)


_TOP = {
    "name": (as_str, REQUIRED),
    "description": (as_str, ""),
    "topology": (choice(*TOPOLOGIES), "chain"),
    "link": (as_str, DEFAULT_LINK),
    "devices": (_raw_list, REQUIRED),
    "links": (_raw_list, ()),
    "catalog": (_raw_map, None),
}


def _parse(tree: Any, where: Where, cat: Catalog | None) -> Cluster:
    cat = _catalog(cat)
    top = read_fields(tree, where, _TOP, what="cluster")
    if top["catalog"] is not None:
        cat = extend_catalog(cat, top["catalog"], where.key(tree, "catalog"), replace=True)
    if top["link"] not in cat.links:
        raise where.key(tree, "link").error(unknown_name("link", top["link"], cat.links))
    default = cat.links[top["link"]]

    devices_where = where.key(tree, "devices")
    entries = top["devices"]
    if not entries:
        raise devices_where.error("a cluster needs at least one device")
    devices: list[Device] = []
    first_line: dict[str, int | None] = {}
    for i, entry in enumerate(entries):
        dev = _parse_device(entry, devices_where.item(entries, i), cat)
        if dev.name in first_line:
            raise devices_where.item(entries, i).key(entry, "name").error(
                f"duplicate device name {dev.name!r}"
                + (f" (first given in line {first_line[dev.name]})" if first_line[dev.name] else "")
            )
        first_line[dev.name] = devices_where.item(entries, i).line
        devices.append(dev)
    names = tuple(d.name for d in devices)

    conns = {_pair(a, b): Connection(a, b, default) for a, b in _topology_edges(names, top["topology"])}
    links_where = where.key(tree, "links")
    given: dict[tuple[str, str], int | None] = {}
    for i, entry in enumerate(top["links"]):
        w = links_where.item(top["links"], i)
        conn = _parse_connection(entry, w, names, cat, top["link"])
        key = _pair(conn.a, conn.b)
        if key in given:
            raise w.error(f"a second entry for the link between {conn.a!r} and {conn.b!r}"
                          + (f" (first given in line {given[key]})" if given[key] else ""))
        given[key] = w.line
        conns[key] = conn
    return Cluster(
        name=top["name"],
        devices=tuple(devices),
        topology=top["topology"],
        link=default,
        links=tuple(conns.values()),
        description=top["description"],
        catalog=cat,
    )


def _override_schema(key: str, overrides: Mapping[str, Any]) -> dict[str, tuple]:
    schema = {"name": (as_str, REQUIRED), key: (as_str, REQUIRED)}
    schema.update((k, (reader, None)) for k, reader in overrides.items())
    return schema


def _parse_device(entry: Any, where: Where, cat: Catalog) -> Device:
    entry = as_map(entry, where)
    has_board, has_host = "board" in entry, "host" in entry
    if has_board and has_host:
        raise where.key(entry, "host").error("a device has either `board:` or `host:`, not both")
    if not (has_board or has_host):
        raise where.at_line_of(entry).error(
            "a device needs `board: <board name>` (FPGA) or `host: <cpu or gpu name>`"
        )
    key = "board" if has_board else "host"
    overrides_schema = BOARD_OVERRIDES if has_board else HOST_OVERRIDES
    v = read_fields(entry, where, _override_schema(key, overrides_schema), what=f"{key} device")
    table = cat.boards if has_board else cat.hosts
    if v[key] not in table:
        raise where.key(entry, key).error(unknown_name(key, v[key], table))
    base = table[v[key]]
    overrides = tuple((k, v[k]) for k in overrides_schema if v[k] is not None)
    spec = dataclasses.replace(base, **dict(overrides)) if overrides else base
    if isinstance(spec, Board):
        for mem in ("dram", "hbm"):
            size, bw = getattr(spec, f"{mem}_bytes"), getattr(spec, f"{mem}_bandwidth_Bps")
            if (size > 0) != (bw > 0):
                raise where.key(entry, f"{mem}_bytes" if f"{mem}_bytes" in entry else f"{mem}_bandwidth_Bps").error(
                    f"{mem}_bytes and {mem}_bandwidth_Bps must both be > 0 or both 0; got {size} and {bw:g}"
                )
    kind = "fpga" if has_board else base.kind
    return Device(name=v["name"], kind=kind, spec=spec, overrides=overrides, base=base)


_LINK_ENTRY = {"between": (list_of(as_str, length=2), REQUIRED), "link": (as_str, None)}
_LINK_ENTRY.update((k, (reader, None)) for k, reader in LINK_OVERRIDES.items())


def _parse_connection(entry: Any, where: Where, names: tuple[str, ...], cat: Catalog, default: str) -> Connection:
    v = read_fields(entry, where, _LINK_ENTRY, what="link entry")
    between_where = where.key(entry, "between")
    a, b = v["between"]
    for i, name in enumerate((a, b)):
        if name not in names:
            w = between_where.item(entry["between"], i)
            raise w.error(unknown_name("device", name, names))
    if a == b:
        raise between_where.error(f"a link joins two different devices, got {a!r} twice")
    link_name = v["link"] or default
    if link_name not in cat.links:
        raise where.key(entry, "link").error(unknown_name("link", link_name, cat.links))
    base = cat.links[link_name]
    overrides = tuple((k, v[k]) for k in LINK_OVERRIDES if v[k] is not None)
    link = dataclasses.replace(base, **dict(overrides)) if overrides else base
    return Connection(a, b, link, overrides, base)
