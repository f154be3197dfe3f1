"""The hardware catalog: parts, boards, hosts and links read from the package's YAML files.

Each catalog file is a mapping with any of the sections `parts`, `boards`, `hosts`,
`links`, each a mapping from name to entry.  The package ships one file per section;
`load_catalog(path, ...)` adds your own files, and a cluster file may carry an inline
`catalog:` section in the same shape.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from conveyor.errors import HardwareSpecError
from conveyor.hardware.specs import Board, FpgaPart, Host, Link, encoding_efficiency
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

PACKAGE_FILES = ("parts.yaml", "links.yaml", "hosts.yaml", "boards.yaml")
SECTIONS = ("parts", "links", "hosts", "boards")  # boards last: they refer to the others
_LINK_TOLERANCE = 0.01


@dataclass(frozen=True)
class Catalog:
    """Read-only name -> spec tables, with lookups that name the known entries on a miss."""

    parts: Mapping[str, FpgaPart] = field(default_factory=dict)
    boards: Mapping[str, Board] = field(default_factory=dict)
    hosts: Mapping[str, Host] = field(default_factory=dict)
    links: Mapping[str, Link] = field(default_factory=dict)

    def part(self, name: str) -> FpgaPart:
        return _lookup(self.parts, "part", name)

    def board(self, name: str) -> Board:
        return _lookup(self.boards, "board", name)

    def host(self, name: str) -> Host:
        return _lookup(self.hosts, "host", name)

    def link(self, name: str) -> Link:
        return _lookup(self.links, "link", name)


def _lookup(table: Mapping[str, Any], what: str, name: str) -> Any:
    try:
        return table[name]
    except (KeyError, TypeError):
        raise HardwareSpecError(unknown_name(what, name, table)) from None


@functools.cache
def catalog() -> Catalog:
    """The catalog shipped with conveyor (parsed once; read-only)."""
    here = Path(__file__).parent
    return load_catalog(*(here / name for name in PACKAGE_FILES), base=Catalog())


def load_catalog(*paths: str | Path, base: Catalog | None = None) -> Catalog:
    """The package catalog (or `base`) extended with the entries of the given YAML files.

    A name already present is an error; put a changed board under a new name.
    """
    cat = catalog() if base is None else base
    for path in paths:
        tree, where = load_marked(path)
        cat = extend_catalog(cat, tree, where, replace=False)
    return cat


def extend_catalog(base: Catalog, tree: Any, where: Where, *, replace: bool) -> Catalog:
    """`base` plus the sections in `tree`.  With replace=False a name clash is an error."""
    tree = as_map(tree, where)
    for key in tree:
        if key not in SECTIONS:
            raise where.key(tree, key).error(
                f"unknown catalog section; accepted sections: {', '.join(SECTIONS)}"
            )
    tables = {s: dict(getattr(base, s)) for s in SECTIONS}
    for section in SECTIONS:
        if section not in tree:
            continue
        swhere = where.key(tree, section)
        entries = as_map(tree[section], swhere)
        for name, entry in entries.items():
            ewhere = swhere.key(entries, name)
            if name in tables[section] and not replace:
                raise ewhere.error(f"{section[:-1]} {name!r} is already in the catalog; use another name")
            tables[section][name] = _PARSERS[section](name, entry, ewhere, tables)
    return Catalog(**{s: MappingProxyType(tables[s]) for s in SECTIONS})


# ----------------------------------------------------------------------------- entry parsers

_TEXT = (as_str, "")


def _pair(value: Any, where: Where) -> tuple[int, int]:
    return list_of(integer(minimum=1), length=2)(value, where)


def _mode(value: Any, where: Where) -> tuple[int, int, int]:
    return list_of(integer(minimum=1), length=3)(value, where)


_PART = {
    "vendor": (choice("xilinx", "intel"), REQUIRED),
    "family": (as_str, REQUIRED),
    "dsp": (integer(minimum=1), REQUIRED),
    "dsp_mult_width": (_pair, REQUIRED),
    "dsp_modes": (list_of(_mode), None),
    "bram18k": (integer(minimum=1), REQUIRED),
    "uram": (integer(), 0),
    "m20k": (integer(), 0),
    "lut": (integer(minimum=1), REQUIRED),
    "ff": (integer(minimum=1), REQUIRED),
    "clock_hz": (number(), REQUIRED),
    "description": _TEXT,
    "source": (as_str, REQUIRED),
}


def _parse_part(name: str, entry: Any, where: Where, tables: dict) -> FpgaPart:
    v = read_fields(entry, where, _PART, what="part")
    width = v["dsp_mult_width"]
    modes = ((width[0], width[1], 1),) if v["dsp_modes"] is None else v["dsp_modes"]
    if not modes:
        raise where.key(entry, "dsp_modes").error("must list at least one [a_bits, b_bits, count]")
    if not any(m[:2] == width for m in modes):
        raise where.key(entry, "dsp_modes").error(
            f"dsp_mult_width {list(width)} must be one of the modes {[list(m) for m in modes]}"
        )
    return FpgaPart(name=name, dsp_modes=modes, **{k: x for k, x in v.items() if k != "dsp_modes"})


_BOARD = {
    "part": (as_str, REQUIRED),
    "dram_bytes": (integer(), REQUIRED),
    "dram_bandwidth_Bps": (number(strict=False), REQUIRED),
    "hbm_bytes": (integer(), 0),
    "hbm_bandwidth_Bps": (number(strict=False), 0.0),
    "clock_hz": (number(), None),
    "host_interface": (as_str, REQUIRED),
    "power_w": (number(), None),
    "cpu": (as_str, None),
    "network_links": (list_of(as_str), ()),
    "description": _TEXT,
    "source": (as_str, REQUIRED),
}


def _parse_board(name: str, entry: Any, where: Where, tables: dict) -> Board:
    v = read_fields(entry, where, _BOARD, what="board")
    if v["part"] not in tables["parts"]:
        raise where.key(entry, "part").error(unknown_name("part", v["part"], tables["parts"]))
    if v["cpu"] is not None:
        if v["cpu"] not in tables["hosts"]:
            raise where.key(entry, "cpu").error(unknown_name("host", v["cpu"], tables["hosts"]))
    for i, link in enumerate(v["network_links"]):
        if link not in tables["links"]:
            w = where.key(entry, "network_links").item(entry["network_links"], i)
            raise w.error(unknown_name("link", link, tables["links"]))
    for mem in ("dram", "hbm"):
        size, bw = v[f"{mem}_bytes"], v[f"{mem}_bandwidth_Bps"]
        if (size > 0) != (bw > 0):
            raise where.key(entry, f"{mem}_bandwidth_Bps").error(
                f"{mem}_bytes and {mem}_bandwidth_Bps must both be > 0 or both 0; got {size} and {bw:g}"
            )
    if v["dram_bytes"] == 0 and v["hbm_bytes"] == 0:
        raise where.key(entry, "dram_bytes").error("a board needs off-chip memory (dram_bytes or hbm_bytes > 0)")
    part = tables["parts"][v.pop("part")]
    if v["clock_hz"] is None:
        v["clock_hz"] = part.clock_hz
    return Board(name=name, part=part, **v)


_HOST = {
    "kind": (choice("cpu", "gpu"), REQUIRED),
    "peak_flops": (number(), REQUIRED),
    "mem_bandwidth_Bps": (number(), REQUIRED),
    "mem_bytes": (integer(minimum=1), REQUIRED),
    "tdp_w": (number(), None),
    "description": _TEXT,
    "source": (as_str, REQUIRED),
}


def _parse_host(name: str, entry: Any, where: Where, tables: dict) -> Host:
    return Host(name=name, **read_fields(entry, where, _HOST, what="host"))


def _encoding(value: Any, where: Where) -> str:
    value = as_str(value, where)
    try:
        encoding_efficiency(value)
    except ValueError:
        raise where.error(f"got {value!r}; accepted: 'none' or '<data>b/<line>b' such as 8b/10b, 64b/66b") from None
    return value


def _boolean(value: Any, where: Where) -> bool:
    if not isinstance(value, bool):
        raise where.error(f"got {value!r}; accepted: true or false")
    return value


_LINK = {
    "medium": (as_str, REQUIRED),
    "lanes": (integer(minimum=1), 1),
    "line_rate_bps": (number(), REQUIRED),
    "encoding": (_encoding, REQUIRED),
    "protocol_efficiency": (number(maximum=1.0), REQUIRED),
    "bandwidth_Bps": (number(), REQUIRED),
    "latency_s": (number(strict=False), REQUIRED),
    "description": _TEXT,
    "source": (as_str, REQUIRED),
    "switched": (_boolean, False),
}


def _parse_link(name: str, entry: Any, where: Where, tables: dict) -> Link:
    link = Link(name=name, **read_fields(entry, where, _LINK, what="link"))
    expect = link.lanes * link.line_rate_bps * link.encoding_efficiency * link.protocol_efficiency / 8
    if abs(link.bandwidth_Bps - expect) > _LINK_TOLERANCE * expect:
        raise where.key(entry, "bandwidth_Bps").error(
            f"{link.bandwidth_Bps:g} B/s does not match lanes x line_rate_bps x encoding x "
            f"protocol_efficiency / 8 = {expect:g} B/s (within 1%)"
        )
    return link


_PARSERS = {"parts": _parse_part, "boards": _parse_board, "hosts": _parse_host, "links": _parse_link}


# ----------------------------------------------------------------------------- table rows


def catalog_rows(cat: Catalog | None = None) -> list[dict[str, Any]]:
    """One plain dict per part, board, host and link (`kind`: part | board | cpu | gpu | link)."""
    cat = catalog() if cat is None else cat
    rows: list[dict[str, Any]] = []
    for p in cat.parts.values():
        rows.append({
            "kind": "part", "name": p.name, "vendor": p.vendor, "family": p.family,
            "dsp": p.dsp, "dsp_mult_width": "x".join(map(str, p.dsp_mult_width)),
            "bram18k": p.bram18k, "uram": p.uram, "m20k": p.m20k, "lut": p.lut, "ff": p.ff,
            "clock_hz": p.clock_hz, "source": p.source,
        })
    for b in cat.boards.values():
        rows.append({
            "kind": "board", "name": b.name, "part": b.part.name, "dsp": b.part.dsp,
            "bram18k": b.part.bram18k, "clock_hz": b.clock_hz,
            "dram_bytes": b.dram_bytes, "dram_bandwidth_Bps": b.dram_bandwidth_Bps,
            "hbm_bytes": b.hbm_bytes, "hbm_bandwidth_Bps": b.hbm_bandwidth_Bps,
            "power_w": b.power_w, "host_interface": b.host_interface, "source": b.source,
        })
    for h in cat.hosts.values():
        rows.append({
            "kind": h.kind, "name": h.name, "peak_flops": h.peak_flops,
            "mem_bandwidth_Bps": h.mem_bandwidth_Bps, "mem_bytes": h.mem_bytes,
            "tdp_w": h.tdp_w, "source": h.source,
        })
    for link in cat.links.values():
        rows.append({
            "kind": "link", "name": link.name, "medium": link.medium, "lanes": link.lanes,
            "line_rate_bps": link.line_rate_bps, "encoding": link.encoding,
            "bandwidth_Bps": link.bandwidth_Bps, "latency_s": link.latency_s, "source": link.source,
        })
    return rows
