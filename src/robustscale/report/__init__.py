"""Figures and the self-contained HTML report of scaling fits.

- :func:`write_report` (``report/html.py``): fits, figures and extrapolation in one HTML file,
  plus any :class:`Section` s a caller adds.
- ``report.plots``: the matplotlib figures (also usable on their own in a notebook).
"""
from .html import Section, write_html, write_report

__all__ = ["Section", "write_report", "write_html"]
