"""`dvc plots show` and `dvc plots diff` without a network.

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN (dvc_render/html.py: PAGE_HTML's `{scripts}`), so it
is blank offline. DVC takes another page instead, `.dvc/config`'s `plots.html_template` (a path relative to
`.dvc/`), if it holds `{plot_divs}`; without `{scripts}` it adds no CDN tag. This writes that page with the three
libraries inline, bundled by vl-convert-python (`javascript_bundle`, which sets window.vegaEmbed as DVC's plot
scripts expect). `make install` runs it; `python -m hp.reporting.offline_plots` writes it again.

    python -m hp.reporting.offline_plots [--out .dvc/offline-plots.html]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hp.utils.files import atomic_path

TEMPLATE = Path(".dvc/offline-plots.html")  # .dvc/config: [plots] html_template = offline-plots.html
# DVC's plot templates are Vega-Lite 5 specs ($schema .../vega-lite/v5.json): the newest 5.x vl-convert bundles
VEGA_LITE = "5.21"
# DVC fills these in (dvc_render.html.HTML.embed); {refresh_tag} keeps `dvc plots show` live while training
PLACEHOLDERS = ("{refresh_tag}", "{plot_divs}")
_STYLE = "body { font-family: system-ui, sans-serif; margin: 1.5rem; } table { border-spacing: 15px; }"


def page(bundle: str) -> str:
    """The HTML template around a JavaScript `bundle` that defines window.vegaEmbed."""
    if "</script" in bundle.lower():  # would end the inline <script> early
        raise ValueError("the JavaScript bundle holds '</script': it cannot be inlined")
    if any(placeholder in bundle for placeholder in PLACEHOLDERS + ("{scripts}",)):
        raise ValueError("the JavaScript bundle holds one of DVC's template placeholders")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n"
            "<title>hp: DVC plots</title>\n"
            f"<script>\n{bundle}\n</script>\n<style>{_STYLE}</style>\n</head>\n<body>\n{{plot_divs}}\n</body>\n</html>\n")


def write(out: Path = TEMPLATE) -> Path:
    import vl_convert  # only here: ~30 MB of native code that nothing else needs

    with atomic_path(out) as tmp:
        tmp.write_text(page(vl_convert.javascript_bundle(vl_version=VEGA_LITE)), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hp.reporting.offline_plots", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=TEMPLATE, help="where DVC reads it (.dvc/config: plots.html_template)")
    out = write(p.parse_args(argv).out)
    print(f"offline plots page: {out} ({out.stat().st_size / 2**20:.1f} MiB; `dvc plots show` uses it)")


if __name__ == "__main__":
    main()
