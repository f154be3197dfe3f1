"""`--requant` on every command that loads a model (docs/numerics-quantized.md): how a quantized
model's float scales load. `conveyor.cli._resolve_model` reads the choice."""

from __future__ import annotations

import click

from conveyor.frontends.qdq import REQUANT_MODES

_KEY = "conveyor.requant"


def requant_option(f):
    def keep(ctx, param, value):
        ctx.meta[_KEY] = value

    return click.option("--requant", type=click.Choice(REQUANT_MODES), default=None, expose_value=False,
                        callback=keep, help="A quantized model's float scales: 'integer' (int32 sums, Q31 multiplier "
                        "+ shift per Requant, as integer-only inference) or 'nearest' (each scale's nearest power "
                        "of two). Default: the library's, or the mode the plan was made with.")(f)


def chosen() -> str | None:
    """The command's --requant, or None when not given."""
    ctx = click.get_current_context(silent=True)
    return ctx.meta.get(_KEY) if ctx is not None else None
