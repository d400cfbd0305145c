"""Response time of every control of every demo in the app (``make demo``): the time from a control's new value to
the demo's new summary and figure (state function, drawing and PNG encoding; the browser's drawing is not included).

The app is built as Voilà builds it (:func:`invattn.demos.demo_app` on the shipped checkpoints); then, demo by demo,
each control is moved over its range (every other option of a choice; one step, the minimum and the maximum of a
slider), back to its start after each move, and the median and the largest time of the moves are printed, with the
value that took longest. ``--quick``: one round instead of three. One CPU thread (``torch.set_num_threads(1)``), as a
laptop's busy kernel would have.
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch

from ..demos import demo_app

CHECKPOINTS = Path(__file__).resolve().parents[2] / "checkpoints"


def _targets(control) -> list:
    """The values a control is moved to: every other option of a choice; a slider's neighbour (one step from where it
    is) and both ends."""
    options = getattr(control, "options", None)
    if options:
        values = [option[1] if isinstance(option, tuple) else option for option in options]
        if not hasattr(control, "readout"):  # a dropdown or toggle buttons: every other option
            return [value for value in values if value != control.value]
        index = values.index(control.value)  # a selection slider: its neighbour and its ends
        candidates = [values[index + 1] if index + 1 < len(values) else values[index - 1], values[0], values[-1]]
    elif hasattr(control, "base"):  # a log slider: min and max are exponents
        exponent = math.log(control.value, control.base)
        step = control.step if exponent + control.step <= control.max + 1e-12 else -control.step
        candidates = [control.base ** (exponent + step), control.base**control.min, control.base**control.max]
    else:
        step = control.step if control.value + control.step <= control.max else -control.step
        candidates = [control.value + step, control.min, control.max]
    targets = []
    for value in candidates:
        if value != control.value and not any(value == t for t in targets):
            targets.append(value)
    return targets


def response_times(app, rounds: int = 3) -> list[dict]:
    """[{demo, control, values, median, worst, worst_value}] in seconds, for every control of every demo of ``app``
    (a :func:`invattn.demos.demo_app` Tab, or anything with ``.demos``): each control is moved to each of its
    targets (:func:`_targets`) and back to its start, ``rounds`` times; only the moves to a target are timed."""
    rows = []
    for title, demo in app.demos.items():
        for name, control in demo.controls.items():
            start, values = control.value, _targets(control)
            times = []
            for _ in range(rounds):
                for value in values:
                    began = time.perf_counter()
                    control.value = value  # observers run synchronously: the new state is drawn when this returns
                    times.append((time.perf_counter() - began, value))
                    control.value = start
            worst = max(times, key=lambda pair: pair[0])
            rows.append(
                dict(
                    demo=title,
                    control=name,
                    values=values,
                    median=statistics.median(t for t, _ in times),
                    worst=worst[0],
                    worst_value=worst[1],
                )
            )
    return rows


def run(quick: bool = False) -> None:
    torch.set_num_threads(1)
    began = time.perf_counter()
    app = demo_app(str(CHECKPOINTS))
    print(f"app built (all six demos in their first state) in {time.perf_counter() - began:.1f} s; one thread")
    rows = response_times(app, rounds=1 if quick else 3)
    print(f"{'demo':<20} {'control':<12} {'median s':>9} {'worst s':>8}  at")
    for row in rows:
        print(
            f"{row['demo']:<20} {row['control']:<12} {row['median']:>9.3f} {row['worst']:>8.3f}  {row['worst_value']!r}"
        )
    slow = [
        f"{row['demo']}: {row['control']} = {row['worst_value']!r} ({row['worst']:.2f} s)"
        for row in rows
        if row["worst"] > 1.0
    ]
    print(f"moves that took longer than 1 s: {'; '.join(slow) if slow else 'none'}")
