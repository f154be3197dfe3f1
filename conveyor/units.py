"""Engineering-unit text for what the CLI and reports print: a tiny model's 0.4 µs stage reads
"0.400 µs", not "0.000 ms", and 2.3 million items/s reads "2.34 M/s"."""

from __future__ import annotations

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"))


def eng(value: float, unit: str, digits: int = 3) -> str:
    """`value` in `unit` with the SI prefix that puts it in [1, 1000), `digits` significant digits."""
    if value != value or value in (float("inf"), float("-inf")):
        return f"{value} {unit}"
    if value == 0:
        return f"0 {unit}"
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale * 0.9995:
            break
    v = value / scale
    decimals = max(digits - 1 - (len(str(int(abs(v)))) - 1), 0)
    return f"{v:.{decimals}f} {prefix}{unit}"


def seconds(t: float) -> str:
    return eng(t, "s")


def rate(per_s: float) -> str:
    """A count per second without its unit, for a column or title that names it: "2.34 M", "947 k"."""
    return eng(per_s, "").rstrip()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def span(layers) -> str:
    """A stage's layers: "conv3" for one, "conv1..relu2 (4)" for more."""
    return layers[0] if len(layers) == 1 else f"{layers[0]}..{layers[-1]} ({len(layers)})"
