"""Every public callable of the package documents itself in one form: a one-line summary, then ``Arguments:`` for
whatever it takes and ``Returns:`` for whatever it gives back (``Raises:`` where it refuses input), so a reader finds
shapes, units and errors in the same place everywhere. Public: listed in its module's ``__all__``."""

import importlib
import inspect
import pkgutil

import pytest

import invattn

MODULES = sorted(
    info.name for info in pkgutil.walk_packages(invattn.__path__, "invattn.") if not info.name.endswith("__main__")
)


def public_callables() -> list[tuple[str, object]]:
    """Every callable some module of the package names in its ``__all__``, once, under the module that defines it
    (a package re-exporting its modules' names does not hide them)."""
    found = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attribute in getattr(module, "__all__", ()):
            obj = getattr(module, attribute, None)
            home = getattr(obj, "__module__", None) or ""
            if callable(obj) and home.startswith("invattn") and hasattr(obj, "__qualname__"):
                found.setdefault(f"{home}.{obj.__qualname__}", obj)
    return sorted(found.items())


def _takes_arguments(obj) -> bool:
    try:
        parameters = inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False
    return any(p not in ("self", "cls") for p in parameters)


def _gives_back(obj) -> bool:
    if inspect.isclass(obj):
        return False
    annotation = inspect.signature(obj).return_annotation
    return annotation not in (None, "None", inspect.Signature.empty)


def missing_sections(obj) -> list[str]:
    """The sections ``obj``'s docstring lacks (empty when it is complete)."""
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return [] if inspect.getdoc(obj) else ["a docstring"]
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj) and "__init__" in vars(obj):
        doc += "\n" + (inspect.getdoc(obj.__init__) or "")
    missing = [] if doc.strip() else ["a docstring"]
    if _takes_arguments(obj) and "Arguments:" not in doc:
        missing.append("Arguments:")
    if _gives_back(obj) and "Returns:" not in doc:
        missing.append("Returns:")
    return missing


def test_the_checker_sees_a_missing_section():
    def documented(x: int) -> int:
        """Twice x.

        Arguments:
            x: any integer.
        Returns:
            2x.
        """
        return 2 * x

    def bare(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert missing_sections(documented) == []
    assert missing_sections(bare) == ["Arguments:", "Returns:"]
    assert len(public_callables()) > 100


@pytest.mark.parametrize("module", MODULES)
def test_public_callables_document_arguments_and_returns(module):
    lacking = [
        f"{name}: {', '.join(missing_sections(obj))}"
        for name, obj in public_callables()
        if name.rpartition(".")[0] == module and missing_sections(obj)
    ]
    assert not lacking, "public callables whose docstrings lack sections:\n" + "\n".join(lacking)
