"""PyTorch -> Graph, through torch's own ONNX export."""

from __future__ import annotations

import io
import warnings
from typing import Any

from conveyor.errors import ModelError


def from_torch(module: Any, example_input: Any, *, opset: int = 17, optimize: bool = True, name: str | None = None):
    """Export `module` (in eval mode) with `example_input` to ONNX and import the result.

    `example_input` is a tensor or a tuple of tensors; its shapes become the graph's
    static input shapes.
    """
    try:
        import torch
    except ImportError:
        raise ModelError(
            "from_torch needs PyTorch, which is not installed; install it with "
            "pip install 'conveyor[torch]' (or export to ONNX yourself and use conveyor.load)"
        ) from None
    import onnx

    from conveyor.frontends.onnx import from_model

    if not isinstance(module, torch.nn.Module):
        raise ModelError(f"from_torch takes a torch.nn.Module, got {type(module).__name__}")
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    n_in = len(args)
    buf = io.BytesIO()
    was_training = module.training
    module.eval()
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 warns that the TorchScript exporter is legacy; it is still the
            # one that needs no extra packages (the dynamo exporter needs onnxscript).
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, args, buf,
                opset_version=opset,
                input_names=["input"] if n_in == 1 else [f"input{i}" for i in range(n_in)],
                dynamo=False,
            )
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed for {type(module).__name__}: {type(e).__name__}: {e}") from e
    finally:
        module.train(was_training)
    model = onnx.load_from_string(buf.getvalue())
    return from_model(model, name=name or type(module).__name__, optimize=optimize, source=f"torch:{type(module).__name__}")
