"""Child of benchmarks/numerics.py: hls4ml 1.3.0's C simulation of the zoo's jet-mlp.

Runs inside the benchmark's own virtual environment (hls4ml==1.3.0, torch), never in
conveyor's; it imports neither conveyor nor anything of this repository.

    python hls4ml_jet.py JOB.npz HLS_CONFIG.json OUT.npz PROJECT_DIR

JOB.npz holds the float32 weights of the four dense layers as the zoo stores them
(`W_<name>` [in, out], `b_<name>` [out], names fc1 fc2 fc3 fc_out), the inputs `x`
[N, 16] float32 and `trace_rows` (how many leading samples to trace layer by layer).
HLS_CONFIG.json is hls4ml's `hls_config` (Model / LayerName / InputShape), written by
the parent with every precision and table setting explicit. The network is built in
torch (Linear weight = W.T), converted with `convert_from_pytorch_model` (Vivado
backend, io_parallel), compiled, and `predict()` runs all N samples (timed, best of
`repeats`). OUT.npz gets `y` (the outputs), `predict_s` (each timed run), `compile_s`,
`trace_<layer>` (layer outputs of the traced samples) and `types` (the C++ typedefs
hls4ml wrote, for the record).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections import OrderedDict

import numpy as np

LAYERS = [("fc1", 16, 64), ("fc2", 64, 32), ("fc3", 32, 32), ("fc_out", 32, 5)]


def build_torch(job):
    import torch

    mods = OrderedDict()
    for i, (name, n_in, n_out) in enumerate(LAYERS):
        lin = torch.nn.Linear(n_in, n_out)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(job[f"W_{name}"].T)))
            lin.bias.copy_(torch.from_numpy(job[f"b_{name}"]))
        mods[name] = lin
        if name != "fc_out":
            mods[f"relu{i + 1}"] = torch.nn.ReLU()
    mods["softmax"] = torch.nn.Softmax(dim=1)
    return torch.nn.Sequential(mods).eval()


def written_types(prj: str) -> str:
    """The typedefs of defines.h and the typedefs inside parameters.h's layer configs."""
    out = []
    for fn in ("defines.h", "parameters.h"):
        path = os.path.join(prj, "firmware", fn)
        with open(path) as f:
            text = f.read()
        out += [ln.strip() for ln in text.splitlines()
                if re.match(r"\s*typedef ", ln) or "table_size" in ln or "implementation =" in ln]
    return "\n".join(out)


def main(argv):
    job_path, cfg_path, out_path, prj = argv[1:5]
    repeats = int(argv[5]) if len(argv) > 5 else 3
    import hls4ml

    job = dict(np.load(job_path))
    with open(cfg_path) as f:
        hls_config = json.load(f)
    model = build_torch(job)
    hls_config["PytorchModel"] = model
    hls_model = hls4ml.converters.convert_from_pytorch_model(
        model, hls_config=hls_config, output_dir=prj, backend="Vivado", io_type="io_parallel")
    t0 = time.perf_counter()
    hls_model.compile()
    compile_s = time.perf_counter() - t0

    x = np.ascontiguousarray(job["x"], dtype=np.float32)
    hls_model.predict(x[:100])  # warm-up: loads the library
    times, y = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        y = hls_model.predict(x)
        times.append(time.perf_counter() - t0)
    out = {"y": np.asarray(y, dtype=np.float64), "predict_s": np.array(times), "compile_s": np.array(compile_s),
           "hls4ml_version": np.array(hls4ml.__version__), "types": np.array(written_types(prj))}
    n_trace = int(job.get("trace_rows", 0))
    if n_trace:
        _, trace = hls_model.trace(x[:n_trace])
        for name, values in trace.items():
            out[f"trace_{name}"] = np.asarray(values, dtype=np.float64).reshape(n_trace, -1)
    np.savez(out_path, **out)


if __name__ == "__main__":
    main(sys.argv)
