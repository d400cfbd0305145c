"""``python -m invattn.train``: see :mod:`invattn.train.cli`."""

from .cli import main

main()
