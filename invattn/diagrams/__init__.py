"""Diagrams of the course's core ideas, drawn by code so every one is reproducible and byte-stable.

Each diagram is a function that returns a matplotlib figure, registered under the stem of the file it is saved as,
``NN_diagram_<name>`` (``NN`` the lesson that shows it). A lesson shows one with
``draw_diagram("01_diagram_fixed_point")``,
which saves ``figures/01_diagram_fixed_point.svg`` (no date, a fixed hash salt: the same bytes on every run with
the same matplotlib) and shows the drawing inline. ``python -m invattn.diagrams`` redraws them all.

Nothing here computes a result: a diagram is a drawing of a formula or of a data flow, and every number written in
one is a symbol or a label, never a measurement (measurements are plotted by the lessons).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt

from ..plots import figures_dir, use_lesson_style
from . import attention, attention_block, density, residual, robustness  # noqa: F401  (each registers its diagrams)
from ._draw import DIAGRAMS, diagram

__all__ = ["DIAGRAMS", "diagram", "draw_diagram", "save_diagram", "main"]


def _figure(name: str) -> plt.Figure:
    if name not in DIAGRAMS:
        raise KeyError(f"no diagram named {name!r}; the diagrams are: {', '.join(sorted(DIAGRAMS))}")
    return DIAGRAMS[name]()


def save_diagram(name: str, folder: str | Path | None = None, show: bool = False) -> Path:
    """Draw diagram ``name`` and save it as ``<folder>/<name>.svg``, byte-stable.

    No date or creator in the file and a fixed hash salt for its element ids: the same bytes on every run with the
    same matplotlib.

    Arguments:
        name: a registered diagram, ``NN_diagram_<what>`` (:data:`DIAGRAMS`).
        folder: where to save; default the project's ``figures/`` (:func:`invattn.plots.figures_dir`).
        show: also show the figure inline (else it is closed).
    Returns:
        the SVG's path.
    Raises:
        KeyError: for an unknown name (the message lists the known ones).
    """
    folder = figures_dir() if folder is None else Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.svg"
    with plt.rc_context({"svg.hashsalt": "invattn", "svg.fonttype": "path"}):
        fig = _figure(name)
        fig.savefig(path, metadata={"Date": None, "Creator": None}, bbox_inches="tight")
    if show:
        plt.show()
    else:
        plt.close(fig)
    return path


def draw_diagram(name: str, folder: str | Path | None = None) -> Path:
    """Save diagram ``name`` and show it inline: what a lesson calls (:func:`save_diagram` with ``show=True``).

    Arguments:
        name: a registered diagram, ``NN_diagram_<what>``.
        folder: where to save; default the project's ``figures/``.
    Returns:
        the SVG's path.
    Raises:
        KeyError: for an unknown name.
    """
    return save_diagram(name, folder, show=True)


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.diagrams [FOLDER]``: redraw every diagram into FOLDER (default ``figures/``), in the
    lessons' style, so the files are those the lessons save.

    Arguments:
        argv: the command line's arguments (default ``sys.argv[1:]``): at most one, the folder.
    Raises:
        SystemExit: for an unknown option or more than one folder (argparse's message and usage).
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.diagrams", description="Redraw the course's diagrams.")
    parser.add_argument("folder", nargs="?", type=Path, help="where to write them (default: figures/)")
    folder = parser.parse_args(sys.argv[1:] if argv is None else argv).folder
    with matplotlib.rc_context():  # the lessons' style for these files only, not for the caller's later figures
        use_lesson_style()
        for name in sorted(DIAGRAMS):
            print(save_diagram(name, folder))


if __name__ == "__main__":
    main()
