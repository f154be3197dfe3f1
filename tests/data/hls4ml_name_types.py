"""Writes tests/data/hls4ml_name_types.json: the types hls4ml 1.3.0 resolves for the MLP and
the CNN of benchmarks/hls4ml_models.py under `config_from_pytorch_model(granularity="name",
default_precision=P)` (every type attribute without a default 'auto', inferred by the
InferPrecisionTypes optimizer pass during conversion). Read by tests/test_numerics_hls4ml_name.py.

Runs in hls4ml's own venv (the one benchmarks/numerics.py builds), not conveyor's:

    ~/.cache/conveyor/bench-hls4ml-venv/bin/python tests/data/hls4ml_name_types.py

Conversion only (no compile): a few seconds.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "benchmarks"))

import hls4ml_models  # noqa: E402

PRECISIONS = ("ap_fixed<16,6>", "ap_fixed<10,4,AP_RND,AP_SAT>")


def resolved(name: str, precision: str) -> dict:
    import hls4ml

    model = hls4ml_models.build(name, for_hls4ml=True)
    shape = tuple(hls4ml_models.SHAPES[name][0])
    cfg = hls4ml.utils.config_from_pytorch_model(model, shape, granularity="name", default_precision=precision,
                                                  backend="Vivado")
    with tempfile.TemporaryDirectory() as prj:
        hm = hls4ml.converters.convert_from_pytorch_model(model, hls_config=cfg, output_dir=prj,
                                                          backend="Vivado", io_type="io_parallel")
    layers = {}
    for layer in hm.get_layers():
        layers[layer.name] = {"class": layer.class_name,
                              "types": {k: str(v.precision) for k, v in sorted(layer.types.items())}}
    return {"hls4ml_version": hls4ml.__version__, "config": cfg["LayerName"], "layers": layers}


def main():
    out = {f"{name} {p}": resolved(name, p) for name in ("mlp", "cnn") for p in PRECISIONS}
    with open(os.path.join(HERE, "hls4ml_name_types.json"), "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
