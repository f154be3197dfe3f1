"""The gpu backend: onnxruntime's CUDA provider on a stage's sub-graph. Runs only where a
GPU is present; elsewhere it is skipped, saying why."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import conveyor
from conveyor.hardware import Cluster
from conveyor.runtime import Pipeline

HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_gpu_backend_refuses_clearly_without_a_gpu():
    if HAS_CUDA:
        pytest.skip("this machine has a GPU: the refusal path cannot be exercised")
    g = conveyor.zoo.build("jet-mlp")
    plan = conveyor.plan(g, Cluster.uniform("zcu102", 1, link="aurora-10g"))
    with pytest.raises(conveyor.RuntimeFault, match="needs a GPU"):
        with Pipeline(plan, g, executor="local", backends={plan.stages[0].device: "gpu"}) as p:
            p.submit(np.zeros((1, 16), np.float32)).result(timeout=60)


@pytest.mark.skipif(not HAS_CUDA, reason="no GPU here: onnxruntime has no CUDAExecutionProvider")
def test_gpu_stage_matches_float_reference():
    g = conveyor.zoo.build("digits-cnn")
    plan = conveyor.plan(g, Cluster.uniform("zcu102", 1, link="aurora-10g"))
    x = np.random.default_rng(0).standard_normal(g.inputs[0].shape).astype(np.float32)
    with Pipeline(plan, g, executor="local", backends={plan.stages[0].device: "gpu"}) as p:
        y = p.submit(x).result(timeout=120)
    np.testing.assert_allclose(y["output"], g.run(x)["output"], rtol=1e-4, atol=1e-5)
