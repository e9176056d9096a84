"""Markdown beside the HTML: report sections as a markdown page, and the few markdown constructs the
sections' prose uses rendered to HTML (code fences, ``- `` bullet lists, ``**bold**``, ```code```, ``*em*``)."""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Sequence

from ..rundir import write_text

__all__ = ["markdown_to_html", "markdown_table", "render_markdown", "write_markdown"]


def markdown_to_html(text: str) -> str:
    """HTML of ``text``: paragraphs split at blank lines, fenced code, bullet lists, inline markup."""
    out = []
    for para in text.split("\n\n"):
        if para.startswith("```"):
            code = para.strip("`").strip("\n")
            out.append(f"<pre>{html.escape(code)}</pre>")
            continue
        lines = para.split("\n")
        if all(line.startswith("- ") for line in lines):
            out.append("<ul>" + "".join(f"<li>{_inline(line[2:])}</li>" for line in lines) + "</ul>")
        else:
            out.append(f"<p>{_inline(para)}</p>")
    return "\n".join(out)


def _inline(text: str) -> str:
    s = html.escape(text)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    s = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)
    s = re.sub(r"(?<![*\w])\*([^*]+)\*(?![*\w])", r"<em>\1</em>", s)
    return s


def markdown_table(df) -> str:
    """A DataFrame of display strings as a markdown table (``_(none)_`` when empty)."""
    if df is None or not len(df):
        return "_(none)_"
    cols = [str(c) for c in df.columns]
    esc = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join(esc(v) for v in row) + " |")
    return "\n".join(lines)


def _figure_parts(item) -> tuple[str, str]:
    """(caption, file stem) of a Section figure entry."""
    if isinstance(item, tuple):
        return item[0], (item[2] if len(item) > 2 else "figure")
    return "", "figure"


def render_markdown(title: str, sections: Sequence, fig_rel: str) -> str:
    """``sections`` (:class:`~robustscale.report.Section`) as one markdown page; figures are linked as
    ``<fig_rel>/<name>.png`` (write them with ``report.plots.save_figure``).

    Level-2 sections are ``##`` headings; a titled level-3 section holding a table gets its title as a bold
    caption above the table, other titled sub-sections a ``###`` heading.
    """
    out = [f"# {title}", ""]
    for s in sections:
        if s.level <= 2:
            out += [f"## {s.title}", ""]
        elif s.title:
            out += [f"**{s.title}**" if s.table is not None else f"### {s.title}", ""]
        for part in (s.html, s.markdown, s.text):
            if part:
                out += [part, ""]
        if s.table is not None:
            out += [markdown_table(s.table), ""]
        for item in s.figures:
            caption, name = _figure_parts(item)
            out += [f"![{name}]({fig_rel}/{name}.png)", "", f"*{caption}*", ""]
    return "\n".join(out).rstrip() + "\n"


def write_markdown(path: str | Path, title: str, sections: Sequence, fig_rel: str) -> Path:
    """:func:`render_markdown` written atomically to ``path`` (folders created)."""
    return write_text(path, render_markdown(title, sections, fig_rel), mkdir=True)
