"""Speed on real models (issue 9, item 6): conveyor's float reference (`Graph.run`) and its
bit-accurate emulation (`Graph.run(precision=...)`, exact accumulators) against onnxruntime,
printed side by side as ratios.

torchvision architectures with random weights go through `conveyor.from_torch` (the dynamo
exporter); onnxruntime runs the ONNX conveyor writes back (`conveyor.frontends.export.to_onnx`)
with the CPU provider, spinning off (`session.intra_op.allow_spinning = 0`) and the same number of
threads numpy's BLAS may use (`--threads`, default 1; set OMP_NUM_THREADS / OPENBLAS_NUM_THREADS
to match before numpy loads: this script sets them from --threads). Each figure is the median of
`--repeat` runs after one warm-up. Targets (issue 9): float <= 2x onnxruntime, emulation <= 3x.

    python benchmarks/real_models.py [--size 64] [--repeat 5] [--models mobilenet_v2,efficientnet_b0]
"""

from __future__ import annotations

import argparse
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input height and width (pixels)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="resnet18,resnet50,mobilenet_v2,efficientnet_b0,densenet121,mobilenet_v3_small")
    ap.add_argument("--precision", default="ap_fixed<18,8,AP_RND_CONV>")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import statistics
    import time
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import conveyor
    from conveyor.frontends.export import to_onnx
    from conveyor.frontends.torchvision_compat import import_torchvision

    torch.set_num_threads(args.threads)
    tv = import_torchvision()

    def timed(fn):
        fn()
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    print(f"input 1x3x{args.size}x{args.size}, {args.threads} thread(s), median of {args.repeat}; "
          f"emulation at {args.precision} (accum auto: exact)")
    print(f"{'model':<20}{'ort ms':>9}{'float ms':>10}{'float/ort':>11}{'emul ms':>10}{'emul/ort':>10}")
    for arch in args.models.split(","):
        torch.manual_seed(0)
        model = getattr(tv.models, arch)(weights=None, num_classes=10).eval()
        x = np.random.default_rng(0).standard_normal((1, 3, args.size, args.size)).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = conveyor.from_torch(model, torch.from_numpy(x))
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(to_onnx(g).SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {g.input_names[0]: x}
        t_ort = timed(lambda: sess.run(None, feed))
        t_float = timed(lambda: g.run(x))
        try:
            t_emu = timed(lambda: g.run(x, precision=args.precision))
            emu = f"{t_emu * 1e3:>10.1f}{t_emu / t_ort:>9.1f}x"
        except conveyor.ConveyorError as e:  # e.g. an op without a fixed-point kernel yet
            emu = f"{'-':>10}{'-':>10}  ({type(e).__name__}: {str(e)[:60]})"
        print(f"{arch:<20}{t_ort * 1e3:>9.1f}{t_float * 1e3:>10.1f}{t_float / t_ort:>10.1f}x{emu}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
