"""The `csim` backend: one FPGA stage runs the HLS C++ that `conveyor compile` writes for it,
built with g++ (cached by content hash) — the code that would be synthesized, behind the
Device interface, so `Pipeline(plan, graph, backends={"fpga0": "csim"})` executes it."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np

from conveyor.runtime.device import Device


class CsimDevice(Device):
    backend = "csim"

    def _load(self, spec) -> None:
        from conveyor.codegen.board import write_board
        from conveyor.codegen.csim import build_board
        from conveyor.plan import StagePlan

        self._dir = Path(tempfile.mkdtemp(prefix=f"conveyor-csim-{spec.device}-"))
        stage = StagePlan(device=spec.device, device_kind="fpga", arch="dataflow",
                          layers=tuple(n.name for n in spec.graph.nodes), parallelism=spec.parallelism)
        self._board = write_board(spec, stage, spec.device, self._dir / spec.device, link_in="host", link_out="host",
                                  part="", clock_hz=200e6, host_interface="csim",
                                  host_forwards=True)
        self._exe, _, _ = build_board(self._dir / spec.device)
        self._shapes = {t: spec.graph.tensors[t].shape for t in spec.forwards if t in spec.graph.tensors}

    def _run(self, inputs):
        from conveyor.codegen.csim import run_board

        env = {k: np.asarray(v, np.float64).reshape(1, -1) for k, v in inputs.items()}
        out = run_board(self._exe, self._board, env, self._dir / self.spec.device / "firmware" / "weights")
        passed = {k: v for k, v in inputs.items() if k not in out}  # forwarded untouched values keep theirs
        return {**passed, **{k: v.reshape(self._shapes.get(k, v.shape)) for k, v in out.items()}}

    def close(self) -> None:
        shutil.rmtree(getattr(self, "_dir", ""), ignore_errors=True)
        super().close()
