"""Child of benchmarks/numerics.py: hls4ml 1.3.0's C simulation of one benchmark network.

Runs inside the benchmark's own virtual environment (hls4ml==1.3.0, torch), never in
conveyor's; it imports nothing of conveyor (only benchmarks/hls4ml_models.py, plain torch).

    python hls4ml_csim.py MODEL WEIGHTS.pt X.npy HLS_CONFIG.json OUT.npz PROJECT_DIR [REPEATS]

MODEL is mlp | cnn | lstm (hls4ml_models.py), WEIGHTS.pt its state_dict, X.npy the inputs
[N, *sample shape] float32, HLS_CONFIG.json hls4ml's hls_config (Model / LayerName), which the
parent writes. The module is converted with `convert_from_pytorch_model` (Vivado backend,
io_parallel), compiled, and `predict()` runs all N samples, timed REPEATS times. OUT.npz gets
`y` (outputs), `predict_s` (each timed run), `compile_s` and `types` (the C++ typedefs and
table sizes hls4ml wrote, for the record).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import hls4ml_models  # noqa: E402


def written_types(prj: str) -> str:
    out = []
    for fn in ("defines.h", "parameters.h"):
        with open(os.path.join(prj, "firmware", fn)) as f:
            text = f.read()
        out += [ln.strip() for ln in text.splitlines()
                if re.match(r"\s*typedef ", ln) or "table_size" in ln or "implementation =" in ln]
    return "\n".join(out)


def main(argv):
    name, weights, x_path, cfg_path, out_path, prj = argv[1:7]
    repeats = int(argv[7]) if len(argv) > 7 else 3
    import hls4ml
    import torch

    model = hls4ml_models.build(name, for_hls4ml=True)
    model.load_state_dict(torch.load(weights))
    with open(cfg_path) as f:
        hls_config = json.load(f)
    shape = hls4ml_models.SHAPES[name][0]
    hls_config["InputShape"] = [list(shape)]
    hls_model = hls4ml.converters.convert_from_pytorch_model(
        model, hls_config=hls_config, output_dir=prj, backend="Vivado", io_type="io_parallel")
    t0 = time.perf_counter()
    hls_model.compile()
    compile_s = time.perf_counter() - t0

    x = np.ascontiguousarray(np.load(x_path), dtype=np.float32)
    hls_model.predict(x[:20])  # warm-up: loads the library
    times, y = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = hls_model.predict(x)
        times.append(time.perf_counter() - t0)
    np.savez(out_path, y=np.asarray(y, dtype=np.float64).reshape(len(x), -1), predict_s=np.array(times),
             compile_s=np.array(compile_s), hls4ml_version=np.array(hls4ml.__version__),
             types=np.array(written_types(prj)))


if __name__ == "__main__":
    main(sys.argv)
