"""`hls4ml-name:<format>` against hls4ml 1.3.0's own C simulation.  A script, not a test:

    python benchmarks/hls4ml_name_check.py [--samples 2000]

For the MLP and the CNN of benchmarks/hls4ml_models.py at ap_fixed<16,6> and
ap_fixed<10,4,AP_RND,AP_SAT>: hls4ml converts the net with the granularity="name" config its
`config_from_pytorch_model` wrote (kept in tests/data/hls4ml_name_types.json), compiles and
predicts (io_parallel, through benchmarks/hls4ml_csim.py in hls4ml's own venv, as
benchmarks/numerics.py does); conveyor runs `precision="hls4ml-name:<format>"` (the CNN with
`order: hls4ml_io_parallel`). Prints how many output values differ (0 = bit for bit).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numerics as bench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--hls4ml-python", default=None, help="python of an existing hls4ml 1.3.0 venv")
    args = ap.parse_args(argv)
    import torch

    import hls4ml_models
    from conveyor.frontends.torch import from_torch

    name_configs = json.loads((ROOT / "tests" / "data" / "hls4ml_name_types.json").read_text())
    py = bench.hls4ml_python(args.hls4ml_python)
    bad_total = 0
    with tempfile.TemporaryDirectory(prefix="conveyor-hls4ml-name-") as tmp:
        for key, entry in sorted(name_configs.items()):
            model, precision = key.split(" ", 1)
            module = hls4ml_models.build(model, seed=0)
            shape = hls4ml_models.SHAPES[model][0]
            graph = from_torch(module, torch.zeros((1,) + shape))
            x = np.random.default_rng(1).standard_normal((args.samples,) + shape).astype(np.float32)
            work = Path(tmp) / key.replace(" ", "_").replace("<", "").replace(">", "").replace(",", "_")
            work.mkdir(parents=True)
            torch.save(module.state_dict(), work / "weights.pt")
            np.save(work / "x.npy", x)
            cfg = bench.hls4ml_config(model, None)
            cfg["Model"]["Precision"]["default"] = precision
            cfg["LayerName"] = entry["config"]
            hls = bench.run_hls4ml(py, model, work / "weights.pt", work / "x.npy", cfg, work / "run", 1)
            prec = {"default": "hls4ml-name:" + precision, "order": "hls4ml_io_parallel"}
            y = np.asarray(graph.run(x, precision=prec)[graph.output_names[0]], np.float64).reshape(len(x), -1)
            bad = int((y != hls["y"]).sum())
            bad_total += bad
            print(f"{model:4s} hls4ml-name:{precision:30s} {bad} of {y.size:,} output values differ "
                  f"(max |diff| {float(np.abs(y - hls['y']).max()):.3g})", flush=True)
    return 1 if bad_total else 0


if __name__ == "__main__":
    sys.exit(main())
