"""One reader per array in an io_parallel top function (Vitis HLS DATAFLOW's rule).

Under `#pragma HLS DATAFLOW` every array between two processes must have one producer and one
consumer (UG1399, "Dataflow Checking": a channel with several readers makes the region fail its
checks and run sequentially). A value read by several layers (a residual Add's skip, a fire
module's squeeze output, an input a board both computes on and passes on) is therefore copied
once, by a process of its own (`clone_<array>`, INLINE off), into one array per reader, and each
reader gets its own copy. The values are unchanged, so the C simulation's outputs are too.

The pass works on the top's statements as conveyor writes them: a declaration `T name[N];`, a
call whose arguments are names; of a call's array arguments the last is the one it writes
(`layer<i>_...(x, y)`, `conveyor::unpack(link_in, x)`, `conveyor::hwc_to_chw(a, b)`), except
`conveyor::pack`, which only reads.
"""

from __future__ import annotations

import re

_DECL = re.compile(r"^\s+(\w+) (\w+)\[(\d+)\];$")
_CALL = re.compile(r"^(\s+)([\w:]+(?:<[^()]*>)?)\((.*)\);(\s*//.*)?$")


def _args(text: str) -> list[str]:
    return [a.strip() for a in text.split(",")]


def one_reader_per_array(lines: list[str]) -> tuple[list[str], list[str]]:
    """`lines`: the top function's body, one statement per line (multi-line entries are split).
    Returns (the body with a clone process after each array read by several statements, the
    clone functions to define before the top)."""
    flat = [s for entry in lines for s in entry.split("\n")]
    arrays: dict[str, tuple[str, int]] = {}
    for s in flat:
        m = _DECL.match(s)
        if m:
            arrays[m.group(2)] = (m.group(1), int(m.group(3)))
    calls = {}   # line index -> (indent, callee, args, comment)
    readers: dict[str, list[int]] = {}
    writer: dict[str, int] = {}
    for k, s in enumerate(flat):
        m = _CALL.match(s)
        if not m:
            continue
        indent, callee, args, comment = m.group(1), m.group(2), _args(m.group(3)), m.group(4) or ""
        calls[k] = (indent, callee, args, comment)
        named = [a for a in args if a in arrays]
        written = None if callee.startswith("conveyor::pack<") or not named else named[-1]
        if written is not None:
            writer[written] = k
        for a in dict.fromkeys(named):
            if a != written:
                readers.setdefault(a, []).append(k)
    shared = {a: ks for a, ks in readers.items() if len(ks) > 1 and a in writer}
    if not shared:
        return lines, []
    rename: dict[int, dict[str, str]] = {}
    after: dict[int, list[str]] = {}
    functions = []
    for a, ks in shared.items():
        ctype, n = arrays[a]
        copies = [f"{a}_r{j}" for j in range(len(ks))]
        for k, c in zip(ks, copies):
            rename.setdefault(k, {})[a] = c
        functions.append(
            f"static void clone_{a}({ctype} {a}[{n}], " + ", ".join(f"{ctype} {c}[{n}]" for c in copies) + ") {\n"
            f"#pragma HLS INLINE off\n    // {a} has {len(ks)} readers: one copy each (DATAFLOW: one consumer per channel)\n"
            f"clone_{a}_loop:\n    for (int i = 0; i < {n}; i++) {{\n#pragma HLS UNROLL\n"
            + "".join(f"        {c}[i] = {a}[i];\n" for c in copies) + "    }\n}\n")
        after.setdefault(writer[a], []).extend(
            [*(f"    {ctype} {c}[{n}];\n#pragma HLS ARRAY_PARTITION variable={c} complete" for c in copies),
             f"    clone_{a}({a}, {', '.join(copies)});"])
    out = []
    for k, s in enumerate(flat):
        if k in rename:
            indent, callee, args, comment = calls[k]
            s = f"{indent}{callee}({', '.join(rename[k].get(x, x) for x in args)});{comment}"
        out.append(s)
        out += after.get(k, [])
    return out, functions
