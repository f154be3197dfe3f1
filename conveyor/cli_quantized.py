"""What the CLI says and uses of a quantized model's own precision (frontends/qdq.py)."""

from __future__ import annotations


def model_config(graph):
    """The precision config a quantized model's quantizers give, as a dict; None for a float model."""
    mp = getattr(graph, "model_precision", None)
    return None if mp is None else mp.config.to_dict()


def as_json(graph) -> dict:
    mp = graph.model_precision
    return {"exact": mp.exact, "config": mp.config.to_dict(), "quantizers": [q.as_dict() for q in mp.quantizers]}


def show(graph, out) -> None:
    """Print the model's quantizers and the formats read from them (nothing for a float model)."""
    mp = getattr(graph, "model_precision", None)
    if mp is None:
        return
    from conveyor.cli_tables import Col

    rows = []
    for q in mp.quantizers:
        scale = f"{q.scale[0]:.6g}" + (f" (+{len(q.scale) - 1} per axis)" if len(q.scale) > 1 else "")
        rows.append([q.tensor, q.kind, scale, str(q.zero_point[0]) if len(set(q.zero_point)) == 1 else "per axis",
                     f"[{q.qmin}, {q.qmax}]", q.format, "yes" if q.exact else f"no: {q.note}"])
    cols = [Col("tensor", rank=None), Col("kind", rank=3), Col("scale", True, 2), Col("zero point", True, 1),
            Col("integers", rank=4), Col("format", rank=None), Col("exact", rank=5)]
    title = (f"precision read from the model's {len(mp.quantizers)} quantizers "
             f"({'exact' if mp.exact else 'some approximated'}; other values: {mp.config.default}, accumulators exact)")
    if hasattr(out, "table"):
        out.table(title, cols, rows)
    else:
        from conveyor.cli_tables import fit_table

        out.print(fit_table(title, cols, rows, 160)[0])
