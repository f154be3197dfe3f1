"""PyTorch -> Graph, through torch's own ONNX export."""

from __future__ import annotations

import io
import warnings
from typing import Any

from conveyor.errors import ModelError


def from_torch(module: Any, example_input: Any, *, opset: int = 17, optimize: bool = True, name: str | None = None,
               exporter: str = "dynamo"):
    """Export `module` (in eval mode) with `example_input` to ONNX and import the result.

    `exporter="dynamo"` (the default) uses torch's torch.export-based exporter (opset >= 18)
    and falls back to the TorchScript exporter with a warning giving the reason;
    `exporter="torchscript"` uses the TorchScript exporter only.

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
    names = ["input"] if n_in == 1 else [f"input{i}" for i in range(n_in)]
    was_training = module.training
    module.eval()
    try:
        if exporter not in ("dynamo", "torchscript"):
            raise ModelError(f"from_torch: exporter={exporter!r}; accepted: 'dynamo', 'torchscript'")
        model = _export_dynamo(torch, module, args, names, opset) if exporter == "dynamo" else "exporter='torchscript'"
        if isinstance(model, str) and exporter == "torchscript":
            model = _export_torchscript(torch, onnx, module, args, names, opset)
        elif isinstance(model, str):  # the reason the dynamo exporter failed
            warnings.warn(f"from_torch: torch's dynamo exporter failed for {type(module).__name__} ({model}); "
                          "falling back to the TorchScript exporter", stacklevel=2)
            model = _export_torchscript(torch, onnx, module, args, names, opset)
    finally:
        module.train(was_training)
    return from_model(model, name=name or type(module).__name__, optimize=optimize, source=f"torch:{type(module).__name__}")


def _export_dynamo(torch, module, args, names, opset):
    """The ONNX model from torch.export (torch's recommended exporter; needs onnxscript),
    or the reason it failed, as a string."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, args, input_names=names, opset_version=max(opset, 18),
                                        dynamo=True, verbose=False)
        return program.model_proto
    except Exception as e:  # noqa: BLE001 - any failure falls back, with its reason shown
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def _export_torchscript(torch, onnx, module, args, names, opset):
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            # torch >= 2.9 warns that the TorchScript exporter is legacy.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(module, args, buf, opset_version=opset, input_names=names, dynamo=False)
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed for {type(module).__name__}: {type(e).__name__}: {e}") from e
    return onnx.load_from_string(buf.getvalue())
