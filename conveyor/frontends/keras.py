"""Keras 3 -> Graph: `.keras` / `.h5` files, through Keras' own ONNX export.

Keras runs on the backend named by KERAS_BACKEND; conveyor needs no TensorFlow: on the
torch backend (set here when nothing else is chosen) `Model.export(format="onnx")` goes
through torch's exporter. The graph's input shapes are the model's, batch 1.
"""

from __future__ import annotations

import os
import tempfile
from typing import Mapping, Sequence

from conveyor.errors import ModelError

KERAS_SUFFIXES = (".keras", ".h5")


def load_keras(path: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None, optimize: bool = True):
    os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ModelError(f"{path}: reading Keras models needs keras 3 (pip install 'conveyor[keras]')") from None
    import numpy as np
    import onnx

    from conveyor.frontends.onnx import from_model

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise ModelError(f"{path}: keras could not load it ({type(e).__name__}: {e})") from None
    shapes = [tuple(1 if d is None else int(d) for d in t.shape) for t in model.inputs]
    # Keras' ONNX export needs a model that has been called once.
    model.predict([np.zeros(s, np.float32) for s in shapes] if len(shapes) > 1 else np.zeros(shapes[0], np.float32),
                  verbose=0)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "model.onnx")
        try:
            model.export(out, format="onnx", verbose=False)
        except Exception as e:
            raise ModelError(f"{path}: keras' ONNX export failed ({type(e).__name__}: {e}); "
                             f"backend {keras.backend.backend()}") from None
        proto = onnx.load(out)
    init = {t.name for t in proto.graph.initializer}
    names = [vi.name for vi in proto.graph.input if vi.name not in init]
    pinned = dict(zip(names, shapes))
    pinned.update(input_shapes or {})
    name = os.path.splitext(os.path.basename(path))[0]
    return from_model(proto, name=name, input_shapes=pinned, optimize=optimize, source=path)
