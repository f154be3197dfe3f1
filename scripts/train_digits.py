"""Train the zoo's digits CNN on scikit-learn's 8x8 digits and write it as ONNX.

    python scripts/train_digits.py [--epochs 60] [--seed 0]

Writes conveyor/zoo/digits_cnn.onnx (static 1x1x8x8 `input` -> 1x10 logits `output`,
opset 17) and conveyor/zoo/digits_cnn.json (test accuracy, split, epochs, seed), and
prints the test accuracy. The split comes from `conveyor.zoo.digits` so that
`conveyor.zoo.digits_dataset("test")` reproduces it exactly without torch.
Needs torch (CPU is plenty: the run takes a few seconds).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from conveyor.zoo.builders import IR_VERSION, OPSET, PRODUCER  # noqa: E402
from conveyor.zoo.digits import JSON_PATH, ONNX_PATH, SPLIT, digits_dataset  # noqa: E402


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(16 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))      # 8x4x4
        x = self.pool(torch.relu(self.conv2(x)))      # 16x2x2
        return self.fc(torch.flatten(x, 1))


def train(epochs: int, seed: int, batch: int, lr: float, logit_penalty: float) -> tuple[DigitsCNN, float]:
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a tiny net: one thread is fastest and reproducible
    torch.use_deterministic_algorithms(True)
    x_train, y_train = digits_dataset("train")
    x_test, y_test = digits_dataset("test")
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            logits = model(xt[idx])
            # The model is deployed in fixed point (ap_fixed<16,6> holds [-32, 32)): a small
            # penalty on the logits' size keeps them in range without changing the argmax.
            loss = nn.functional.cross_entropy(logits, yt[idx]) + logit_penalty * logits.pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.from_numpy(x_test)).argmax(1).numpy()
    return model, float((pred == y_test).mean())


def export(model: DigitsCNN) -> onnx.ModelProto:
    """Export with the TorchScript exporter, then give tensors and nodes clean names."""
    buf = io.BytesIO()
    torch.onnx.export(model, (torch.zeros(1, 1, 8, 8),), buf, input_names=["input"], output_names=["output"],
                      opset_version=OPSET, dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buf.getvalue())
    g = proto.graph
    rename: dict[str, str] = {}
    counts: dict[str, int] = {}
    short = {"Relu": "relu", "MaxPool": "pool", "Flatten": "flatten"}
    for node in g.node:
        if node.op_type in ("Conv", "Gemm"):      # "/conv1/Conv" -> "conv1" (the torch module name)
            new = node.name.strip("/").split("/")[0]
        else:                                     # "/Relu_1" -> "relu2", "/pool_1/MaxPool" -> "pool2"
            base = short.get(node.op_type, node.op_type.lower())
            counts[base] = counts.get(base, 0) + 1
            new = base if base == "flatten" else f"{base}{counts[base]}"
        node.name = new
        for i, out in enumerate(node.output):
            if out != "output":
                rename[out] = new if i == 0 else f"{new}.{i}"
                node.output[i] = rename[out]
        for i, inp in enumerate(node.input):
            node.input[i] = rename.get(inp, inp)
        node.ClearField("doc_string")
    for vi in list(g.value_info):
        g.value_info.remove(vi)
    proto.producer_name, proto.producer_version = PRODUCER, ""
    proto.doc_string = "small CNN trained on scikit-learn load_digits (scripts/train_digits.py)"
    g.name = "digits-cnn"
    proto.ir_version = IR_VERSION
    onnx.checker.check_model(proto, full_check=True)
    return proto


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--logit-penalty", type=float, default=0.01)
    args = ap.parse_args()

    model, acc = train(args.epochs, args.seed, args.batch, args.lr, args.logit_penalty)
    proto = export(model)

    # The exported graph must compute what torch computes.
    x_test, y_test = digits_dataset("test")
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        onnx_pred = np.array([sess.run(None, {"input": x[None]})[0].argmax() for x in x_test])
        onnx_acc = float((onnx_pred == y_test).mean())
        if onnx_acc != acc:
            raise SystemExit(f"exported model disagrees with torch: accuracy {onnx_acc} vs {acc}")
    except ImportError:
        pass

    ONNX_PATH.write_bytes(proto.SerializeToString())
    record = {
        "model": "digits-cnn",
        "test_accuracy": acc,
        "test_samples": int(len(y_test)),
        "dataset": "sklearn.datasets.load_digits, pixels / 16",
        "split": {"function": "sklearn.model_selection.train_test_split", **SPLIT},
        "epochs": args.epochs,
        "batch": args.batch,
        "optimizer": f"Adam lr={args.lr}, cosine schedule",
        "logit_penalty": args.logit_penalty,
        "seed": args.seed,
        "torch": torch.__version__,
        "params": int(sum(p.numel() for p in model.parameters())),
    }
    JSON_PATH.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {ONNX_PATH.relative_to(ROOT)} ({ONNX_PATH.stat().st_size} bytes)")
    print(acc)


if __name__ == "__main__":
    main()
