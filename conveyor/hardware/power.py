"""The power coefficients of conveyor/hardware/power.yaml (modeled; sources in the file)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import yaml

from conveyor.errors import HardwareSpecError

POWER_FILE = os.path.join(os.path.dirname(__file__), "power.yaml")


FIGURES = ("static_w", "dsp_w_per_mhz", "bram18k_w_per_mhz", "lut_w_per_mhz")


@dataclass(frozen=True)
class FamilyPower:
    static_w: float
    dsp_w_per_mhz: float
    bram18k_w_per_mhz: float
    lut_w_per_mhz: float
    assumed: tuple[str, ...] = ()   # figures no public source gives (power.yaml, docs/simulate.md)

    def board_w(self, resources, clock_hz: float, activity: float) -> float:
        """Static plus dynamic power of a board using `resources` at `clock_hz`, its
        pipeline busy `activity` (0..1) of the time."""
        mhz = clock_hz / 1e6
        dynamic = mhz * (resources.get("dsp", 0) * self.dsp_w_per_mhz
                         + resources.get("bram18k", 0) * self.bram18k_w_per_mhz
                         + resources.get("lut", 0) * self.lut_w_per_mhz)
        return self.static_w + activity * dynamic


@lru_cache(maxsize=None)
def load_power(path: str = POWER_FILE) -> tuple[dict[str, FamilyPower], dict[str, float]]:
    """(FPGA family -> coefficients, link name -> watts per transceiver module)."""
    with open(path) as f:
        data = yaml.safe_load(f)
    families = {}
    try:
        for name, d in data["families"].items():
            assumed = tuple(d.get("assumed", ()))
            unknown = sorted(set(d) - set(FIGURES) - {"assumed"}) + sorted(set(assumed) - set(FIGURES))
            if unknown:
                raise ValueError(f"family {name}: unknown field(s) {', '.join(map(str, unknown))}")
            families[name] = FamilyPower(**{k: float(d[k]) for k in FIGURES}, assumed=assumed)
        links = {name: float(d["module_w"]) for name, d in data.get("links", {}).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise HardwareSpecError(f"{path}: malformed power coefficients ({e}); expected families.<family>."
                                "{static_w,dsp_w_per_mhz,bram18k_w_per_mhz,lut_w_per_mhz} and an optional "
                                "assumed: [those figures]") from None
    return families, links
