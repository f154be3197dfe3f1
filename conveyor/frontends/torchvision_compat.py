"""Import torchvision beside a CPU build of torch.

PyPI's torchvision 0.28.0 is a CUDA build; beside torch 2.13.0+cpu its import fails
with "operator torchvision::nms does not exist" because the compiled C++ ops it
registers fake implementations for are missing. Defining the two op schemas first
(without kernels) lets the pure-Python model definitions import; detection ops that
would call nms are the only thing that stays unusable.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ModelError

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_LIBRARY: list[Any] = []   # keeps the torch.library.Library alive (its ops die with it)


def import_torchvision():
    """Return the torchvision module, defining its missing C++ op schemas if needed."""
    try:
        import torch
    except ImportError:
        raise ModelError("torchvision models need PyTorch; install it with pip install 'conveyor[torch]'") from None
    try:
        import torchvision
        return torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    except ImportError:
        raise ModelError("torchvision is not installed; pip install torchvision (matching your torch)") from None
    if not _LIBRARY:
        lib = torch.library.Library("torchvision", "DEF")
        for schema in _SCHEMAS:
            lib.define(schema)
        _LIBRARY.append(lib)
    import sys
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]   # a failed import can leave half-initialised modules behind
    import torchvision
    return torchvision
