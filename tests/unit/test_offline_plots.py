"""hp.reporting.offline_plots: the page DVC draws its plots in, with Vega inline instead of from a CDN."""
import configparser
import re
from pathlib import Path

import pytest
import yaml
from dvc_render.html import HTML

from hp.reporting import offline_plots

ROOT = Path(__file__).resolve().parents[2]


def test_dvc_fills_the_page_and_adds_no_cdn_script():
    template = offline_plots.page("window.vegaEmbed = function () {};")
    page = HTML(template, refresh_seconds=5).with_scripts('<script src="https://cdn.jsdelivr.net/npm/vega@5">'
                                                          "</script>").with_element("<div id='a'></div>").embed()
    assert "<div id='a'></div>" in page and '<meta http-equiv="refresh" content="5">' in page
    assert "cdn" not in page and "{" + "plot_divs}" not in page  # DVC's CDN tags had nowhere to go
    assert "window.vegaEmbed = function () {};" in page


@pytest.mark.parametrize("bundle", ["a = '</script>';", "a = '{plot_divs}';", "a = '{scripts}';"])
def test_a_bundle_that_cannot_be_inlined_is_refused(bundle):
    with pytest.raises(ValueError, match="cannot be inlined|placeholders"):
        offline_plots.page(bundle)


def test_the_written_page_holds_vega_and_fetches_nothing(tmp_path):
    out = offline_plots.write(tmp_path / "page.html")
    page = out.read_text(encoding="utf-8")
    assert "window.vegaEmbed=" in page.replace(" ", "") and "{plot_divs}" in page
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page)
    assert list(tmp_path.iterdir()) == [out]  # written through a temporary file, nothing else left


def test_dvc_config_names_the_page_make_install_writes():
    config = configparser.ConfigParser()
    config.read(ROOT / ".dvc" / "config")
    assert Path(".dvc") / config["plots"]["html_template"] == offline_plots.TEMPLATE  # DVC: relative to .dvc/
    assert "python -m hp.reporting.offline_plots" in (ROOT / "Makefile").read_text()
    ignored = (ROOT / ".dvc" / ".gitignore").read_text().split()
    assert "/" + offline_plots.TEMPLATE.name in ignored  # a build output, not committed


def test_plot_names_fit_in_dvcs_javascript():
    """DVC makes each plot's name into an element id inside a quoted JavaScript string (vegaEmbed('#id', spec)):
    a quote in a name ends that string, and the plot stays blank."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    names = [name for plot in plots for name in plot]
    assert names and [name for name in names if set(name) & set("'\"\\")] == []
