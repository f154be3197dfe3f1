"""The shipped hardware catalog: entries, datasheet figures, sources, and catalog-file errors."""

import json
import math
import re
from pathlib import Path

import pytest

import conveyor.hardware as hw
from conveyor.errors import HardwareSpecError
from conveyor.hardware import Board, FpgaPart, Host, Link, catalog, catalog_rows, load_catalog

PARTS = ["xc7z020", "xc7z035", "xc7a100t", "xczu9eg", "xcu50", "xcu250", "xcu280", "1sg280"]
BOARDS = ["pynq-z2", "nexys4-ddr", "zcu102", "alveo-u50", "alveo-u250", "alveo-u280", "zynq7035"]
HOSTS = ["xeon-gold-6248", "epyc-7742", "arm-cortex-a9", "cloud-vm-2c", "t4", "a100", "h100"]
LINKS = ["srio-10g", "aurora-10g", "eth-100g", "pcie3-x16", "eth-1g"]
DATA = Path(hw.__file__).parent


def test_catalog_is_cached_and_read_only():
    assert catalog() is catalog()
    with pytest.raises(TypeError):
        catalog().boards["x"] = None


@pytest.mark.parametrize("name", PARTS)
def test_parts_have_positive_figures(name):
    p = catalog().part(name)
    assert isinstance(p, FpgaPart) and p.name == name
    for f in ("dsp", "bram18k", "lut", "ff", "clock_hz"):
        assert getattr(p, f) > 0, f
    assert p.uram >= 0 and p.m20k >= 0
    assert 50e6 <= p.clock_hz <= 500e6
    assert p.source and p.onchip_bits > 0


@pytest.mark.parametrize("name", BOARDS)
def test_boards_have_positive_figures(name):
    b = catalog().board(name)
    assert isinstance(b, Board) and b.part.name in PARTS
    assert b.offchip_bytes > 0 and b.offchip_bandwidth_Bps > 0
    assert b.clock_hz > 0 and b.host_interface and b.source
    assert b.power_w is None or b.power_w > 0
    assert all(link in catalog().links for link in b.network_links)


@pytest.mark.parametrize("name", HOSTS)
def test_hosts_have_positive_figures(name):
    h = catalog().host(name)
    assert isinstance(h, Host) and h.kind in ("cpu", "gpu")
    assert h.peak_flops > 0 and h.mem_bandwidth_Bps > 0 and h.mem_bytes > 0
    assert h.tdp_w is None or h.tdp_w > 0


@pytest.mark.parametrize("name", LINKS)
def test_links_have_positive_figures_and_consistent_encoding(name):
    link = catalog().link(name)
    assert isinstance(link, Link)
    assert link.bandwidth_Bps > 0 and link.latency_s > 0
    raw_Bps = link.lanes * link.line_rate_bps / 8
    assert link.bandwidth_Bps < raw_Bps * link.encoding_efficiency  # payload below the encoded rate
    assert math.isclose(link.transfer_time_s(0), link.latency_s)


def test_known_datasheet_figures():
    c = catalog()
    z20, z35 = c.part("xc7z020"), c.part("xc7z035")
    assert (z20.dsp, z20.bram18k, z20.lut, z20.ff) == (220, 280, 53200, 106400)
    assert (z35.dsp, z35.bram18k) == (900, 1000)
    assert (c.part("xc7a100t").dsp, c.part("xc7a100t").bram18k) == (240, 270)
    assert c.part("xczu9eg").dsp == 2520
    assert (c.part("xcu250").dsp, c.part("xcu250").uram) == (12288, 1280)
    assert z20.dsp_mult_width == (25, 18) and c.part("xcu280").dsp_mult_width == (27, 18)
    assert c.board("alveo-u280").hbm_bandwidth_Bps == 460e9
    assert c.board("alveo-u50").dram_bytes == 0 and c.board("alveo-u50").hbm_bytes == 8 * 2**30
    assert c.board("pynq-z2").part is z20 and c.board("pynq-z2").cpu == "arm-cortex-a9"
    assert c.host("t4").peak_flops == 8.1e12 and c.host("t4").kind == "gpu"
    assert c.link("aurora-10g").encoding == "64b/66b"
    assert c.link("pcie3-x16").encoding == "128b/130b"


def test_intel_part_keeps_m20k_and_an_18k_equivalent():
    s10 = catalog().part("1sg280")
    assert s10.vendor == "intel" and s10.m20k == 11721
    assert s10.bram18k == (s10.m20k * 20) // 18
    assert s10.dsp_modes == ((27, 27, 1), (18, 19, 2))
    assert s10.mults_per_dsp(18, 18) == 2 and s10.mults_per_dsp(27, 27) == 1
    assert s10.mults_per_dsp(32, 32) == 0


def test_mults_per_dsp_for_xilinx():
    z = catalog().part("xc7z020")
    assert z.mults_per_dsp(8, 8) == 1 and z.mults_per_dsp(18, 25) == 1
    assert z.mults_per_dsp(27, 18) == 0
    assert catalog().part("xczu9eg").mults_per_dsp(27, 18) == 1


