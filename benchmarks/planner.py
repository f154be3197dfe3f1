"""Planning time against the number of layers and boards, as ratios to the issue's targets.
A script, not a test:

    python benchmarks/planner.py [--boards 2 4 8] [--torchvision]

1. The exact chain partition (conveyor.partition.balance) on 10,000 layers x 64 boards,
   stage and merged links: target 0.1 s.
2. The joint planner (`conveyor.plan`, throughput objective, weights may stream from DDR)
   on the zoo models on ZCU102 chains and, with --torchvision, the issue's networks on its
   clusters: ResNet-50, MobileNetV2, DenseNet-121 (64 px) on 8 ZCU102, EfficientNet-B0 (64 px)
   on 4 Alveo U250, VGG-11 and the full AlexNet (224 px, their adaptive pooling needs it) on
   8 ZCU102: target 2 s for a 400-node DAG on 8 boards, printed as the ratio of the measured
   time to it (export time not included).
Wall and CPU time are both printed: on a shared machine the wall time includes waiting.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import conveyor  # noqa: E402
from conveyor import PlanError  # noqa: E402
from conveyor.hardware import Cluster  # noqa: E402
from conveyor.partition import balance  # noqa: E402

CHAIN_TARGET_S = 0.1   # 10,000 layers x 64 boards
DAG_TARGET_S = 2.0     # a 400-node DAG on 8 boards


def _timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def chain_table():
    rng = np.random.default_rng(2024)
    m, k = 10_000, 64
    costs, links = rng.random(m) * 10, rng.random(m - 1) * 5
    print(f"== chain partition: {m:,} layers x {k} boards (target {CHAIN_TARGET_S} s) ==")
    print(f"{'links':7} {'wall (s)':>9} {'/target':>8} {'cpu (s)':>8}")
    for mode in ("stage", "merged"):
        _, wall, cpu = _timed(lambda: balance(costs, k, link_costs=links, link_mode=mode))
        print(f"{mode:7} {wall:9.3f} {wall / CHAIN_TARGET_S:8.2f} {cpu:8.3f}")


def _torchvision_models():
    import torch

    from conveyor.frontends.torchvision_compat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    for name, size, board, k in (("resnet50", 64, "zcu102", 8), ("mobilenet_v2", 64, "zcu102", 8),
                                 ("densenet121", 64, "zcu102", 8), ("efficientnet_b0", 64, "alveo-u250", 4),
                                 ("vgg11", 224, "zcu102", 8), ("alexnet", 224, "zcu102", 8)):
        g = conveyor.from_torch(getattr(tv.models, name)(), torch.randn(1, 3, size, size), name=name,
                                exporter="torchscript")
        yield name, g, [(board, k)]


def joint_table(boards, torchvision: bool):
    models = [(n, conveyor.zoo.build(n), [("zcu102", k) for k in boards])
              for n in ("jet-mlp", "digits-cnn", "alexnet-conv", "resnet18")]
    if torchvision:
        models += list(_torchvision_models())
    print(f"\n== joint planner at ap_fixed<16,6> (target {DAG_TARGET_S} s for 400 nodes x 8 boards) ==")
    print(f"{'model':16} {'nodes':>6} {'boards':>14} {'wall (s)':>9} {'/target':>8} {'cpu (s)':>8} {'/target':>8}  result")
    for name, g, clusters in models:
        for board, k in clusters:
            link = "aurora-10g" if board == "zcu102" else "eth-100g"
            cluster = Cluster.uniform(board, k, link=link)
            try:
                p, wall, cpu = _timed(lambda: conveyor.plan(g, cluster, precision="ap_fixed<16,6>"))
                streamed = sum(1 for s in p.stages for w in s.weights_in.values() if w != "on_chip")
                result = f"interval {p.interval_s:.3g} s, {streamed} layers streamed"
            except PlanError as e:
                wall = cpu = float("nan")
                result = f"no plan: {str(e)[:60]}"
            print(f"{name:16} {len(g.nodes):6} {f'{k} x {board}':>14} {wall:9.3f} {wall / DAG_TARGET_S:8.2f} "
                  f"{cpu:8.3f} {cpu / DAG_TARGET_S:8.2f}  {result}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--torchvision", action="store_true", help="also the torchvision networks (slow to export)")
    args = ap.parse_args(argv)
    chain_table()
    joint_table(args.boards, args.torchvision)


if __name__ == "__main__":
    main()
