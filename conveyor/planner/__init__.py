"""Planner: cut points, parallelism, link structure and replicas for a cluster.

``plan`` is the joint planner (docs/cost-model.md); ``balance`` is the exact chain
partition (docs/partition.md).
"""

from conveyor.planner.make_plan import OBJECTIVES, plan
from conveyor.planner.partition import Split, balance, brute_force

__all__ = ["Split", "balance", "brute_force", "plan", "OBJECTIVES"]
