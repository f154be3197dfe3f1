"""Cluster: building, loading, links, round trip, and cluster-file errors with file, line and field."""

import json

import pytest
import yaml

from conveyor.errors import HardwareSpecError
from conveyor.hardware import TOPOLOGIES, Cluster, catalog

EXAMPLE = """\
name: alexnet-4x
topology: chain          # chain | ring | switch
link: srio-10g           # default link between neighbours
devices:
  - {name: fpga0, board: zynq7035}
  - {name: fpga1, board: zynq7035, clock_hz: 200.0e+6}
  - {name: host, host: xeon-gold-6248}
links:                   # optional overrides
  - {between: [fpga1, host], link: pcie3-x16}
"""


def write(tmp_path, text, name="cluster.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("topology, n_links", [("chain", 3), ("ring", 4), ("switch", 6)])
def test_uniform_topologies(topology, n_links):
    c = Cluster.uniform("zynq7035", 4, topology=topology)
    assert c.names == ("fpga0", "fpga1", "fpga2", "fpga3") and len(c) == 4
    assert c.topology == topology and len(c.links) == n_links
    assert all(d.kind == "fpga" and d.board is catalog().board("zynq7035") for d in c.devices)
    assert c.link_between("fpga1", "fpga0") == catalog().link("srio-10g")
    if topology == "chain":
        assert c.neighbors("fpga0") == ("fpga1",)
    if topology == "ring":
        assert c.link_between("fpga3", "fpga0").name == "srio-10g"
    if topology == "switch":
        assert c.link_between("fpga0", "fpga3").name == "srio-10g"


def test_uniform_small_and_host_clusters():
    assert Cluster.uniform("alveo-u280", 1, link="eth-100g").links == ()
    assert len(Cluster.uniform("pynq-z2", 2, topology="ring").links) == 1
    gpus = Cluster.uniform("t4", 2, link="pcie3-x16")
    assert gpus.names == ("gpu0", "gpu1") and gpus.devices[0].host.kind == "gpu"
    with pytest.raises(HardwareSpecError, match="unknown board 'zynq7036'"):
        Cluster.uniform("zynq7036", 2)
    with pytest.raises(HardwareSpecError, match="k must be an integer >= 1"):
        Cluster.uniform("pynq-z2", 0)
    with pytest.raises(HardwareSpecError, match="topology.*accepted: chain, ring, switch"):
        Cluster.uniform("pynq-z2", 2, topology="mesh")


def test_link_between_errors():
    c = Cluster.uniform("zynq7035", 3)
    with pytest.raises(HardwareSpecError, match="no direct link between 'fpga0' and 'fpga2'"):
        c.link_between("fpga0", "fpga2")
    with pytest.raises(HardwareSpecError, match="unknown device 'fpga9'.*known devices: fpga0, fpga1, fpga2"):
        c.link_between("fpga0", "fpga9")
    with pytest.raises(HardwareSpecError, match="not an FPGA board|not a host"):
        c.device("fpga0").host


def test_load_heterogeneous_cluster_with_overrides(tmp_path):
    c = Cluster.load(write(tmp_path, EXAMPLE))
    assert c.name == "alexnet-4x" and c.topology == "chain"
    assert [d.kind for d in c.devices] == ["fpga", "fpga", "cpu"]
    assert c.device("fpga0").board.clock_hz == catalog().part("xc7z035").clock_hz
    assert c.device("fpga1").board.clock_hz == 200e6
    assert c.device("fpga1").base is catalog().board("zynq7035")
    assert c.device("host").host is catalog().host("xeon-gold-6248")
    assert c.link_between("fpga0", "fpga1").name == "srio-10g"
    assert c.link_between("host", "fpga1").name == "pcie3-x16"
    assert [d.name for d in c.fpgas] == ["fpga0", "fpga1"]


def test_links_can_add_edges_and_override_figures(tmp_path):
    text = EXAMPLE + "  - {between: [fpga0, host], link: eth-1g, latency_s: 1.0e-4}\n"
    c = Cluster.load(write(tmp_path, text))
    link = c.link_between("fpga0", "host")
    assert link.name == "eth-1g" and link.latency_s == 1e-4
    assert link.bandwidth_Bps == catalog().link("eth-1g").bandwidth_Bps


def test_round_trip_through_dict_json_and_yaml(tmp_path):
    text = EXAMPLE + "  - {between: [fpga0, host], link: eth-1g, bandwidth_Bps: 5.0e+7}\n"
    c = Cluster.load(write(tmp_path, text))
    d = c.to_dict()
    assert Cluster.from_dict(d) == c
    assert Cluster.from_dict(json.loads(json.dumps(d))) == c
    again = Cluster.load(write(tmp_path, yaml.safe_dump(d), "again.yaml"))
    assert again == c and again.to_dict() == d
    assert set(d["catalog"]) == {"parts", "links", "hosts", "boards"}
    for topology in TOPOLOGIES:
        u = Cluster.uniform("alveo-u250", 3, link="eth-100g", topology=topology)
        assert Cluster.from_dict(u.to_dict()) == u
        assert "links" not in u.to_dict()


def test_to_dict_keeps_its_figures(tmp_path):
    """A dict with an embedded catalog keeps its own figures (a Plan stays reproducible)."""
    d = Cluster.uniform("pynq-z2", 2).to_dict()
    d["catalog"]["boards"]["pynq-z2"]["dram_bandwidth_Bps"] = 1.0e9
    c = Cluster.from_dict(d)
    assert c.device("fpga0").board.dram_bandwidth_Bps == 1.0e9
    assert catalog().board("pynq-z2").dram_bandwidth_Bps == 2.1e9


def test_inline_catalog_defines_a_custom_board(tmp_path):
    text = """\
name: custom
devices:
  - {name: a, board: my-7035}
  - {name: b, board: my-7035}
catalog:
  boards:
    my-7035:
      part: xc7z035
      dram_bytes: 2147483648
      dram_bandwidth_Bps: 8.5e9
      host_interface: zynq-ps-axi
      source: my board manual
"""
    c = Cluster.load(write(tmp_path, text))
    assert c.device("a").board.dram_bytes == 2**31 and c.link.name == "srio-10g"
    assert Cluster.from_dict(c.to_dict()) == c


# ----------------------------------------------------------------------------- file errors

HEAD = "name: bad\ntopology: chain\nlink: srio-10g\ndevices:\n"
BAD = [
    # (devices and further text after HEAD, line, field, words)
    ("  - {name: fpga0, board: zynq7035}\n  - {name: fpga1, board: zynq7036}\n",
     6, "devices[1].board", "unknown board 'zynq7036'"),
    ("  - {name: fpga0, board: zynq7035, clok_hz: 1.0e8}\n", 5, "devices[0].clok_hz",
     "unknown field in board device; accepted fields: name, board, clock_hz"),
    ("  - {board: zynq7035}\n", 5, "devices[0].name", "missing required field"),
    ("  - {name: fpga0, board: zynq7035, clock_hz: fast}\n", 5, "devices[0].clock_hz",
     "expected a number, got 'fast' (str)"),
    ("  - {name: fpga0, board: zynq7035, clock_hz: -1.0e8}\n", 5, "devices[0].clock_hz",
     "must be > 0, got -1e+08"),
    ("  - {name: fpga0, board: zynq7035, dram_bytes: -4}\n", 5, "devices[0].dram_bytes", "must be >= 0"),
    ("  - {name: fpga0, board: zynq7035}\n  - {name: fpga0, board: pynq-z2}\n", 6, "devices[1].name",
     "duplicate device name 'fpga0' (first given in line 5)"),
    ("  - {name: cpu, host: epyc-7742, clock_hz: 1.0e9}\n", 5, "devices[0].clock_hz",
     "unknown field in host device"),
    ("  - {name: x, board: pynq-z2, host: t4}\n", 5, "devices[0].host", "not both"),
    ("  - {name: x}\n", 5, "devices[0]", "needs `board: <board name>`"),
    ("  - fpga0\n", 5, "devices[0]", "expected a mapping"),
    ("  - {name: x, host: v100}\n", 5, "devices[0].host", "unknown host 'v100'"),
    ("  - {name: a, board: pynq-z2}\n  - {name: b, board: pynq-z2}\nlinks:\n"
     "  - {between: [a, c], link: eth-1g}\n", 8, "links[0].between[1]", "unknown device 'c'"),
    ("  - {name: a, board: pynq-z2}\n  - {name: b, board: pynq-z2}\nlinks:\n"
     "  - {between: [a, b], link: eth-10g}\n", 8, "links[0].link", "unknown link 'eth-10g'"),
    ("  - {name: a, board: pynq-z2}\n  - {name: b, board: pynq-z2}\nlinks:\n"
     "  - {between: [a, b, a]}\n", 8, "links[0].between", "expected a list of 2 items"),
    ("  - {name: a, board: pynq-z2}\n  - {name: b, board: pynq-z2}\nlinks:\n"
     "  - {between: [a, b], link: eth-1g}\n  - {between: [b, a]}\n", 9, "links[1]",
     "a second entry for the link between 'b' and 'a' (first given in line 8)"),
    ("  - {name: a, board: pynq-z2}\nname: again\n", 6, "name", "duplicate key (first given in line 1)"),
    ("  - {name: a, board: pynq-z2}\nfabric: xyz\n", 6, "fabric",
     "unknown field in cluster; accepted fields: name, description, topology, link, devices"),
    ("  []\n", 4, "devices", "at least one device"),
]


@pytest.mark.parametrize("body, line, field, words", BAD)
def test_cluster_file_errors_name_file_line_and_field(tmp_path, body, line, field, words):
    path = write(tmp_path, HEAD + body)
    with pytest.raises(HardwareSpecError) as err:
        Cluster.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: {field}: "), msg
    assert words in msg, msg


def test_the_documented_unknown_board_message(tmp_path):
    text = EXAMPLE.replace("  - {name: fpga1, board: zynq7035, clock_hz: 200.0e+6}\n",
                           "  - {name: fpga1, board: zynq7035}\n  - {name: fpga2, board: zynq7036}\n")
    path = write(tmp_path, text)
    with pytest.raises(HardwareSpecError) as err:
        Cluster.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:7: devices[2].board: unknown board 'zynq7036'")
    assert "known boards: alveo-u250, alveo-u280, alveo-u50, nexys4-ddr, pynq-z2, zcu102, zynq7035" in msg


@pytest.mark.parametrize("top, line, field, words", [
    ("name: bad\ntopology: mesh\n", 2, "topology", "got 'mesh'; accepted: chain, ring, switch"),
    ("name: bad\nlink: infiniband\n", 2, "link", "unknown link 'infiniband'"),
    ("name: [a, b]\n", 1, "name", "expected a non-empty text"),
    ("topology: chain\n", 1, "name", "missing required field of cluster"),
])
def test_cluster_top_level_errors(tmp_path, top, line, field, words):
    path = write(tmp_path, top + "devices:\n  - {name: a, board: pynq-z2}\n")
    with pytest.raises(HardwareSpecError) as err:
        Cluster.load(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}:{line}: {field}: "), msg
    assert words in msg, msg


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(HardwareSpecError, match="missing.yaml: cannot read file"):
        Cluster.load(tmp_path / "missing.yaml")
    with pytest.raises(HardwareSpecError, match=r"cluster.yaml:\d+: invalid YAML"):
        Cluster.load(write(tmp_path, "name: x\ndevices:\n  - {name: a, board: [\n"))
    with pytest.raises(HardwareSpecError, match=r"cluster.yaml:1: the file is empty"):
        Cluster.load(write(tmp_path, ""))
    with pytest.raises(HardwareSpecError, match=r"cluster.yaml:1: expected a mapping"):
        Cluster.load(write(tmp_path, "- a\n- b\n"))


def test_from_dict_errors_name_the_source_and_field():
    with pytest.raises(HardwareSpecError) as err:
        Cluster.from_dict({"name": "x", "devices": [{"name": "a", "board": "nope"}]}, source="plan.json")
    assert str(err.value).startswith("plan.json: devices[0].board: unknown board 'nope'")
