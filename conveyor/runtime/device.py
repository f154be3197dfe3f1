"""The Device interface: one API over every place a stage can run, in the spirit of the
FPGA-as-a-Service proposal — open, load (program the stage; weights stay resident),
write the inputs, run, read the outputs, close, and info/health — so that the pipeline
never knows which vendor or backend is underneath.

Backends:
- `emulator`: the bit-accurate kernels (`Graph.run(..., precision=...)`); the default for
  FPGA stages until a board is attached;
- `cpu`: onnxruntime on the stage's sub-graph, float;
- `gpu`: onnxruntime's CUDA provider (torch is not needed); only where a GPU is present;
- `csim`: the HLS C++ of `conveyor compile`, C-simulated with g++ (runtime/csim_device.py).
A new backend (HLS C simulation, PYNQ, XRT) subclasses `Device` and registers itself;
docs/runtime.md lists what it must implement.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from typing import Mapping

import numpy as np

from conveyor.errors import RuntimeFault
from conveyor.runtime.stages import StageSpec


class Device(ABC):
    """A place that runs one stage. Not thread-safe: one worker owns one device."""

    backend: str = "?"

    def __init__(self) -> None:
        self.spec: StageSpec | None = None
        self._inputs: dict[str, np.ndarray] = {}
        self._outputs: dict[str, np.ndarray] = {}
        self.runs = 0
        self.busy_s = 0.0

    # -- lifecycle ---------------------------------------------------------------------
    def open(self) -> "Device":
        return self

    def load(self, spec: StageSpec) -> None:
        """Program the stage: build whatever runs it; weights stay resident until close()."""
        self.spec = spec
        self._load(spec)

    def close(self) -> None:
        self.spec = None

    # -- data path ---------------------------------------------------------------------
    def write(self, inputs: Mapping[str, np.ndarray]) -> None:
        self._inputs = dict(inputs)

    def run(self) -> None:
        if self.spec is None:
            raise RuntimeFault(f"{self.backend} device: run() before load()")
        t0 = time.perf_counter()
        self._outputs = self._run(self._inputs)
        self.busy_s += time.perf_counter() - t0
        self.runs += 1

    def read(self) -> dict[str, np.ndarray]:
        return self._outputs

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """write + run + read."""
        self.write(inputs)
        self.run()
        return self.read()

    # -- management --------------------------------------------------------------------
    def info(self) -> dict:
        return {"backend": self.backend, "stage": None if self.spec is None else self.spec.index,
                "device": None if self.spec is None else self.spec.device, "runs": self.runs, "busy_s": self.busy_s}

    def health(self) -> bool:
        return self.spec is not None

    # -- what a backend implements -----------------------------------------------------
    @abstractmethod
    def _load(self, spec: StageSpec) -> None: ...

    @abstractmethod
    def _run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class EmulatorDevice(Device):
    """Bit-accurate emulation of an FPGA stage: the stage's sub-graph under the plan's
    precision, its inputs taken in the formats their producers gave them."""

    backend = "emulator"

    def _load(self, spec: StageSpec) -> None:
        from conveyor.graph.quantized import Emulator

        self._emulator = Emulator(spec.graph, spec.precision, input_formats=spec.input_formats)

    def _run(self, inputs):
        return self._emulator.run(inputs)[0]


class CpuDevice(Device):
    """onnxruntime on the stage's sub-graph (float)."""

    backend = "cpu"
    providers = ("CPUExecutionProvider",)

    def _load(self, spec: StageSpec) -> None:
        import onnxruntime as ort

        from conveyor.frontends.export import to_onnx

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        self._session = ort.InferenceSession(to_onnx(spec.graph).SerializeToString(), so, providers=list(self.providers))
        self._names = [o.name for o in self._session.get_outputs()]
        self._dtypes = {t.name: t.dtype for t in spec.graph.inputs}

    def _run(self, inputs):
        feeds = {k: np.asarray(v, dtype=self._dtypes[k]) for k, v in inputs.items()}
        return dict(zip(self._names, self._session.run(self._names, feeds)))


class GpuDevice(CpuDevice):
    """onnxruntime's CUDA execution provider on the stage's sub-graph (float)."""

    backend = "gpu"
    providers = ("CUDAExecutionProvider",)

    def _load(self, spec: StageSpec) -> None:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise RuntimeFault(f"stage {spec.index} on '{spec.device}' needs a GPU: onnxruntime here has no "
                               "CUDAExecutionProvider; run it on the CPU (conveyor run --backend cpu, or "
                               f"backends={{'{spec.device}': 'cpu'}}) or install onnxruntime-gpu where there is a GPU")
        super()._load(spec)


BACKENDS: dict[str, type[Device]] = {"emulator": EmulatorDevice, "cpu": CpuDevice, "gpu": GpuDevice}

from conveyor.runtime.csim_device import CsimDevice  # noqa: E402  (it subclasses Device)

BACKENDS["csim"] = CsimDevice


def open_device(spec: StageSpec) -> Device:
    try:
        cls = BACKENDS[spec.backend]
    except KeyError:
        raise RuntimeFault(f"stage {spec.index}: unknown backend '{spec.backend}'; known: {', '.join(BACKENDS)}") from None
    device = cls().open()
    device.load(spec)
    return device
