"""hp.reporting.offline_plots: the page DVC draws its plots in, with Vega inline instead of from a CDN."""
import configparser
import re
from pathlib import Path

import pytest
import yaml
from dvc_render.base import Renderer
from dvc_render.html import HTML, MissingPlaceholderError, render_html

from hp.reporting import offline_plots

ROOT = Path(__file__).resolve().parents[2]


def test_dvc_fills_the_page_and_adds_no_cdn_script():
    template = offline_plots.page("window.vegaEmbed = function () {};")
    page = HTML(template, refresh_seconds=5).with_scripts('<script src="https://cdn.jsdelivr.net/npm/vega@5">'
                                                          "</script>").with_element("<div id='a'></div>").embed()
    assert "<div id='a'></div>" in page and '<meta http-equiv="refresh" content="5">' in page
    assert "cdn" not in page and "{" + "plot_divs}" not in page  # DVC's CDN tags had nowhere to go
    assert "window.vegaEmbed = function () {};" in page


@pytest.mark.parametrize("bundle", ["a = '</script>';", "a = '<!--';", "a = '{plot_divs}';", "a = '{scripts}';"])
def test_a_bundle_that_cannot_be_inlined_is_refused(bundle):
    with pytest.raises(ValueError, match="cannot be inlined|placeholders"):
        offline_plots.page(bundle)


def test_the_written_page_holds_vega_fetches_nothing_and_is_named_for_this_checkout(tmp_path):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config.local").write_text("[core]\n    autostage = true\n")  # a user's own setting
    out = offline_plots.write(tmp_path)
    page = out.read_text(encoding="utf-8")
    assert "window.vegaEmbed=" in page.replace(" ", "") and "{plot_divs}" in page
    assert not re.search(r"<script[^>]*\bsrc=|<link[^>]*\bhref=", page)
    assert sorted(p.name for p in (tmp_path / ".dvc").iterdir()) == ["config.local", "offline-plots.html"]
    local = configparser.ConfigParser()
    local.read(tmp_path / ".dvc" / "config.local")
    assert local["core"]["autostage"] == "true"  # kept
    assert tmp_path / ".dvc" / local["plots"]["html_template"] == out  # DVC: relative to .dvc/


def test_a_checkout_without_the_page_keeps_dvcs_own(tmp_path):
    """DVC reads a template path that names no file as the template's text ('has to contain {plot_divs}'), so
    the committed config names no page: only `make install`, having written it, names it in config.local."""
    with pytest.raises(MissingPlaceholderError):  # the DVC behaviour this relies on
        render_html([], tmp_path / "index.html", html_template=str(tmp_path / "missing.html"))
    committed = configparser.ConfigParser()
    committed.read(ROOT / ".dvc" / "config")
    assert "plots" not in committed
    assert "python -m hp.reporting.offline_plots" in (ROOT / "Makefile").read_text()
    ignored = (ROOT / ".dvc" / ".gitignore").read_text().split()
    assert {"/config.local", "/" + offline_plots.TEMPLATE.name} <= set(ignored)


def test_plot_names_make_ids_dvcs_javascript_can_select():
    """DVC makes each plot's name into an element id (Renderer.remove_special_chars) inside a quoted JavaScript
    string, vegaEmbed('#id', spec): a quote in a name ends that string, and an id that is not a plain, unique CSS
    name selects no element or the wrong one; either way a plot stays blank."""
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    ids = [Renderer.remove_special_chars(name) for plot in plots for name in plot]
    assert ids and [i for i in ids if not re.fullmatch(r"[A-Za-z][\w-]*", i)] == []
    assert len(set(ids)) == len(ids)
