"""Figures and the self-contained HTML report of scaling fits.

- :func:`write_report` (``report/html.py``): fits, figures and extrapolation in one HTML file,
  plus any :class:`Section` s a caller adds.
- ``report.plots``: the matplotlib figures (also usable on their own in a notebook).
- ``report.markdown``: the same :class:`Section` s as a markdown page (:func:`write_markdown`).
"""
from .html import Section, Sections, write_html, write_report
from .markdown import markdown_to_html, render_markdown, write_markdown

__all__ = ["Section", "Sections", "write_report", "write_html", "render_markdown", "write_markdown",
           "markdown_to_html"]
