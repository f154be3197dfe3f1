"""Convolutional zoo models: AlexNet (conv part), VGG16 (conv part), ResNet-18."""

from __future__ import annotations

import onnx

from conveyor.zoo.builders import Builder


def alexnet_conv(seed: int = 1, size: int = 227) -> onnx.ModelProto:
    """The five conv layers of Caffe's bvlc_alexnet on 1x3x227x227 -> 1x256x6x6, no FC layers.
    `size`: another square input (>= 67: 1x256x1x1), the same layers and weights.

    conv1: 96 kernels 11x11x3 stride 4 -> 55x55 (105,415,200 MACs); conv2/4/5 use group 2
    as the original two-GPU split did. LRN(size 5, alpha 1e-4, beta 0.75, bias 1) after
    relu1 and relu2, as in bvlc_alexnet (conv, relu, norm, pool).
    """
    b = Builder("alexnet-conv", seed)
    x = b.input("input", (1, 3, size, size))
    out = (((size - 11) // 4 + 1 - 3) // 2 + 1 - 3) // 2 + 1          # conv1, pool1, pool2 (the rest keep it)
    out = (out - 3) // 2 + 1                                           # pool5
    if out < 1:
        raise ValueError(f"alexnet-conv: input size {size} is below 67, the least that reaches pool5")
    lrn = dict(size=5, alpha=1e-4, beta=0.75, bias=1.0)

    x = b.relu(b.conv(x, "conv1", 3, 96, 11, stride=4), "relu1")
    x = b.op("LRN", [x], "norm1", **lrn)
    x = b.maxpool(x, "pool1", 3, 2)                                      # 96x27x27
    x = b.relu(b.conv(x, "conv2", 96, 256, 5, pad=2, group=2), "relu2")
    x = b.op("LRN", [x], "norm2", **lrn)
    x = b.maxpool(x, "pool2", 3, 2)                                      # 256x13x13
    x = b.relu(b.conv(x, "conv3", 256, 384, 3, pad=1), "relu3")
    x = b.relu(b.conv(x, "conv4", 384, 384, 3, pad=1, group=2), "relu4")
    x = b.relu(b.conv(x, "conv5", 384, 256, 3, pad=1, group=2), "relu5")
    b.maxpool(x, "pool5", 3, 2, out="output")                            # 256x6x6
    return b.model({"output": (1, 256, out, out)},
                   doc="AlexNet conv layers (Caffe bvlc_alexnet geometry), seeded weights")


_VGG16 = [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]


def vgg16_conv(seed: int = 2, size: int = 224) -> onnx.ModelProto:
    """The 13 conv layers (3x3 pad 1) + ReLU and the 5 max-pools of VGG16: 1x3x224x224 -> 1x512x7x7.
    `size`: another square input, a multiple of 32 (32: 1x512x1x1), the same layers and weights."""
    if size < 32 or size % 32:
        raise ValueError(f"vgg16-conv: input size {size} is not a positive multiple of 32 (5 stride-2 pools)")
    b = Builder("vgg16-conv", seed)
    x = b.input("input", (1, 3, size, size))
    cin = 3
    for block, (cout, reps) in enumerate(_VGG16, start=1):
        for i in range(1, reps + 1):
            x = b.conv(x, f"conv{block}_{i}", cin, cout, 3, pad=1)
            x = b.relu(x, f"relu{block}_{i}")
            cin = cout
        x = b.maxpool(x, f"pool{block}", 2, 2, out="output" if block == len(_VGG16) else None)
    return b.model({"output": (1, 512, size // 32, size // 32)}, doc="VGG16 conv layers, seeded weights")


def _basic_block(b: Builder, x: str, name: str, cin: int, cout: int, stride: int) -> str:
    """conv3x3-BN-ReLU-conv3x3-BN, plus identity or 1x1-stride-2 conv+BN shortcut, Add, ReLU."""
    y = b.conv(x, f"{name}.conv1", cin, cout, 3, stride=stride, pad=1, bias=False)
    y = b.relu(b.batchnorm(y, f"{name}.bn1", cout), f"{name}.relu1")
    y = b.conv(y, f"{name}.conv2", cout, cout, 3, pad=1, bias=False)
    # A smaller scale on the branch's last BN keeps the residual stream from doubling
    # its variance at every block (as "zero-init residual" training tends to leave it).
    y = b.batchnorm(y, f"{name}.bn2", cout, gamma=(0.2, 0.5))
    if stride != 1 or cin != cout:
        s = b.conv(x, f"{name}.downsample.conv", cin, cout, 1, stride=stride, bias=False)
        x = b.batchnorm(s, f"{name}.downsample.bn", cout)
    y = b.op("Add", [y, x], f"{name}.add")
    return b.relu(y, f"{name}.relu2")


def resnet18(seed: int = 3, size: int = 224) -> onnx.ModelProto:
    """ResNet-18 (torchvision layout) with explicit BatchNormalization after every conv,
    residual Adds incl. 1x1 stride-2 downsample branches, GlobalAveragePool, Flatten,
    Gemm 512->1000 on 1x3x224x224. `size`: another square input, a multiple of 32 (32: the
    last block on 1x1), the same layers and weights (the GlobalAveragePool makes it fit)."""
    if size < 32 or size % 32:
        raise ValueError(f"resnet18: input size {size} is not a positive multiple of 32 (stride 32 overall)")
    b = Builder("resnet18", seed)
    x = b.input("input", (1, 3, size, size))
    x = b.conv(x, "conv1", 3, 64, 7, stride=2, pad=3, bias=False)
    x = b.relu(b.batchnorm(x, "bn1", 64), "relu")
    x = b.maxpool(x, "maxpool", 3, 2, pad=1)                             # 64x56x56
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512), start=1):
        for i in range(2):
            stride = 2 if (stage > 1 and i == 0) else 1
            x = _basic_block(b, x, f"layer{stage}.{i}", cin, cout, stride)
            cin = cout
    x = b.op("GlobalAveragePool", [x], "avgpool")
    x = b.op("Flatten", [x], "flatten", axis=1)
    b.gemm(x, "fc", 512, 1000, out="output")
    return b.model({"output": (1, 1000)}, doc="ResNet-18 with BatchNormalization, seeded weights")
