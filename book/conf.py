"""Sphinx configuration of the lessons' static book, built by ``python -m invattn.book`` (``make book``).

``invattn.book`` stages the sources beside this file (the index page generated from README's lesson table, the
lessons with their stored outputs made static, the figures) and builds them with this configuration; it passes
the repository's address (``[project.urls] Repository``) as ``html_theme_options.repository_url``. Nothing here
executes a notebook, and no page of the built site asks for anything outside the site: the theme's fonts and icons
are its own, and MathJax is copied into ``_static/mathjax`` from the ``django-static-mathjax`` package.
"""

from pathlib import Path

import mathjax  # django-static-mathjax: the MathJax 3 distribution, as a Python package
from sphinx.util.fileutil import copy_asset

project = "invattn"
author = "the invattn authors"
copyright = "the invattn authors"
html_title = "invattn: invertible attention, certified and taught"

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]

# The notebooks are read as stored: their outputs are what the book shows.
nb_execution_mode = "off"
# Widgets are replaced by a note when the book is staged; never load the widget manager from a CDN.
nb_ipywidgets_js = {}
# An output's `text/markdown` is shown as markdown (the lessons print some conclusions that way).
nb_render_markdown_format = "myst"

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_dmath_double_inline = True  # `$$…$$` inside a paragraph is display math, as Jupyter shows it
myst_heading_anchors = 3  # links to a lesson's "## N · …" sections and their subsections

# MathJax 3, local. MyST adds the classes MathJax processes to this configuration (only typeset math).
MATHJAX = Path(mathjax.__file__).parent / "static" / "mathjax" / "es5"
MATHJAX_PARTS = ["tex-chtml.js", "input/tex/extensions", "output/chtml/fonts/woff-v2", "ui", "a11y", "adaptors"]
mathjax_path = "mathjax/tex-chtml.js"
# An undefined macro is a TeX error (shown as one, and found by tests/test_book.py), not quietly red text.
# no context menu: its speech and explorer options would fetch MathJax's speech rules from a CDN
mathjax3_config = {"tex": {"packages": {"[-]": ["noundefined"]}}, "options": {"enableMenu": False}}

html_theme = "sphinx_book_theme"
html_static_path = ["_static"]
html_css_files = ["book.css"]
html_favicon = "_static/favicon.svg"  # else the browser asks for /favicon.ico, which the site does not have
html_context = {"default_mode": "light"}  # the theme's switch starts somewhere (an empty mode is a console error)
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "repository_url": "",  # set by invattn.book from pyproject.toml
    "repository_branch": "main",
    "path_to_docs": "",
    "use_repository_button": True,
    "use_download_button": False,  # the site holds no copies of the notebooks (the Colab and repository links do)
    "home_page_in_toc": True,
    "show_toc_level": 2,
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
}


def _copy_mathjax(app, exception):
    """After a successful HTML build, put the parts of MathJax the pages load under ``_static/mathjax``."""
    if exception is None and app.builder.format == "html":
        for part in MATHJAX_PARTS:
            source = MATHJAX / part
            target = Path(app.outdir) / "_static" / "mathjax" / part
            if source.is_dir():
                copy_asset(source, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                copy_asset(source, target.parent)


def setup(app):
    # MathJax on every page, not only those with math in their text: the navigation shows lessons' titles with math.
    app.set_html_assets_policy("always")
    app.connect("build-finished", _copy_mathjax)
