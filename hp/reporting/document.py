"""A report as a list of blocks, written both as Markdown (figures linked) and as one self-contained HTML file
(figures embedded as data: URIs, inline CSS, no script and no external fetch: it opens offline)."""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

from hp.utils.files import atomic_path

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; color: #222;
       line-height: 1.45; }
table { border-collapse: collapse; margin: 0.6rem 0 1.2rem; font-size: 0.92rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
blockquote { border-left: 4px solid #d9a400; background: #fff8e1; margin: 1rem 0; padding: 0.5rem 1rem; }
figure { margin: 1rem 0; } figure img { max-width: 100%; } figcaption { font-size: 0.9rem; color: #555; }
code { background: #f3f3f3; padding: 0 0.2rem; }
details { margin: 0.6rem 0 1.2rem; }
"""
_NUMBER = re.compile(r"^[-+]?[\d,.]+( ?[%x×])?$|^–$")


@dataclass
class Document:
    """Blocks in reading order. Text may hold `code` spans, **bold**, *italics* and [links](relative/path): the
    Markdown subset both writers know."""
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def note(self, text: str) -> None:
        """A highlighted remark (Markdown: a block quote)."""
        self.blocks.append(("note", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: list[str], rows: list[list], caption: str | None = None) -> None:
        rows = [[str(cell) for cell in row] for row in rows]
        if any(len(row) != len(header) for row in rows):
            raise ValueError(f"table {header}: every row needs {len(header)} cells")
        self.blocks.append(("table", list(header), rows, caption))

    def figure(self, path: Path, caption: str) -> None:
        """A PNG written beside the Markdown file (under the report's directory)."""
        self.blocks.append(("figure", Path(path), caption))

    def details(self, summary: str, text: str) -> None:
        """Collapsed preformatted text (HTML: <details>; Markdown: a fenced block under the summary)."""
        self.blocks.append(("details", summary, text))

    # ---- writers --------------------------------------------------------------------------------------
    def markdown(self, root: Path) -> str:
        """Markdown with figures linked relative to `root`, the directory the file is written to."""
        out = [f"# {self.title}", ""]
        for kind, *args in self.blocks:
            if kind == "heading":
                out += ["#" * args[0] + " " + args[1], ""]
            elif kind == "paragraph":
                out += [args[0], ""]
            elif kind == "note":
                out += ["> " + args[0], ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in args[0]] + [""]
            elif kind == "table":
                header, rows, caption = args
                out += [caption, ""] if caption else []
                out += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                out += ["| " + " | ".join(row) + " |" for row in rows] + [""]
            elif kind == "figure":
                path, caption = args
                out += [f"![{caption}]({path.relative_to(root).as_posix()})", ""]
            elif kind == "details":
                # a fence longer than any backtick run inside, so a Markdown text with fences stays one block
                # (CommonMark 0.31, "Fenced code blocks")
                fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", args[1])), default=0))
                out += [f"{args[0]}:", "", fence, args[1].rstrip("\n"), fence, ""]
        return "\n".join(out)

    def html(self) -> str:
        """One HTML page; every figure is read now and embedded."""
        body = [f"<h1>{_inline(self.title)}</h1>"]
        for kind, *args in self.blocks:
            if kind == "heading":
                body.append(f"<h{args[0]}>{_inline(args[1])}</h{args[0]}>")
            elif kind == "paragraph":
                body.append(f"<p>{_inline(args[0])}</p>")
            elif kind == "note":
                body.append(f"<blockquote>{_inline(args[0])}</blockquote>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in args[0]) + "</ul>")
            elif kind == "table":
                header, rows, caption = args
                body.append(_html_table(header, rows, caption))
            elif kind == "figure":
                path, caption = args
                data = base64.b64encode(path.read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{_inline(caption)}</figcaption></figure>")
            elif kind == "details":
                body.append(f"<details><summary>{_inline(args[0])}</summary><pre>{html.escape(args[1])}</pre>"
                            "</details>")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")

    def write(self, markdown_path: Path, html_path: Path | None = None) -> None:
        """The Markdown file (figures relative to its directory) and, if asked, the self-contained HTML."""
        with atomic_path(markdown_path) as tmp:
            tmp.write_text(self.markdown(Path(markdown_path).parent) + "\n")
        if html_path is not None:
            with atomic_path(html_path) as tmp:
                tmp.write_text(self.html())


_CODE = re.compile(r"`([^`]+)`")
# a target may hold one level of balanced parentheses (a Wikipedia page) but no space and no code span
_LINK = re.compile(r"\[([^\]]+)\]\(((?:[^()\s\x00]|\([^()\s\x00]*\))+)\)")
_SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")


def _inline(text: str) -> str:
    """HTML of the Markdown subset used in blocks: `code`, **bold**, *italics* and [text](target) for a relative or
    http(s) target; everything else escaped. Code spans and links are set aside first, so that nothing inside a
    code span or a link's target is read as markup."""
    held: list[str] = []

    def hold(fragment: str) -> str:
        held.append(fragment)
        return f"\x00{len(held) - 1}\x00"

    def link(m: re.Match) -> str:
        target = m[2]
        if _SCHEME.match(target) and not target.lower().startswith(("http:", "https:")):
            return m[0]  # javascript:, file: and the like stay text
        return hold(f'<a href="{html.escape(target)}">{_emphasis(html.escape(m[1]))}</a>')

    text = _CODE.sub(lambda m: hold(f"<code>{html.escape(m[1])}</code>"), text.replace("\x00", ""))
    text = _emphasis(html.escape(_LINK.sub(link, text)))
    while "\x00" in text:  # a link's text may hold a code span: set aside in turn
        text = re.sub("\x00(\\d+)\x00", lambda m: held[int(m[1])], text)
    return text


def _emphasis(text: str) -> str:
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _html_table(header: list[str], rows: list[list[str]], caption: str | None) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = "".join(f'<td class="num">{_inline(c)}</td>' if _NUMBER.match(c) else f"<td>{_inline(c)}</td>"
                        for c in row)
        lines.append(f"<tr>{cells}</tr>")
    caption = f"<p>{_inline(caption)}</p>" if caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
