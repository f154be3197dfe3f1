"""A fault-injecting backend for exercising executors: the `faulty` backend runs the stage
like `cpu` (onnxruntime, float) but, driven by environment variables in the stage
process (the local executor's `env=` option sets them there):

- `CONVEYOR_FAULT_DELAY_S`: sleep this long in every run (a slow stage);
- `CONVEYOR_FAULT_RAISE`: raise `RuntimeError` when the first element of the first input
  equals this number (a kernel error on one request);
- `CONVEYOR_FAULT_CRASH`: end the process at once (`os._exit(13)`) on that value;
- `CONVEYOR_FAULT_CRASH_AFTER`: end the process at once when it has run this many requests;
- `CONVEYOR_FAULT_MARKER`: a file path; a crash creates it, and while it exists every load
  fails (a stage that cannot come back).

Importing this module registers the backend (`conveyor.runtime.device.BACKENDS["faulty"]`);
the local executor hands registered backends to its stage processes.
"""

from __future__ import annotations

import os
import time

import numpy as np

from conveyor.errors import RuntimeFault
from conveyor.runtime.device import BACKENDS, CpuDevice


class FaultyDevice(CpuDevice):
    backend = "faulty"

    def _load(self, spec) -> None:
        marker = os.environ.get("CONVEYOR_FAULT_MARKER")
        if marker and os.path.exists(marker):
            raise RuntimeFault(f"stage {spec.index}: injected load failure ({marker} exists)")
        super()._load(spec)
        self._delay = float(os.environ.get("CONVEYOR_FAULT_DELAY_S", "0") or 0)
        self._raise = _number(os.environ.get("CONVEYOR_FAULT_RAISE"))
        self._crash = _number(os.environ.get("CONVEYOR_FAULT_CRASH"))
        self._crash_after = _number(os.environ.get("CONVEYOR_FAULT_CRASH_AFTER"))

    def _run(self, inputs):
        first = float(np.asarray(next(iter(inputs.values()))).flat[0])
        if (self._crash is not None and first == self._crash) or \
                (self._crash_after is not None and self.runs >= self._crash_after):
            marker = os.environ.get("CONVEYOR_FAULT_MARKER")
            if marker:
                open(marker, "w").close()
            os._exit(13)
        if self._raise is not None and first == self._raise:
            raise RuntimeError(f"injected kernel error on input {first:g}")
        if self._delay:
            time.sleep(self._delay)
        return super()._run(inputs)


def _number(text):
    return None if text in (None, "") else float(text)


BACKENDS.setdefault("faulty", FaultyDevice)
