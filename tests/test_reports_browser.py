"""The plan report rendered by a real browser (headless Chromium, installed by .ci/run):
dataflow, overlay and heterogeneous plans render with no console errors; the DOM holds the
pipeline (boards, links with their structure and crossing tensors), every board's resources
as bars against its budget, the stage charts of conveyor and the baselines side by side, and
the per-layer engines; and Chromium's own text measurements show no label running off its
drawing and no two labels overlapping. No skip: a machine without chromium fails here,
loudly (issue 13)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html import unescape

import pytest

from conveyor.cli import main
from conveyor.plan import Plan

# Run in the page by the test only (the report itself has no script): every <text>'s box in
# its <svg>'s coordinates, as Chromium lays it out, written into the DOM for --dump-dom.
MEASURE = """<script>
const out = [];
document.querySelectorAll("svg").forEach((svg, i) => {
  const w = svg.viewBox.baseVal.width, h = svg.viewBox.baseVal.height;
  const boxes = [...svg.querySelectorAll("text")].map(t => { const b = t.getBBox();
    return {s: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height}; });
  out.push({svg: i, cls: svg.getAttribute("class"), w, h, boxes});
});
const pre = document.createElement("pre"); pre.id = "measured"; pre.textContent = JSON.stringify(out);
document.body.appendChild(pre);
</script>"""


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: .ci/run installs Debian's chromium package (apt-get install -y chromium)"
    return exe


def _dump_dom(path, tmp_path) -> tuple[str, str]:
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1000",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


def _overlaps(a, b, slack=0.5) -> bool:
    return (a["x"] + slack < b["x"] + b["w"] and b["x"] + slack < a["x"] + a["w"]
            and a["y"] + slack < b["y"] + b["h"] and b["y"] + slack < a["y"] + a["h"])


def check_labels(measured) -> None:
    for svg in measured:
        for b in svg["boxes"]:
            assert b["w"] > 0, (svg["cls"], b)
            assert -0.5 <= b["x"] and b["x"] + b["w"] <= svg["w"] + 0.5, f"off the {svg['cls']} chart: {b}"
            assert -0.5 <= b["y"] and b["y"] + b["h"] <= svg["h"] + 0.5, f"off the {svg['cls']} chart: {b}"
        boxes = svg["boxes"]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1:]:
                assert not _overlaps(a, b), f"labels collide in {svg['cls']}: {a['s']!r} and {b['s']!r}"


@pytest.mark.parametrize("argv", [
    ["digits-cnn", "--cluster", "zcu102:2:aurora-10g"],
    ["jet-mlp", "--cluster", "zcu102:2", "--arch", "overlay"],
    ["digits-cnn", "--cluster", "HET"],
    ["alexnet-conv", "--cluster", "zynq7035:4:srio-10g"],
], ids=["dataflow", "overlay", "heterogeneous", "alexnet-4-boards"])
def test_plan_report_renders_in_chromium(tmp_path, argv):
    if "HET" in argv:
        cluster = tmp_path / "c.yaml"
        cluster.write_text("name: het\ntopology: chain\nlink: pcie3-x16\ndevices:\n"
                           "  - {name: host, host: xeon-gold-6248}\n  - {name: f, board: zcu102}\n")
        argv = [str(cluster) if a == "HET" else a for a in argv]
    report, plan_path = tmp_path / "plan.html", tmp_path / "plan.json"
    with pytest.raises(SystemExit) as e:
        main(["plan", *argv, "--report", str(report), "-o", str(plan_path)])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    plan = Plan.load(plan_path)
    html = report.read_text()
    assert "<script" not in html  # one static page
    measured_page = tmp_path / "measured.html"
    measured_page.write_text(html.replace("</body>", MEASURE + "</body>"))
    dom, log = _dump_dom(measured_page, tmp_path)
    console = [l for l in log.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    assert not console, console
    for part in ("<h2>Pipeline</h2>", "<h2>Board resources against their budgets</h2>", "<h2>Stages</h2>",
                 "<h2>Layer engines</h2>", "<h2>Against the baselines</h2>"):
        assert part in dom, part
    measured = json.loads(unescape(re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S).group(1)))
    check_labels(measured)
    by_cls = {}
    for svg in measured:
        by_cls.setdefault(svg["cls"], []).append([b["s"] for b in svg["boxes"]])
    # the pipeline: one box per board, each link with its structure and the tensors crossing it
    (pipeline,) = by_cls["pipeline"]
    assert dom.count('class="board"') == len(plan.stages)
    for s in plan.stages:
        assert any(t.startswith(f"{s.device} (") for t in pipeline), s.device
        if s.link_out is not None:
            mode = "its own pipeline stage" if s.link_out.mode == "stage" else "merged into the sender's stage"
            assert f"{s.link_out.link}: {mode}" in pipeline
            assert all(f"  {t}" in pipeline for t in s.link_out.tensors)
    # every board's resources against its budget; red exactly where the use is >= 90 %
    assert len(by_cls["resources"]) == len(plan.stages)
    for s, texts in zip(plan.stages, by_cls["resources"]):
        labels = set(texts)
        if s.arch == "dataflow":
            assert {"DSP", "BRAM18K", "LUT", "FF"} <= labels, labels
    values = [int(m) for svg in by_cls["resources"] for t in svg for m in re.findall(r"\((\d+)%\)$", t)]
    assert dom.count('class="use at-limit"') == sum(v >= 90 for v in values)
    # stage charts: conveyor's and each baseline's that fits, side by side in one row
    assert len(by_cls["stages"]) == 1 + sum(1 for v in ("equal", "dichotomy", "greedy")
                                            if f"<h3>{v}: does not fit</h3>" not in dom)
    assert 'class="row charts"' in dom
    # per-layer engines: parallelism, the reuse factor, interval and where the weights live
    engines = re.search(r'<table class="engines">(.*?)</table>', dom, re.S).group(1)
    for h in ("parallelism", "reuse factor", "interval", "weights in"):
        assert f">{h}</th>" in engines
    assert engines.count("<tr>") == 1 + sum(len(s.layers) for s in plan.stages)


def test_labels_that_collide_are_caught():
    """The geometry check itself: two boxes in one place, one past the edge."""
    a = {"s": "a", "x": 10, "y": 10, "w": 50, "h": 12}
    with pytest.raises(AssertionError, match="collide"):
        check_labels([{"cls": "stages", "w": 200, "h": 100, "boxes": [a, {**a, "s": "b", "x": 40}]}])
    with pytest.raises(AssertionError, match="off the"):
        check_labels([{"cls": "stages", "w": 200, "h": 100, "boxes": [{**a, "x": 180}]}])


def test_plan_report_links_the_simulation_report_and_both_render(tmp_path):
    plan_html, sim_html = tmp_path / "plan.html", tmp_path / "sim" / "jet.sim.html"
    sim_html.parent.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["plan", "jet-mlp", "--cluster", "zcu102:2:aurora-10g", "--report", str(plan_html),
              "--sim-report", str(sim_html)])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    dom, log = _dump_dom(plan_html, tmp_path)
    assert 'class="sim-report" href="sim/jet.sim.html"' in dom
    sim_dom, sim_log = _dump_dom(sim_html, tmp_path)
    for part in ("<h2>Timeline</h2>", "<h2>Utilisation</h2>", "<h2>Latency against load</h2>", "request 11:", "knee: "):
        assert part in sim_dom, part
    assert sim_dom.count("<svg") == 3 and "href=\"../plan.html\"" in sim_dom
    console = [l for l in (log + sim_log).splitlines() if "CONSOLE" in l or "Uncaught" in l]
    assert not console, console
