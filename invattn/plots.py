"""Small, labelled, reproducible figures: one style for every lesson, the figures folder, and byte-stable files in
it."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

__all__ = ["figures_dir", "use_lesson_style", "savefig"]


def figures_dir() -> Path:
    """The folder figures are saved to: the checkout's ``figures/``, created if missing.

    ``$INVATTN_FIGURES`` overrides it; outside a checkout (an installed package) it is ``figures/`` in the current
    directory.

    Returns:
        the folder's path (it exists).
    """
    override = os.environ.get("INVATTN_FIGURES")
    if override:
        path = Path(override)
    else:
        checkout = Path(__file__).resolve().parent.parent
        path = checkout / "figures" if (checkout / "notebooks").is_dir() else Path.cwd() / "figures"
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_lesson_style() -> None:
    """Small PNG figures inline, a fixed SVG hash salt so saved SVGs are byte-stable."""
    matplotlib.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 80,
            "savefig.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "lines.linewidth": 1.8,
            "legend.frameon": False,
            "svg.hashsalt": "invattn",
        }
    )
    try:  # inside IPython: inline figures as PNG (nbval does not compare PNG bytes)
        from IPython import get_ipython

        shell = get_ipython()
        if shell is not None and "IPKernelApp" in shell.config:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:
        pass


def savefig(fig: plt.Figure, name: str, svg: bool = False, folder: Path | None = None) -> Path:
    """Save ``fig`` as ``<folder>/<name>.png`` (and ``.svg`` if asked) without timestamps or software tags.

    So re-running a lesson that computes the same thing rewrites the same bytes.

    Arguments:
        fig: the figure.
        name: a bare file stem such as ``"01_fixed_point_error"``.
        svg: also save ``<name>.svg``.
        folder: where to save; default :func:`figures_dir`.
    Returns:
        the PNG's path.
    Raises:
        ValueError: when ``name`` is empty, holds a ``/`` or ends in ``.png``/``.svg``.
    """
    if not name or "/" in name or name.endswith((".png", ".svg")):
        raise ValueError(f"name is a bare file stem such as '01_fixed_point_error', got {name!r}")
    folder = figures_dir() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = folder / f"{name}.png"
    fig.savefig(png, metadata={"Software": None}, bbox_inches="tight")
    if svg:
        fig.savefig(folder / f"{name}.svg", metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    return png