def test_every_figure_line_has_a_source_comment():
    figure = re.compile(r"^\s+\w+:\s*(\[[-+0-9.e, \[\]]+\]|[-+]?[0-9][-+0-9._e]*)\s*(#|$)")
    for path in sorted(DATA.glob("*.yaml")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if figure.match(line):
                assert "#" in line, f"{path.name}:{no} has a figure without a source comment"


@pytest.mark.parametrize("lookup, name, what", [
    ("board", "zynq7036", "board"), ("part", "xc7z999", "part"),
    ("host", "v100", "host"), ("link", "eth-400g", "link"),
])
def test_unknown_names_list_the_known_ones(lookup, name, what):
    with pytest.raises(HardwareSpecError) as err:
        getattr(catalog(), lookup)(name)
    msg = str(err.value)
    assert f"unknown {what} {name!r}" in msg and f"known {what}s:" in msg
    known = getattr(catalog(), lookup + "s")
    assert next(iter(known)) in msg


def test_catalog_rows_are_plain_and_complete():
    rows = catalog_rows()
    json.dumps(rows)
    kinds = {r["kind"] for r in rows}
    assert kinds == {"part", "board", "cpu", "gpu", "link"}
    names = {r["name"] for r in rows}
    assert set(PARTS + BOARDS + HOSTS + LINKS) <= names
    board = next(r for r in rows if r["name"] == "zynq7035")
    assert board["part"] == "xc7z035" and board["dsp"] == 900


# ----------------------------------------------------------------------------- catalog files


def _load_error(tmp_path, text):
    path = tmp_path / "extra.yaml"
    path.write_text(text)
    with pytest.raises(HardwareSpecError) as err:
        load_catalog(path)
    return str(err.value)


def test_extra_catalog_file_adds_a_board(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "boards:\n"
        "  my-z7035:\n"
        "    part: xc7z035\n"
        "    dram_bytes: 2147483648\n"
        "    dram_bandwidth_Bps: 8.5e9\n"
        "    host_interface: zynq-ps-axi\n"
        "    source: my board manual\n"
    )
    cat = load_catalog(path)
    assert cat.board("my-z7035").dram_bandwidth_Bps == 8.5e9
    assert cat.board("my-z7035").clock_hz == cat.part("xc7z035").clock_hz
    assert "my-z7035" not in catalog().boards


@pytest.mark.parametrize("text, line, field, words", [
    ("boards:\n  b:\n    part: xc7z999\n    dram_bytes: 1\n    dram_bandwidth_Bps: 1\n"
     "    host_interface: x\n    source: s\n", 3, "boards.b.part", "unknown part 'xc7z999'"),
    ("parts:\n  p:\n    vendor: xilinx\n    family: f\n    dsp: -5\n", 5, "parts.p.dsp", "must be >= 1"),
    ("hosts:\n  h:\n    kind: cpu\n    peak_flops: 1.0e9\n    mem_bandwidth_Bps: 1.0e9\n"
     "    mem_bytes: 1\n    source: s\n    colour: red\n", 8, "hosts.h.colour", "unknown field"),
    ("hosts:\n  h:\n    kind: tpu\n", 3, "hosts.h.kind", "accepted: cpu, gpu"),
    ("hosts:\n  h:\n    kind: cpu\n    peak_flops: lots\n", 4, "hosts.h.peak_flops", "expected a number"),
    ("hosts:\n  h:\n    kind: cpu\n", 2, "hosts.h.peak_flops", "missing required field"),
    ("links:\n  l:\n    medium: m\n    line_rate_bps: 10.0e9\n    encoding: 64b/66b\n"
     "    protocol_efficiency: 1.0\n    bandwidth_Bps: 2.0e9\n    latency_s: 0\n    source: s\n",
     7, "links.l.bandwidth_Bps", "does not match"),
    ("links:\n  l:\n    medium: m\n    line_rate_bps: 1.0e9\n    encoding: 66b/64b\n", 5,
     "links.l.encoding", "accepted"),
    ("links:\n  l:\n    medium: m\n    line_rate_bps: 8.0e9\n    encoding: none\n"
     "    protocol_efficiency: 1.0\n    bandwidth_Bps: 1.0e9\n    latency_s: 0\n    source: s\n"
     "    switched: yes please\n", 10, "links.l.switched", "accepted: true or false"),
    ("boards:\n  pynq-z2:\n    part: xc7z020\n", 2, "boards.pynq-z2", "already in the catalog"),
    ("gadgets:\n  g: {}\n", 1, "gadgets", "unknown catalog section"),
    ("hosts:\n  h: {kind: cpu}\n  h: {kind: gpu}\n", 3, "h", "duplicate key"),
])
def test_catalog_file_errors_name_file_line_and_field(tmp_path, text, line, field, words):
    msg = _load_error(tmp_path, text)
    assert msg.startswith(f"{tmp_path / 'extra.yaml'}:{line}: {field}: "), msg
    assert words in msg


def test_invalid_yaml_names_file_and_line(tmp_path):
    msg = _load_error(tmp_path, "boards:\n  b: [1, 2\n  c: 3\n")
    assert "extra.yaml:" in msg and "invalid YAML" in msg
