"""`dvc plots show` and `dvc plots diff` without a network.

DVC's page loads Vega, Vega-Lite and Vega-Embed from a CDN (dvc_render/html.py: PAGE_HTML's `{scripts}`), so it
is blank offline. DVC takes another page instead, config option `plots.html_template` (a path relative to
`.dvc/`), if it holds `{plot_divs}`; without `{scripts}` it adds no CDN tag. This writes that page with the three
libraries inline, bundled by vl-convert-python (`javascript_bundle`, which sets window.vegaEmbed as DVC's plot
scripts expect), and names it in `.dvc/config.local`: this checkout's, not committed, so a clone that has not
written the page yet keeps DVC's own (DVC would take a missing template's path for the template's text).
`make install` runs it.

    python -m hp.reporting.offline_plots [--repo .]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hp.utils.files import atomic_path

TEMPLATE = Path(".dvc/offline-plots.html")  # ignored by git (.dvc/.gitignore)
# DVC's plot templates are Vega-Lite 5 specs ($schema .../vega-lite/v5.json): the newest 5.x vl-convert bundles
VEGA_LITE = "5.21"
# DVC fills these in (dvc_render.html.HTML.embed): {refresh_tag} with '' for `dvc plots show`, kept as in its own
# page (dvc_render.html.PAGE_HTML)
PLACEHOLDERS = ("{refresh_tag}", "{plot_divs}")
_STYLE = "body { font-family: system-ui, sans-serif; margin: 1.5rem; } table { border-spacing: 15px; }"


def page(bundle: str) -> str:
    """The HTML template around a JavaScript `bundle` that defines window.vegaEmbed."""
    for markup in ("</script", "<!--"):  # either changes where the HTML parser ends the inline <script>
        if markup in bundle.lower():
            raise ValueError(f"the JavaScript bundle holds '{markup}': it cannot be inlined")
    if any(placeholder in bundle for placeholder in PLACEHOLDERS + ("{scripts}",)):
        raise ValueError("the JavaScript bundle holds one of DVC's template placeholders")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n{refresh_tag}\n"
            "<title>hp: DVC plots</title>\n"
            f"<script>\n{bundle}\n</script>\n<style>{_STYLE}</style>\n</head>\n"
            "<body>\n{plot_divs}\n</body>\n</html>\n")


def write(repo: Path = Path(".")) -> Path:
    """Write the page into `repo` and name it in its .dvc/config.local."""
    import vl_convert  # only here: ~30 MB of native code that nothing else needs

    out = repo / TEMPLATE
    with atomic_path(out) as tmp:
        tmp.write_text(page(vl_convert.javascript_bundle(vl_version=VEGA_LITE)), encoding="utf-8")
    register(repo)
    return out


def register(repo: Path = Path(".")) -> None:
    """Name `repo`'s page (written by `write`, or copied there) in its .dvc/config.local."""
    from dvc.config import Config

    with Config(dvc_dir=str(repo / ".dvc")).edit("local") as config:
        config["plots"]["html_template"] = TEMPLATE.name  # relative to .dvc/


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hp.reporting.offline_plots", description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path("."), help="the DVC repository (default: here)")
    out = write(p.parse_args(argv).repo)
    print(f"offline plots page: {out} ({out.stat().st_size / 2**20:.1f} MiB; named in .dvc/config.local, "
          "`dvc plots show` draws in it)")


if __name__ == "__main__":
    main()
