"""YAML reading that remembers where each value came from, and typed field readers.

`load_marked` turns a YAML file into plain dicts, lists and scalars, except that
mappings and sequences are `MarkedDict` / `MarkedList`, which also remember the
line of every key and item.  `Where` names a place (file, line, field path) and
builds the `HardwareSpecError` for it, so every message reads
``cluster.yaml:7: devices[1].board: unknown board 'zynq7036'; known boards: ...``.
Plain dicts (from `Cluster.from_dict`) work too; they just have no lines.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

from conveyor.errors import HardwareSpecError

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# YAML 1.1 (PyYAML) reads `1e9` or `2.5e9` as a string; we read them as numbers.
_FLOATISH = re.compile(r"^[-+]?(\d[\d_]*\.?[\d_]*|\.\d[\d_]*)([eE][-+]?\d+)?$")


class MarkedDict(dict):
    """A dict that knows its own line and the line of each key (1-based)."""

    line: int | None = None
    key_lines: dict


class MarkedList(list):
    """A list that knows its own line and the line of each item (1-based)."""

    line: int | None = None
    item_lines: list


@dataclass(frozen=True)
class Where:
    """A place in an input: source (file name), line (1-based or None), field path."""

    source: str
    line: int | None = None
    path: str = ""

    def error(self, message: str) -> HardwareSpecError:
        head = f"{self.source}:{self.line}" if self.line else self.source
        return HardwareSpecError(f"{head}: {self.path}: {message}" if self.path else f"{head}: {message}")

    def key(self, mapping: Mapping, key: str) -> "Where":
        """The place of `mapping[key]` (or of the mapping itself when the key is absent)."""
        lines = getattr(mapping, "key_lines", None) or {}
        line = lines.get(key, getattr(mapping, "line", None) or self.line)
        return Where(self.source, line, f"{self.path}.{key}" if self.path else str(key))

    def item(self, seq: list, index: int) -> "Where":
        lines = getattr(seq, "item_lines", None) or []
        line = lines[index] if index < len(lines) else self.line
        return Where(self.source, line, f"{self.path}[{index}]")

    def at_line_of(self, value: Any) -> "Where":
        line = getattr(value, "line", None)
        return Where(self.source, line or self.line, self.path)


def load_marked(path: str | Path) -> tuple[Any, Where]:
    """Parse one YAML file; return (tree with marks, Where of its root)."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise HardwareSpecError(f"{source}: cannot read file: {exc.strerror or exc}") from None
    return parse_marked(text, source)


def parse_marked(text: str, source: str) -> tuple[Any, Where]:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise Where(source, 1).error("the file is empty; expected a YAML mapping")
        return _convert(node, loader, source), Where(source, node.start_mark.line + 1)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise Where(source, line).error(f"invalid YAML: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise Where(source).error(f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _convert(node: yaml.Node, loader, source: str) -> Any:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = MarkedDict()
        out.line, out.key_lines = line, {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if not isinstance(key_node, yaml.ScalarNode):
                raise Where(source, key_line).error("a mapping key must be a plain name")
            key = loader.construct_object(key_node)
            if not isinstance(key, str):
                key = str(key)
            if key in out:
                raise Where(source, key_line, key).error(
                    f"duplicate key (first given in line {out.key_lines[key]})"
                )
            out.key_lines[key] = key_line
            out[key] = _convert(value_node, loader, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        out = MarkedList()
        out.line = line
        out.item_lines = [item.start_mark.line + 1 for item in node.value]
        out.extend(_convert(item, loader, source) for item in node.value)
        return out
    value = loader.construct_object(node)
    if isinstance(value, str) and not node.style and _FLOATISH.match(value):  # plain (unquoted) only
        value = float(value.replace("_", ""))
    return value


# ----------------------------------------------------------------------------- lookups


def unknown_name(what: str, name: Any, known: Iterable[str]) -> str:
    """Message for an unknown catalog / device name, listing the known ones."""
    known = sorted(known)
    hint = difflib.get_close_matches(str(name), known, n=1)
    maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown {what} {name!r}{maybe}; known {what}s: {', '.join(known) or '(none)'}"


# ----------------------------------------------------------------------------- field readers

Reader = Callable[[Any, Where], Any]
REQUIRED = object()


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def as_map(value: Any, where: Where) -> Mapping:
    if not isinstance(value, Mapping):
        raise where.error(f"expected a mapping of fields, got {_describe(value)}")
    return value


def as_list(value: Any, where: Where) -> list:
    if not isinstance(value, (list, tuple)):
        raise where.error(f"expected a list, got {_describe(value)}")
    return list(value)


def as_str(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.error(f"expected a non-empty text, got {_describe(value)}")
    return value


def choice(*options: str) -> Reader:
    def read(value: Any, where: Where) -> str:
        if value not in options:
            raise where.error(f"got {value!r}; accepted: {', '.join(options)}")
        return value

    return read


def _number(value: Any, where: Where, what: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.error(f"expected {what}, got {_describe(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise where.error(f"expected a finite number, got {value!r}")
    return value


def number(*, minimum: float = 0.0, strict: bool = True, maximum: float | None = None) -> Reader:
    """A float with `value > minimum` (strict) or `value >= minimum`."""

    def read(value: Any, where: Where) -> float:
        value = float(_number(value, where, "a number"))
        if value < minimum or (strict and value == minimum):
            raise where.error(f"must be {'>' if strict else '>='} {minimum:g}, got {value:g}")
        if maximum is not None and value > maximum:
            raise where.error(f"must be <= {maximum:g}, got {value:g}")
        return value

    return read


def integer(*, minimum: int = 0) -> Reader:
    """An int >= minimum; an integral float such as 4.0e9 is accepted."""

    def read(value: Any, where: Where) -> int:
        value = _number(value, where, "an integer")
        if isinstance(value, float):
            if not value.is_integer():
                raise where.error(f"expected an integer, got {value!r}")
            value = int(value)
        if value < minimum:
            raise where.error(f"must be >= {minimum}, got {value}")
        return value

    return read


def list_of(reader: Reader, *, length: int | None = None) -> Reader:
    def read(value: Any, where: Where) -> tuple:
        items = as_list(value, where)
        if length is not None and len(items) != length:
            raise where.error(f"expected a list of {length} items, got {len(items)}")
        return tuple(reader(item, where.item(items, i)) for i, item in enumerate(items))

    return read


def read_fields(
    mapping: Any, where: Where, schema: Mapping[str, tuple[Reader, Any]], *, what: str
) -> dict[str, Any]:
    """Check a mapping against `schema` (field -> (reader, default or REQUIRED)).

    Raises on a non-mapping, an unknown field, a missing required field or a bad value;
    returns the read values with defaults filled in.
    """
    mapping = as_map(mapping, where)
    for key in mapping:
        if key not in schema:
            raise where.key(mapping, key).error(
                f"unknown field in {what}; accepted fields: {', '.join(schema)}"
            )
    out: dict[str, Any] = {}
    for key, (reader, default) in schema.items():
        if key in mapping and mapping[key] is not None:
            out[key] = reader(mapping[key], where.key(mapping, key))
        elif default is REQUIRED:
            missing = Where(where.source, where.line or getattr(mapping, "line", None),
                            f"{where.path}.{key}" if where.path else key)
            raise missing.error(f"missing required field of {what}")
        else:
            out[key] = default
    return out
