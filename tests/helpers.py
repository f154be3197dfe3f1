"""Small builders shared by tests: ONNX models from a few lines, onnxruntime reference."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset=17, name="t"):
    """inputs/outputs: lists of (name, shape) float32; initializers: dict name -> array."""
    g = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(initializers).items()],
    )
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def ort_run(model: onnx.ModelProto, feeds: dict) -> dict:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


#: float32's unit roundoff, 2^-24 (IEEE 754 binary32: 24-bit significand)
U32 = 2.0 ** -24
#: how many standard deviations of the expected difference a test allows
SIGMAS = 6.0


def float32_tolerance(graph) -> float:
    """Relative tolerance (to the output's RMS) for comparing conveyor's float reference with
    another float32 implementation (onnxruntime, torch, Keras) of `graph`.

    Both sum every dot product in float32, in different orders (MLAS and OpenBLAS blocks, FMAs).
    A float32 sum of K products of random sign, each partial sum rounded (unit roundoff u), errs
    by about u * sqrt(sum_j s_j^2) ~ u * K * rms(term) / sqrt(2), i.e. u * sqrt(K / 2) times
    the sum's typical size sqrt(K) * rms(term). Two such sums differ by sqrt(2) times that,
    u * sqrt(K), and L layers add their errors (re-scaled to each layer's size) independently:
    u * sqrt(L * K), with K the longest dot product (MACs per output) and L the layers with MACs.
    `SIGMAS` covers the largest of many outputs. (docs/numerics.md "Conv, the float reference":
    the decision, and the measured distances, 1-11 % of this bound on the zoo.)"""
    from conveyor.graph.counters import layer_counters

    ks = [c.macs / max(1, int(np.prod(c.output_shape))) for c in layer_counters(graph) if c.macs]
    k = max(ks, default=1.0)
    return SIGMAS * float(np.sqrt(max(1, len(ks)) * k)) * U32


def assert_float32_close(got, ref, graph, err_msg=""):
    """`got` and `ref`, two float32 evaluations of `graph`, differ by float32 accumulation only:
    |got - ref| <= tol * (|ref| + rms(ref)), tol = float32_tolerance(graph)."""
    ref = np.asarray(ref, dtype=np.float64)
    tol = float32_tolerance(graph)
    scale = float(np.sqrt(np.mean(ref ** 2))) if ref.size else 0.0
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale, err_msg=err_msg)


def csim_equals_emulator(out_dir, graph, p, x, **compile_args):
    """`conveyor compile` the plan, run every board's g++ C simulation in pipeline order on x
    (items on axis 0) and require each board's outputs and every model output to equal the
    emulator's (`graph.run(x, precision=p.precision)`) bit for bit; returns (manifest, model
    outputs, board runs)."""
    from conveyor.codegen import compile as compile_plan
    from conveyor.codegen.csim import compare, run_chain

    manifest = compile_plan(p, graph, out_dir, **compile_args)
    feeds = {graph.input_names[0]: x}
    env, runs = run_chain(out_dir, feeds)
    bad = compare(graph, p.precision, feeds, runs)
    assert bad is None, str(bad)
    want = graph.with_batch(len(x)).run(x.reshape((len(x), *graph.inputs[0].shape[1:])), precision=p.precision)
    for out in graph.output_names:
        np.testing.assert_array_equal(env[out], np.asarray(want[out], np.float64).reshape(len(x), -1), err_msg=out)
    return manifest, env, runs
