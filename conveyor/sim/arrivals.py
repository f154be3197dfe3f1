"""Request arrival times: constant rate, Poisson, or a given list (array or CSV file)."""

from __future__ import annotations

import os

import numpy as np

from conveyor.errors import ConveyorError


def arrival_times(kind, rate: float | None, requests: int, seed: int | None = None) -> np.ndarray:
    """Sorted arrival times (s) of `requests` requests. `kind`: "constant" (every 1/rate s),
    "poisson" (exponential gaps of mean 1/rate), an array of times, or a CSV file of times
    (one a line, or the first column; a header line is skipped)."""
    if isinstance(kind, (str, os.PathLike)) and str(kind) in ("constant", "poisson"):
        if rate is None or not rate > 0:
            raise ConveyorError(f"arrivals '{kind}' need a rate > 0 requests/s, got {rate!r}")
        if requests < 1:
            raise ConveyorError(f"requests must be >= 1, got {requests}")
        if str(kind) == "constant":
            return np.arange(requests, dtype=np.float64) / rate
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, requests)
        return np.cumsum(gaps) - gaps[0]
    if isinstance(kind, (str, os.PathLike)):
        path = os.fspath(kind)
        if not os.path.exists(path):
            raise ConveyorError(f"arrivals {path!r}: not 'constant', 'poisson' or an existing CSV file of times (s)")
        try:
            times = np.genfromtxt(path, delimiter=",", usecols=0, skip_header=0, invalid_raise=False)
        except ValueError as e:
            raise ConveyorError(f"arrivals {path}: unreadable CSV ({e})") from None
        times = np.atleast_1d(times)
        times = times[~np.isnan(times)]  # a header line reads as NaN
    else:
        times = np.asarray(kind, dtype=np.float64).ravel()
        path = "arrivals"
    if times.size == 0 or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        raise ConveyorError(f"{path}: arrival times must be finite, non-decreasing seconds (found {times.size} values)")
    return times[:requests] if requests and requests < times.size else times
