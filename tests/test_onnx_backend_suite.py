"""The ONNX backend node test suite, run through Graph.run.

The installed `onnx` package carries the backend node cases (the generators in
`onnx.backend.test.case.node`, from which `onnx/backend/test/data/node/*` is written);
we collect them in memory, plus the PyTorch-converted and -operator cases it ships as
files. Every case whose ops are all supported runs and must match the expected outputs
within the suite's own tolerances. A case that conveyor declines explicitly (a
ModelError: an attribute value or mode it does not implement) is counted and listed,
not failed. The test fails if any supported op has no passing case where the suite
has one.
"""

from __future__ import annotations

import collections
import glob
import os
import warnings

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import conveyor
from conveyor import ops
from conveyor.errors import ModelError

# Ops conveyor adds that are not ONNX ops, hence have no suite case.
CONVEYOR_ONLY = {"Dense"}


def _collect_generated():
    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for c in cases:
        yield c.name, c.model, [([_array(a) for a in i], [_array(a) for a in o]) for i, o in c.data_sets or []], c.rtol, c.atol


def _array(a):
    # Some cases (Cast's) carry their data as TensorProtos.
    return numpy_helper.to_array(a) if isinstance(a, onnx.TensorProto) else a


def _collect_files():
    root = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    for kind in ("pytorch-converted", "pytorch-operator", "node"):
        for d in sorted(glob.glob(os.path.join(root, kind, "test_*"))):
            model = onnx.load(os.path.join(d, "model.onnx"))
            sets = []
            for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):
                ins = [numpy_helper.to_array(_read_pb(p)) for p in sorted(glob.glob(os.path.join(ds, "input_*.pb")), key=_pb_index)]
                outs = [numpy_helper.to_array(_read_pb(p)) for p in sorted(glob.glob(os.path.join(ds, "output_*.pb")), key=_pb_index)]
                sets.append((ins, outs))
            yield f"{kind}/{os.path.basename(d)}", model, sets, 1e-3, 1e-7


def _pb_index(path):
    return int(os.path.basename(path).split("_")[1].split(".")[0])


def _read_pb(path):
    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return t


def _ops_of(model):
    return {n.op_type for n in model.graph.node if n.domain in ("", "ai.onnx")} - {"Constant"}, \
        any(n.domain not in ("", "ai.onnx") for n in model.graph.node)


def _run_case(model, data_sets, rtol, atol, optimize, pin_integer_inputs):
    # The suite's inputs are positional over the model's non-initializer inputs.
    init = {t.name for t in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in init]
    for ins, outs in data_sets:
        feeds = dict(zip(names, ins))
        # Shape-setting inputs (a Reshape's shape, Pad's pads) are fixed in a deployed
        # model; the suite feeds them at run time, so pin them as constants.
        # So are a Resize's scales and roi: 1-D float inputs that feed no node's first slot.
        first = {n.input[0] for n in model.graph.node if n.input}
        pinned = {k: v for k, v in feeds.items()
                  if pin_integer_inputs and (v.dtype.kind in "iu" or (v.ndim == 1 and k not in first))}
        graph = conveyor.from_model(model, optimize=optimize, source="suite", constants=pinned)
        got = graph.run({k: v for k, v in feeds.items() if k not in pinned})
        for expected, name in zip(outs, [o.name for o in model.graph.output]):
            actual = got[name]
            assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
            assert graph.tensors[name].shape == expected.shape, "inferred shape disagrees"
            if expected.dtype == object or expected.dtype.kind in "biu":
                np.testing.assert_array_equal(actual, expected, err_msg=name)
            else:
                np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=name)


def test_onnx_backend_cases():
    supported = set(ops.supported_ops())
    ran = passed = 0
    declined: list[str] = []
    failures: list[str] = []
    passing_ops: collections.Counter = collections.Counter()
    suite_ops: set[str] = set()
    for name, model, data_sets, rtol, atol in list(_collect_generated()) + list(_collect_files()):
        op_types, foreign = _ops_of(model)
        suite_ops |= op_types
        if foreign or not op_types or not op_types <= supported or not data_sets:
            continue
        if any(vi.type.WhichOneof("value") != "tensor_type" for vi in list(model.graph.input) + list(model.graph.output)):
            continue
        ran += 1
        try:
            for optimize in (False, True):
                try:
                    _run_case(model, data_sets, rtol, atol, optimize, pin_integer_inputs=False)
                except ModelError as e:
                    if "must be a constant" not in str(e):
                        raise
                    _run_case(model, data_sets, rtol, atol, optimize, pin_integer_inputs=True)
        except ModelError as e:
            declined.append(f"{name}: {e}")
            continue
        except Exception as e:  # noqa: BLE001 - every other failure is reported below
            failures.append(f"{name}: {type(e).__name__}: {str(e)[:300]}")
            continue
        passed += 1
        passing_ops.update(op_types)
    print(f"\nONNX backend suite: {ran} cases with only supported ops; {passed} passed, "
          f"{len(declined)} declined (ModelError), {len(failures)} failed")
    for d in declined:
        print("  declined:", d[:200])
    for f in failures:
        print("  FAILED:", f)
    without_pass = sorted((supported - CONVEYOR_ONLY) & suite_ops - set(passing_ops))
    assert not failures, f"{len(failures)} suite cases failed:\n" + "\n".join(failures)
    assert not without_pass, f"supported ops with no passing suite case: {without_pass}"
    assert passed >= 50
