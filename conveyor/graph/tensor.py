"""Tensor and Node: the two plain records the graph IR is made of."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np


@dataclass(frozen=True)
class Tensor:
    """A named value with a static shape and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape) or "scalar"
        return f"{self.name}: {np.dtype(self.dtype).name}[{dims}]"


@dataclass(frozen=True)
class Node:
    """One operation. `inputs`/`outputs` are tensor names; "" marks an omitted optional slot.

    `attrs` holds plain Python values (int, float, str, lists of them, numpy arrays
    for tensor attributes). `opset` is the ONNX opset the node's semantics follow.
    """

    name: str
    op_type: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)
    opset: int = 17

    def __hash__(self) -> int:
        return hash((self.name, self.op_type, self.inputs, self.outputs))

    def attr(self, key: str, default: Any = None) -> Any:
        return self.attrs.get(key, default)

    def __str__(self) -> str:
        return f"{self.op_type} node '{self.name}'"
