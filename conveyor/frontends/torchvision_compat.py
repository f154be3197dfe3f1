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


def randomise_batchnorm(model, seed: int = 0):
    """Give every batch norm of a torch `model` random statistics and affine parameters (in
    place; returns the model), so that activations stay O(1) through 50-120 layers of an
    untrained net. With torchvision's fresh running stats some nets' outputs shrink to 1e-17:
    any accuracy check passes, and float32 kernels crawl through subnormal numbers."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                m.bias.copy_(torch.randn(n, generator=g) * 0.1)
    return model
