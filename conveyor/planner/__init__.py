"""Planner: cut points, parallelism, link structure and replicas for a cluster.

``balance`` is the exact chain partition (docs/partition.md).
"""

from conveyor.planner.partition import Split, balance, brute_force

__all__ = ["Split", "balance", "brute_force"]
