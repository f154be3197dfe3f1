"""Frontends: ONNX files and PyTorch modules into the graph IR."""
