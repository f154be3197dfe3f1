"""Hardware catalog (FPGA parts, boards, hosts, links) and `Cluster`.

All figures come from datasheets and standards (modeled), not from measurements;
each catalog entry names its source.  See docs/hardware.md.
"""

from conveyor.hardware.catalog import Catalog, catalog, catalog_rows, load_catalog
from conveyor.hardware.cluster import TOPOLOGIES, Cluster, Connection, Device
from conveyor.hardware.specs import Board, FpgaPart, Host, Link

__all__ = [
    "Board",
    "Catalog",
    "Cluster",
    "Connection",
    "Device",
    "FpgaPart",
    "Host",
    "Link",
    "TOPOLOGIES",
    "catalog",
    "catalog_rows",
    "load_catalog",
]
