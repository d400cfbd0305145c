"""The examples in the package's docstrings run, on every `make test`: a doctest that drifts from the code fails
here. Every module of ``invattn`` is searched; the main entry points carry at least one example each."""

import doctest
import importlib
import pkgutil

import pytest
import torch

import invattn

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(invattn.__path__, "invattn.") if not info.name.endswith("__main__")
)


def _examples(name: str) -> list[doctest.DocTest]:
    # the finder only follows objects defined in the module itself, so each example runs once, where it is written
    return [t for t in doctest.DocTestFinder().find(importlib.import_module(name), name) if t.examples]


@pytest.mark.parametrize("name", [m for m in MODULES if _examples(m)])
def test_docstring_examples_run(name):
    torch.manual_seed(0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _examples(name):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} docstring examples of {name} failed (output above)"
    )


def test_the_main_entry_points_carry_an_example():
    documented = {m for m in MODULES if _examples(m)}
    assert len(documented) >= 1, "no module of invattn carries a docstring example"
