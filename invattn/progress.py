"""Progress bars for the library's long loops (training, the 2-D flow's fit) and the lessons: one tqdm front end that
is a widget in JupyterLab and one plain, byte-stable line per bar when nobody watches."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable
from typing import Any

__all__ = ["PLAIN_PROGRESS_VARIABLE", "progress"]

PLAIN_PROGRESS_VARIABLE = "INVATTN_PLAIN_PROGRESS"
"""The environment variable that, set to a non-empty value, turns :func:`progress` bars into plain text (set by
``python -m invattn.run_notebooks``, the tests and ``python -m invattn.compat`` for the kernels they start)."""


def progress(iterable: Iterable | None = None, **kwargs: Any):
    """A tqdm progress bar over ``iterable``: a widget in JupyterLab, plain text when run headless.

    Headless means ``$INVATTN_PLAIN_PROGRESS`` is set (``make run``/``make test`` set it): the bar then prints one
    line, its final state, when it closes, so a stored output holds one readable line per bar, not one per update,
    without elapsed time or rate (a re-run of an unchanged lesson stores the same bytes).

    Arguments:
        iterable: what to iterate over, or None for a bar advanced by ``update(n)``.
        **kwargs: tqdm's keywords (``total``, ``desc``, ``disable``, ...); given ones win over the headless defaults.
    Returns:
        a ``tqdm`` instance (iterate over it, or call ``update``/``set_postfix``/``close``).

    >>> import io
    >>> with progress(range(3), desc="steps", file=io.StringIO()) as bar:
    ...     total = sum(bar)
    >>> total
    3
    """
    if os.environ.get(PLAIN_PROGRESS_VARIABLE):
        from tqdm.std import tqdm

        class FinalLineOnly(tqdm):
            def close(self) -> None:
                self.delay = 0  # displayed at last: tqdm skips bars that never showed
                super().close()

        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("mininterval", math.inf)
        kwargs.setdefault("delay", math.inf)  # no first line
        kwargs.setdefault("ncols", 80)
        kwargs.setdefault("bar_format", "{l_bar}{bar}| {n_fmt}/{total_fmt}{postfix}")
        return FinalLineOnly(iterable, **kwargs)
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)
