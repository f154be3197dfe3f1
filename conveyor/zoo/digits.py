"""The digits CNN: trained on scikit-learn's 8x8 `load_digits` by scripts/train_digits.py.

The trained model ships as `digits_cnn.onnx`, its accuracy and training record as
`digits_cnn.json`. The split is defined here once, so that the training script and
`digits_dataset` see exactly the same test images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx

from conveyor.errors import ModelError

HERE = Path(__file__).resolve().parent
ONNX_PATH = HERE / "digits_cnn.onnx"
JSON_PATH = HERE / "digits_cnn.json"

#: parameters of sklearn.model_selection.train_test_split (stratified on the labels)
SPLIT = {"test_size": 0.2, "random_state": 0, "stratify": True}


def digits_dataset(split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """Return (x float32 [N,1,8,8] in [0,1], y int64 [N]) for split "train", "test" or "all"."""
    if split not in ("train", "test", "all"):
        raise ModelError(f"digits_dataset: unknown split {split!r}; expected 'train', 'test' or 'all'")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:  # pragma: no cover - scikit-learn is a test dependency
        raise ModelError("digits_dataset needs scikit-learn: pip install 'conveyor[data]'") from exc
    data = load_digits()
    x = (data.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = data.target.astype(np.int64)
    if split == "all":
        return x, y
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=SPLIT["test_size"], random_state=SPLIT["random_state"],
        stratify=y if SPLIT["stratify"] else None)
    return (x_train, y_train) if split == "train" else (x_test, y_test)


def digits_cnn() -> onnx.ModelProto:
    """Load the trained digits CNN (1x1x8x8 `input` -> 1x10 logits `output`)."""
    if not ONNX_PATH.exists():
        raise ModelError(f"{ONNX_PATH} is missing; run scripts/train_digits.py to train and write it")
    return onnx.load(str(ONNX_PATH))


def digits_record() -> dict:
    """The training record (accuracy, split, epochs, seed) written next to the model."""
    if not JSON_PATH.exists():
        raise ModelError(f"{JSON_PATH} is missing; run scripts/train_digits.py to train and write it")
    return json.loads(JSON_PATH.read_text())
