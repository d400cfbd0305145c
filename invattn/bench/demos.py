"""Response time of every control of every demo in the app (``make demo``): the time from a control's new value to
the demo's new summary and figure (state function, drawing and PNG encoding; the browser's drawing is not included).

The app is built as Voilà builds it (:func:`invattn.widgets.demo_app` on the shipped checkpoints); then, demo by demo,
each control is moved to a neighbouring value and back, ``rounds`` times, and the median and the largest time of the
moves are printed. One CPU thread (``torch.set_num_threads(1)``), as a laptop's busy kernel would have.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _neighbour(control):
    """A value next to the control's current one (one step of a slider, the next option of a choice)."""
    options = getattr(control, "options", None)
    if options:
        values = [option[1] if isinstance(option, tuple) else option for option in options]
        index = values.index(control.value)
        return values[index + 1] if index + 1 < len(values) else values[index - 1]
    if hasattr(control, "base"):  # a log slider: one step in the exponent
        exponent = torch.log10(torch.tensor(control.value)).item()
        up = exponent + control.step <= control.max
        return control.base ** (exponent + (control.step if up else -control.step))
    up = control.value + control.step <= control.max
    return control.value + (control.step if up else -control.step)


def response_times(app, rounds: int = 3) -> list[dict]:
    """[{demo, control, median, worst}] in seconds, for every control of every demo of ``app`` (a demo_app Tab)."""
    rows = []
    for title, demo in app.demos.items():
        for name, control in demo.controls.items():
            start, other = control.value, _neighbour(control)
            times = []
            for _ in range(rounds):
                for value in (other, start):
                    began = time.perf_counter()
                    control.value = value  # observers run synchronously: the new state is drawn when this returns
                    times.append(time.perf_counter() - began)
            rows.append(dict(demo=title, control=name, median=statistics.median(times), worst=max(times)))
    return rows


def run(quick: bool = False) -> None:
    from ..widgets import demo_app

    torch.set_num_threads(1)
    began = time.perf_counter()
    app = demo_app(str(CHECKPOINTS))
    print(f"app built (all six demos in their first state) in {time.perf_counter() - began:.1f} s; one thread")
    rows = response_times(app, rounds=1 if quick else 3)
    print(f"{'demo':<26} {'control':<12} {'median s':>9} {'worst s':>8}")
    for row in rows:
        print(f"{row['demo']:<26} {row['control']:<12} {row['median']:>9.3f} {row['worst']:>8.3f}")
    slow = [f"{row['demo']}: {row['control']}" for row in rows if row["median"] > 1.0]
    print(f"controls whose median response is above 1 s: {', '.join(slow) if slow else 'none'}")
