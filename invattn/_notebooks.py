"""What the course's tools (the runner, the checker, the badges, the book, the compatibility check) share about the
notebooks: which files are lessons, and the types under which Jupyter stores a widget and its state."""

from __future__ import annotations

from pathlib import Path

LESSON_GLOB = "[0-9][0-9]*_*.ipynb"
"""A lesson ``NN_name.ipynb`` or an appendix ``NNa_name.ipynb`` (which sorts after lesson NN)."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
"""The output type of a displayed widget (it names its model by ``model_id``)."""
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
"""The notebook metadata key of the stored widget models."""


def lesson_notebooks(folder: str | Path, only: str | None = None) -> list[Path]:
    """The lessons and appendices in ``folder``, in order; with ``only``, those whose file name starts with it.
    Raises ``ValueError`` naming the lessons there when ``only`` matches none."""
    lessons = sorted(Path(folder).glob(LESSON_GLOB))
    if only is None:
        return lessons
    chosen = [path for path in lessons if path.name.startswith(only)]
    if not chosen:
        names = ", ".join(path.stem for path in lessons) or "none"
        raise ValueError(f"no lesson matches {only!r}; the lessons are: {names}")
    return chosen
