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
        model = program.model_proto
    except Exception as e:  # noqa: BLE001 - any failure falls back, with its reason shown
        return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
    _name_nodes_by_module(model)
    return model


def _name_nodes_by_module(model) -> None:
    """Name each node after the module that made it, as the TorchScript exporter does
    (`/fc1/Gemm`), from the dynamo exporter's name-scope metadata: the dynamo exporter's own
    names (`node_linear_1`) say nothing a user recognises, and layer names derive from these."""
    import ast

    taken: set[str] = set()
    for node in model.graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            path = [s for s in ast.literal_eval(scopes)[1:-1] if s] if scopes else []
        except (ValueError, SyntaxError):
            path = []
        if not path:
            continue
        base = "/" + "/".join(path) + "/" + node.op_type
        name, k = base, 0
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        node.name = name


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
