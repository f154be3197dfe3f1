"""Validated loading of sample arrays for `quantize --data` and `run --inputs`: every bad file
becomes one ConveyorError naming the file and what is accepted (never numpy's pickle path)."""

from __future__ import annotations

import os

from conveyor.errors import ConveyorError

ACCEPTED = "digits, a .npy of samples (axis 0), or an .npz with arrays x (and labels y)"


def load_array_file(path: str, option: str):
    """(x, y or None) from a .npy or .npz file, with allow_pickle off."""
    import numpy as np

    if not os.path.exists(path):
        raise ConveyorError(f"{option} {path}: no such file; accepted: {ACCEPTED}")
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle, which could run code: refused
        raise ConveyorError(f"{option} {path}: not a numeric array file ({' '.join(str(e).split()[:8])}...); "
                            f"accepted: {ACCEPTED}") from None
    except (OSError, EOFError) as e:
        raise ConveyorError(f"{option} {path}: cannot read it as .npy/.npz ({e}); accepted: {ACCEPTED}") from None
    if isinstance(data, np.ndarray):
        x, y = data, None
    else:
        with data as f:
            if "x" not in f:
                raise ConveyorError(f"{option} {path}: no array 'x' in it (found {list(f.keys())}); "
                                    "expected x and optionally y")
            x, y = f["x"], (f["y"] if "y" in f else None)
    if x.dtype.kind not in "biuf":
        raise ConveyorError(f"{option} {path}: dtype {x.dtype}; accepted: a numeric array")
    return x, y


def sample_shape(shape: tuple) -> tuple:
    """One sample of a graph input: the input less its batch axis of 1 ([1, 3, 32, 32] -> [3, 32, 32]);
    an input whose leading axis is not 1 (a sequence [16, 1, 32]) is one whole sample."""
    shape = tuple(int(d) for d in shape)
    return shape[1:] if shape and shape[0] == 1 else shape


def check_sample_shape(x, shape: tuple, option: str, source: str, model: str):
    """x reshaped to (N, *shape[1:]) or a ConveyorError naming both shapes."""
    import numpy as np

    x = np.asarray(x)
    want = sample_shape(shape)
    per = int(np.prod(want)) if want else 1
    if x.ndim == 0 or x[0].size != per:
        got = x.shape if x.ndim else ()
        raise ConveyorError(f"{option} {source}: samples of shape {tuple(got[1:])} (array {tuple(got)}); "
                            f"{model} takes samples of shape {want} (array (N, {', '.join(map(str, want))}))")
    return x.reshape((x.shape[0],) + want)


def parse_backends(specs, plan) -> dict[str, str]:
    """`--backend` values to {device: backend}. DEVICE=BACKEND for one device; a bare BACKEND for
    every stage it can run: `cpu`/`gpu` every host (CPU/GPU) stage (`cpu`: a GPU-host plan on a
    machine without a GPU), `emulator`/`csim` every FPGA stage (csim: the generated HLS C++)."""
    from conveyor.runtime.device import BACKENDS

    devices = {d: st for st in plan.stages for d in (st.device, *st.replicas)}
    out: dict[str, str] = {}
    for spec in specs:
        device, sep, backend = spec.rpartition("=")
        if backend not in BACKENDS:
            raise ConveyorError(f"--backend {spec}: unknown backend '{backend}'; accepted: {', '.join(BACKENDS)} "
                                "(as BACKEND for every stage it runs, or DEVICE=BACKEND)")
        if not sep:
            kinds = ("cpu", "gpu") if backend in ("cpu", "gpu") else ("fpga",)
            chosen = [d for d, st in devices.items() if st.device_kind in kinds]
            if not chosen:
                what = "host (CPU/GPU)" if kinds != ("fpga",) else "FPGA"
                raise ConveyorError(f"--backend {spec}: the plan has no {what} stage; "
                                    f"name a device: DEVICE={backend} with DEVICE one of {', '.join(devices)}")
            out.update({d: backend for d in chosen})
        elif device not in devices:
            raise ConveyorError(f"--backend {spec}: the plan has no stage on '{device}'; "
                                f"its stage devices: {', '.join(devices)}")
        else:
            out[device] = backend
    return out
