"""The HTML report (``expsvc report``) and the read-only local server (``expsvc ui``).

``data.py`` reads and computes what a page shows (through the read API and ``compare``), ``html.py`` renders
one self-contained page (templates and vendored uPlot in package files), ``server.py`` serves the same pages
from a store opened read-only.
"""
