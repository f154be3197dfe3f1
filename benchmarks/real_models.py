"""Speed on real models (issue 9, item 6): conveyor's float reference (`Graph.run`) and its
bit-accurate emulation (`Graph.run(precision=...)`, exact accumulators) against onnxruntime,
printed side by side as ratios.

Models: torchvision architectures with random weights and randomised batch-norm statistics
(`randomise_batchnorm`: with fresh running stats some nets' activations shrink towards 1e-17,
and subnormal floats slow every float32 kernel, onnxruntime's too), and torch sequence models
(an LSTM classifier, a transformer encoder), all through `conveyor.from_torch` (the dynamo
exporter). onnxruntime runs the ONNX conveyor writes back (`conveyor.frontends.export.to_onnx`)
with the CPU provider.

Fairness: both sides get the same number of threads (`--threads`, default 1: numpy's BLAS through
OMP/OPENBLAS/MKL_NUM_THREADS, set before numpy loads; onnxruntime's intra-op pool, inter-op 1),
and onnxruntime's idle threads do not spin (`session.intra_op.allow_spinning = 0`: spinning
threads slow numpy beside them in the same process). The two are timed alternately, run for run,
so that load from other processes hits both alike; each figure is the best of `--repeat` runs
after one warm-up (`--median`: medians). With one thread the clock is the process's CPU time
(`time.process_time`; both run on the calling thread): on a shared machine wall time also counts
the slices other processes take, which a 40 ms run suffers and a 1 ms run mostly escapes, biasing
the ratio; `--wall` (and any --threads > 1) times wall clock. Targets (issue 9): float <= 2x
onnxruntime, emulation <= 3x.

BLAS: numpy's OpenBLAS kernels follow OPENBLAS_CORETYPE when it is set (this project's machines
set Haswell: AVX2) while onnxruntime's MLAS picks AVX-512 on an AVX-512 CPU; `--blas-coretype
SkylakeX` gives numpy's OpenBLAS its AVX-512 kernels too. The header prints what numpy uses.

    python benchmarks/real_models.py [--size 64] [--repeat 9] [--models mobilenet_v2,lstm] [--no-emulation]
"""

from __future__ import annotations

import argparse
import os
import sys

TORCHVISION = ("resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "densenet121",
               "shufflenet_v2_x1_0", "squeezenet1_0")
SEQUENCE = ("lstm", "transformer")


def _sequence_model(name, torch):
    """(module, input) of a torch sequence model: an LSTM classifier over 32 steps of 16 features,
    or a 2-layer transformer encoder (d_model 64, 4 heads, GELU) over 32 tokens."""
    if name == "lstm":
        class LSTMClassifier(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.lstm = torch.nn.LSTM(16, 64, batch_first=True)
                self.fc = torch.nn.Linear(64, 10)

            def forward(self, x):
                return self.fc(self.lstm(x)[0][:, -1])

        return LSTMClassifier(), (1, 32, 16)
    layer = torch.nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128, batch_first=True,
                                             activation="gelu")
    return torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False), (1, 32, 64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64, help="input height and width of the image models (pixels)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default=",".join(TORCHVISION + SEQUENCE))
    ap.add_argument("--precision", default="ap_fixed<18,8,AP_RND_CONV>")
    ap.add_argument("--no-emulation", action="store_true", help="time the float reference only")
    ap.add_argument("--median", action="store_true", help="print medians instead of best runs")
    ap.add_argument("--wall", action="store_true", help="time wall clock, not CPU time (always with --threads > 1)")
    ap.add_argument("--blas-coretype", default=None, metavar="NAME",
                    help="set OPENBLAS_CORETYPE=NAME for numpy's OpenBLAS (e.g. SkylakeX: its AVX-512 kernels, "
                         "as onnxruntime's MLAS uses on an AVX-512 CPU); default: the environment's")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    # OpenBLAS reads OPENBLAS_CORETYPE when it loads (before numpy is imported). On this project's
    # machines the environment pins it to Haswell (AVX2): half the float32 GEMM rate of the
    # SkylakeX (AVX-512) kernels on its AVX-512 CPU (measured: 54 against 97 GMAC/s), which
    # onnxruntime's MLAS uses whatever the variable says.
    if args.blas_coretype:
        os.environ["OPENBLAS_CORETYPE"] = args.blas_coretype
    import statistics
    import time
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import conveyor
    from conveyor.frontends.export import to_onnx
    from conveyor.frontends.torchvision_compat import import_torchvision, randomise_batchnorm
    from conveyor.ops import intdot

    torch.set_num_threads(args.threads)
    tv = import_torchvision()
    pick = statistics.median if args.median else min
    cpu = args.threads == 1 and not args.wall
    clock = time.process_time if cpu else time.perf_counter

    def timed(*fns):
        """Per function, the best (or median) of `repeat` runs, the functions taking turns."""
        for fn in fns:
            fn()
        times = [[] for _ in fns]
        for _ in range(args.repeat):
            for fn, ts in zip(fns, times):
                t = clock()
                fn()
                ts.append(clock() - t)
        return [pick(ts) for ts in times]

    from threadpoolctl import threadpool_info

    blas = ", ".join(f"{i['internal_api']} {i.get('architecture', '?')}" for i in threadpool_info()
                     if i.get("user_api") == "blas") or "?"
    print(f"numpy BLAS: {blas} (OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', 'unset')})")
    print(f"images 1x3x{args.size}x{args.size}, {args.threads} thread(s), {'CPU' if cpu else 'wall'} time, "
          f"{'median' if args.median else 'best'} of {args.repeat}, numba {'on' if intdot.available() else 'off'}; "
          f"emulation at {args.precision} (accum auto: exact)")
    print(f"{'model':<20}{'ort ms':>9}{'float ms':>10}{'float/ort':>11}{'emul ms':>10}{'emul/ort':>10}")
    for arch in args.models.split(","):
        torch.manual_seed(0)
        if arch in SEQUENCE:
            model, shape = _sequence_model(arch, torch)
        else:
            model = randomise_batchnorm(getattr(tv.models, arch)(weights=None, num_classes=10))
            shape = (1, 3, args.size, args.size)
        model = model.eval()
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            g = conveyor.from_torch(model, torch.from_numpy(x))
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        sess = ort.InferenceSession(to_onnx(g).SerializeToString(), so, providers=["CPUExecutionProvider"])
        feed = {g.input_names[0]: x}
        t_ort, t_float = timed(lambda: sess.run(None, feed), lambda: g.run(x))
        emu = ""
        if not args.no_emulation:
            try:
                t_emu, = timed(lambda: g.run(x, precision=args.precision))
                emu = f"{t_emu * 1e3:>10.1f}{t_emu / t_ort:>9.1f}x"
            except conveyor.ConveyorError as e:  # e.g. an op without a fixed-point kernel yet
                emu = f"{'-':>10}{'-':>10}  ({type(e).__name__}: {str(e)[:60]})"
        print(f"{arch:<20}{t_ort * 1e3:>9.2f}{t_float * 1e3:>10.2f}{t_float / t_ort:>10.1f}x{emu}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
