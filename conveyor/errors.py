"""One error family for the whole flow.

A message names what is at fault (file, node, field, value) and what would be
accepted; the CLI prints it on one line and exits non-zero.
"""


class ConveyorError(Exception):
    """Base of every error conveyor raises on purpose."""


class ModelError(ConveyorError):
    """The model (file, graph, node, attribute or feed) cannot be used as given."""


class PrecisionError(ConveyorError):
    """A number format or precision config is malformed or cannot be applied."""


class HardwareSpecError(ConveyorError):
    """A hardware catalog entry or cluster file is malformed."""


class PlanError(ConveyorError):
    """No plan satisfies the constraints, or a plan file is malformed."""


class RuntimeFault(ConveyorError):
    """A pipeline stage failed and could not be recovered."""


class CodegenError(ConveyorError):
    """A plan cannot be turned into HLS C++ (unsupported op or format), or its C simulation failed."""
