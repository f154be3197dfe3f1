"""The exact chain partition (``conveyor.partition.balance``); lives in ``conveyor.planner``."""

from conveyor.planner.partition import Split, balance, brute_force, count_splits

__all__ = ["Split", "balance", "brute_force", "count_splits"]
