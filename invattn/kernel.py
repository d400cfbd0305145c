"""The course's Jupyter kernel: Python in this environment, started with :data:`invattn.lesson.REPRODUCIBLE_ENV`
(one CPU thread, the same vector instructions on every x86 machine), so a lesson run in JupyterLab, by papermill or
in the demo app computes the stored numbers. ``python -m invattn.kernel`` installs it as ``python3`` into this
environment (``sys.prefix``), replacing the plain one; ``make setup`` runs it."""

from __future__ import annotations

import argparse
import sys

from ipykernel.kernelspec import install

from .lesson import REPRODUCIBLE_ENV

__all__ = ["install_kernel", "main"]


def install_kernel(prefix: str = sys.prefix, name: str = "python3") -> str:
    """Install the kernel spec ``name`` under ``prefix`` with :data:`invattn.lesson.REPRODUCIBLE_ENV` as its env.

    Arguments:
        prefix: the environment to install into (default: this one, ``sys.prefix``).
        name: the kernel's name (default ``"python3"``, replacing the plain one); shown as "Python 3 (invattn)".
    Returns:
        the folder the kernel spec was written to.
    """
    return install(kernel_name=name, display_name="Python 3 (invattn)", prefix=prefix, env=dict(REPRODUCIBLE_ENV))


def main(argv: list[str] | None = None) -> None:
    """``python -m invattn.kernel``: install the course's kernel into this environment and say where.

    Arguments:
        argv: the command-line arguments (None: ``sys.argv[1:]``); the command takes none but ``--help``.
    """
    parser = argparse.ArgumentParser(prog="python -m invattn.kernel", description=__doc__)
    parser.parse_args(sys.argv[1:] if argv is None else argv)
    print(f"kernel 'python3' (invattn) installed in {install_kernel()}")


if __name__ == "__main__":
    main()
