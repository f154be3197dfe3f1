"""The plan report rendered by a real browser (headless Chromium, installed by .ci/run):
dataflow, overlay and heterogeneous plans render, with their parts in the DOM and no console
errors. No skip: a machine without chromium fails here, loudly (issue 13)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conveyor.cli import main


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "chromium is not installed: .ci/run installs Debian's chromium package (apt-get install -y chromium)"
    return exe


def _dump_dom(path, tmp_path) -> tuple[str, str]:
    r = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run",
                        f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
                        "--dump-dom", f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout, r.stderr


@pytest.mark.parametrize("argv", [
    ["digits-cnn", "--cluster", "zcu102:2:aurora-10g"],
    ["jet-mlp", "--cluster", "zcu102:2", "--arch", "overlay"],
    ["digits-cnn", "--cluster", "HET"],
], ids=["dataflow", "overlay", "heterogeneous"])
def test_plan_report_renders_in_chromium(tmp_path, argv):
    if "HET" in argv:
        cluster = tmp_path / "c.yaml"
        cluster.write_text("name: het\ntopology: chain\nlink: pcie3-x16\ndevices:\n"
                           "  - {name: host, host: xeon-gold-6248}\n  - {name: f, board: zcu102}\n")
        argv = [str(cluster) if a == "HET" else a for a in argv]
    report = tmp_path / "plan.html"
    with pytest.raises(SystemExit) as e:
        main(["plan", *argv, "--report", str(report)])
        raise SystemExit(0)
    assert (e.value.code or 0) == 0
    dom, log = _dump_dom(report, tmp_path)
    for part in ("<svg", "<h2>Stages</h2>", "<h2>Layer engines</h2>", "<h2>Against the baselines</h2>"):
        assert part in dom, part
    console = [l for l in log.splitlines() if "CONSOLE" in l or "Uncaught" in l]
    assert not console, console


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
