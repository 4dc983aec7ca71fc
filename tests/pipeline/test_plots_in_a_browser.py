"""`dvc plots show` draws every declared plot with the network cut off (hp.reporting.offline_plots), checked in a
headless Chromium: the DOM after its scripts ran holds one drawn Vega chart per plot."""
import re
import shutil
import subprocess

import pytest
import yaml

from pipeline_repo import ROOT, run

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
# as root, with no GPU and no network: every host name fails to resolve, so nothing can come from a CDN
HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND",
            "--virtual-time-budget=10000")  # lets vegaEmbed's promises settle before the DOM is dumped


@pytest.mark.skipif(CHROMIUM is None, reason="needs a headless Chromium (Debian: apt-get install chromium)")
def test_dvc_plots_show_draws_every_plot_offline(reference_run, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(reference_run, repo, symlinks=True)  # the reference run is read, never written
    run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], repo)
    page = (tmp_path / "plots" / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=", page), "the page fetches a script"
    drawn = re.findall(r"vegaEmbed\('#([^']*)'", page)
    assert len(drawn) == len(yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"])
    browser = subprocess.run([CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                              (tmp_path / "plots" / "index.html").as_uri()], capture_output=True, text=True,
                             timeout=120)
    assert browser.returncode == 0, f"{CHROMIUM} failed:\n{browser.stderr[-2000:]}"
    assert browser.stdout.count('class="marks"') == len(drawn), f"a plot was not drawn:\n{browser.stderr[-2000:]}"
