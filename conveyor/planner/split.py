"""Splitting one layer across several boards when its weights fit no single board
(Brainwave spreads a model over FPGAs this way): r identical boards each hold 1/r of the
layer's output channels (weights, MACs, outputs), all see the whole input, and the output
slices are gathered before the next stage."""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

from conveyor.cost.fpga import dataflow_options
from conveyor.cost.work import LayerWork

#: Layer types whose output channels can be split across boards.
SPLITTABLE = frozenset({"Conv", "Gemm", "MatMul", "Dense"})
#: Layers that work channel by channel: they follow a split layer on the same slices.
CHANNELWISE = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "MaxPool", "AveragePool",
                         "BatchNormalization"})


def split_work(work: LayerWork, ways: int) -> LayerWork:
    """One board's share of `work` split `ways` ways by output channel."""
    return replace(
        work,
        macs=math.ceil(work.macs / ways),
        params=math.ceil(work.params / ways),
        weight_bytes=math.ceil(work.weight_bytes / ways),
        out_bytes=math.ceil(work.out_bytes / ways),
        max_parallel=max(1, work.max_parallel // ways),
    )


@lru_cache(maxsize=4096)
def split_options(work: LayerWork, board, ways: int):
    return tuple(dataflow_options(split_work(work, ways), board))


def gather_seconds(work: LayerWork, link, ways: int, out_bytes: int | None = None) -> float:
    """Per item: the input of the split layer reaches every slice and the output slices
    (`out_bytes` of the stage's last layer, by default the split layer's) come back together,
    forwarded hop by hop over `link` (latency per hop; bytes at the link's rate)."""
    out = work.out_bytes if out_bytes is None else out_bytes
    moved = work.in_bytes * (ways - 1) + out * (ways - 1) / ways
    return (ways - 1) * link.latency_s + moved / link.bandwidth_Bps
