"""Cost models: what each layer costs on each device (time, DSP/BRAM/LUT/FF, bytes moved).

Every figure is *modeled* from the formulas in docs/cost-model.md, except a `Profile`,
which is *measured* on the machine that ran `conveyor profile`.
"""

from conveyor.cost.fpga import LayerOption, Resources, board_budget, dataflow_options, overlay_layer_seconds
from conveyor.cost.host import roofline_seconds
from conveyor.cost.profile import Profile, profile_graph
from conveyor.cost.work import LayerWork, layer_work

__all__ = [
    "LayerWork", "layer_work", "LayerOption", "Resources", "board_budget", "dataflow_options",
    "overlay_layer_seconds", "roofline_seconds", "Profile", "profile_graph",
]
