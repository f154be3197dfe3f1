"""The compiled 2-D pooling kernels of the float reference (conveyor.ops.pool_float, MaxPool's
and AveragePool's `prepare`) against the numpy kernels they replace (`OpDef.run`, themselves
checked against onnxruntime in test_ops_conv_pool_norm): the same values, on random window
configurations (strides, dilations, pads, ceil_mode, auto_pad, count_include_pad), batches,
float32/float64, NaNs and windows made only of padding."""

from __future__ import annotations

import numpy as np
import pytest

from conveyor.graph.tensor import Node
from conveyor.ops import pool_float, registry
from conveyor.ops.registry import ValueInfo
from tests.test_ops_conv_pool_norm import _random_pool_attrs

pytestmark = pytest.mark.skipif(not pool_float.available(), reason="needs numba")


def _both(op, x, attrs, opset=19):
    node = Node("n", op, ("x",), ("y",), dict(attrs), opset)
    opdef = registry.get(op)
    opdef.check(node)
    kernel = opdef.prepare(node, [ValueInfo(x.shape, x.dtype, None)])
    assert kernel is not None, attrs
    want = opdef.run(node, [x])[0]
    x0 = x.copy()
    got = kernel([x])[0]
    np.testing.assert_array_equal(x, x0)  # the input is not written into
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, attrs)
    return got, want


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool2d_random_configurations_equal_numpy(op):
    rng = np.random.default_rng(7 if op == "MaxPool" else 8)
    for i in range(150):
        attrs = _random_pool_attrs(rng, 2, op)
        attrs.pop("storage_order", None)
        dil = attrs.get("dilations", [1, 1])
        eff = [(k - 1) * d + 1 for k, d in zip(attrs["kernel_shape"], dil)]
        spatial = [int(rng.integers(e, max(e, 13) + 1)) for e in eff]
        dtype = np.float64 if i % 5 == 0 else np.float32
        x = rng.standard_normal([int(rng.integers(1, 3)), int(rng.integers(1, 5))] + spatial).astype(dtype)
        got, want = _both(op, x, attrs)
        # the same values (the numpy path adds the padding's zeros: only a zero's sign may differ)
        np.testing.assert_array_equal(got, want, err_msg=f"{op} {attrs} {x.shape}")


def test_maxpool_nan_and_all_padding_windows():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 3, 9, 10)).astype(np.float32)
    x[0, 1, 4, 4] = np.nan
    x[0, 2, :, 0] = -np.inf
    got, want = _both("MaxPool", x, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1})
    np.testing.assert_array_equal(got, want)
    assert np.isnan(got[0, 1]).any()
    # pads as large as the kernel: some windows read only padding (-inf, as the numpy path gives)
    got, want = _both("MaxPool", x, {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [2, 2, 2, 2]})
    np.testing.assert_array_equal(got, want)
    assert np.isneginf(got).any()


def test_avgpool_windows_with_nothing_to_count():
    x = np.random.default_rng(4).standard_normal((2, 2, 5, 6)).astype(np.float32)
    got, want = _both("AveragePool", x, {"kernel_shape": [2, 2], "strides": [3, 3], "pads": [2, 2, 2, 2]})
    np.testing.assert_array_equal(got, want)
    assert (got == 0).any()


def test_pool_prepare_declines_what_it_does_not_compute():
    x = ValueInfo((1, 2, 6, 6), np.dtype(np.float32), None)
    with_indices = Node("n", "MaxPool", ("x",), ("y", "i"), {"kernel_shape": [2, 2]}, 12)
    assert registry.get("MaxPool").prepare(with_indices, [x]) is None
    one_d = Node("n", "MaxPool", ("x",), ("y",), {"kernel_shape": [2]}, 12)
    assert registry.get("MaxPool").prepare(one_d, [ValueInfo((1, 2, 6), np.dtype(np.float32), None)]) is None
    ints = Node("n", "MaxPool", ("x",), ("y",), {"kernel_shape": [2, 2]}, 12)
    assert registry.get("MaxPool").prepare(ints, [ValueInfo((1, 2, 6, 6), np.dtype(np.int8), None)]) is None


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("pads", [[0, 0, 0, 0], [1, 1, 1, 1]])
def test_pool_of_a_read_only_input(op, pads):
    """A read-only input (a feed, a weight) is read, never written: padded or not."""
    x = np.random.default_rng(5).standard_normal((1, 3, 6, 7)).astype(np.float32)
    x.flags.writeable = False
    got, want = _both(op, x, {"kernel_shape": [3, 3], "strides": [2, 2], "pads": pads})
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_bit_accurate_pool_takes_the_compiled_plan_with_the_same_bits(op):
    """The emulator's MaxPool/AveragePool (`run_fixed`) run the compiled plan, made once per
    node and shape, on float64 grid values: the numpy kernel's bits, result cast and all."""
    from conveyor.ops import pool

    rng = np.random.default_rng(9)
    for i in range(40):
        attrs = _random_pool_attrs(rng, 2, op)
        attrs.pop("storage_order", None)
        node = Node(f"n{i}", op, ("x",), ("y",), dict(attrs), 19)
        opdef = registry.get(op)
        opdef.check(node)
        shape = (1, int(rng.integers(1, 4)), int(rng.integers(6, 12)), int(rng.integers(6, 12)))
        x = np.round(rng.standard_normal(shape) * 4 * 256) / 256  # values of ap_fixed<12,4>
        want = opdef.run(node, [x])[0]
        pool._FIXED_POOLS.clear()
        got = pool._prepared_run(pool._maxpool_run if op == "MaxPool" else pool._avgpool_run)(node, [x])[0]
        assert next(iter(pool._FIXED_POOLS.values()))[1] is not None, attrs  # the compiled plan ran
        np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64), err_msg=str(attrs))
