"""The package's layering, read from the source with ``ast``: no import cycle among invattn's modules (imports at the
top of a module and inside functions alike), no private (underscore) name imported from another invattn module,
every import pointing down the floors below, and lessons that use only public names.

A violation that exists today outside the files being tidied is listed in a ``KNOWN_*`` set below, with a comment;
each test also fails when a listed violation has gone, so the lists can only shrink."""

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "invattn"

# The floors, lowest first: a module may import only from a floor below its own. Each entry names a unit: a top-level
# module (``lesson``), a subpackage with all its modules (``attention``, ``diagrams``, ``bench``: imports inside one
# subpackage are checked for cycles, not floors), or ``invattn``, the package's face (its ``__init__``), which nothing
# inside the package imports. The floors of ``invattn/__init__.py``'s docstring, each split where its modules import
# one another; the tooling (lessons' set-up, diagrams, runners, checkers) above the library it serves.
FLOORS = (
    ("_validation", "_notebooks"),
    ("_files",),
    ("norms",),
    ("lipschitz", "solvers"),
    ("logdet",),
    ("blocks", "branches"),
    ("coupling",),
    ("attention",),
    ("models", "data", "memory", "plots", "progress"),
    ("classifiers", "distributions"),
    ("train", "toy2d", "lesson", "diagrams"),
    ("ablation",),
    ("pretrained",),
    ("demos",),
    ("invattn", "bench", "kernel", "run_notebooks", "compat", "colab"),
    ("book", "course"),
)


def test_the_package_docstring_states_these_floors():
    import invattn

    chain = " → ".join(", ".join(f"``{module}``" for module in floor) for floor in FLOORS)
    assert chain in " ".join(invattn.__doc__.split()), "invattn/__init__.py's docstring must list FLOORS as they are"


# (importer, imported) module pairs that do not point down today, to be emptied by the modules' owners.
KNOWN_FLOOR_VIOLATIONS: set[tuple[str, str]] = set()

# (importer, imported module, name): private names imported across modules today, to be made public or moved.
KNOWN_PRIVATE_IMPORTS: set[tuple[str, str, str]] = set()

# (lesson file, attribute): private attributes a lesson reads on an object today.
KNOWN_LESSON_PRIVATE_ATTRIBUTES: set[tuple[str, str]] = set()


@dataclass(frozen=True)
class Import:
    importer: str  # the importing module, e.g. "invattn.lesson"
    target: str  # the imported invattn module, e.g. "invattn.plots"
    name: str | None  # the name taken from it (`from .x import name`), None for a module
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _function_lines(tree: ast.AST) -> set[int]:
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            inside.update(range(node.lineno, node.end_lineno + 1))
    return inside


def imports_of(module: str, source: str | None = None) -> list[Import]:
    """Every import of an invattn module in ``module``'s source (its file's, unless ``source`` is given): ``from X
    import a`` counts as an import of ``X.a`` when that is a module, else of ``X`` (taking the name ``a``)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8") if source is None else source)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    inside = _function_lines(tree)
    found = []
    for node in ast.walk(tree):
        in_function = node.lineno in inside if isinstance(node, (ast.Import, ast.ImportFrom)) else False
        if isinstance(node, ast.Import):
            found += [
                Import(module, alias.name, None, node.lineno, in_function)
                for alias in node.names
                if alias.name.split(".")[0] == "invattn"
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != "invattn":
                continue
            for alias in node.names:
                if f"{source}.{alias.name}" in MODULES:
                    found.append(Import(module, f"{source}.{alias.name}", None, node.lineno, in_function))
                else:
                    found.append(Import(module, source, alias.name, node.lineno, in_function))
    return found


IMPORTS = [found for module in MODULES for found in imports_of(module)]


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def floor_of(module: str) -> int:
    for index, floor in enumerate(FLOORS):
        if unit(module) in floor:
            return index
    raise AssertionError(f"{module} is on no floor: add {unit(module)!r} to FLOORS in tests/test_layering.py")


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, or of one that imports itself (Tarjan)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges.get(node, ()):
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_the_cycle_finder_finds_cycles():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"a"}}) == [["a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_imports_are_read_at_the_top_and_inside_functions():
    found = {(i.importer, i.target, i.in_function) for i in IMPORTS}
    assert ("invattn.lesson", "invattn.plots", False) in found
    assert ("invattn.diagrams", "invattn.plots", False) in found
    planted = imports_of("invattn.lesson", "import torch\n\ndef f():\n    from .plots import figures_dir\n")
    assert [(i.target, i.name, i.in_function) for i in planted] == [("invattn.plots", "figures_dir", True)]


def test_no_invattn_import_inside_a_function():
    inner = sorted(f"{i.importer}:{i.line} imports {i.target}" for i in IMPORTS if i.in_function)
    assert not inner, "imports of invattn modules belong at the top of the module:\n" + "\n".join(inner)


def test_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for found in IMPORTS:
        edges.setdefault(found.importer, set()).add(found.target)
    cycles = find_cycles(edges)
    assert not cycles, "import cycles among invattn's modules:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_no_private_name_is_imported_from_another_module():
    private = {
        (i.importer, i.target, i.name)
        for i in IMPORTS
        if i.name and i.name.startswith("_") and not i.name.startswith("__") and i.target != i.importer
    }
    new = sorted(private - KNOWN_PRIVATE_IMPORTS)
    gone = sorted(KNOWN_PRIVATE_IMPORTS - private)
    assert not new, "private names imported across modules (make them public or keep them home):\n" + "\n".join(
        f"{a}: from {b} import {c}" for a, b, c in new
    )
    assert not gone, f"fixed, so remove from KNOWN_PRIVATE_IMPORTS: {gone}"


def test_every_module_is_on_one_floor():
    names = [name for floor in FLOORS for name in floor]
    assert len(names) == len(set(names)), "a unit is on two floors"
    for module in MODULES:
        floor_of(module)
    units = {unit(module) for module in MODULES}
    assert set(names) <= units, f"FLOORS names what is not in the package: {sorted(set(names) - units)}"


def test_imports_point_down_the_floors():
    upward = {
        (i.importer, i.target)
        for i in IMPORTS
        if unit(i.importer) != unit(i.target) and floor_of(i.target) >= floor_of(i.importer)
    }
    new = sorted(upward - KNOWN_FLOOR_VIOLATIONS)
    gone = sorted(KNOWN_FLOOR_VIOLATIONS - upward)
    assert not new, "imports that do not point down the floors (FLOORS in tests/test_layering.py):\n" + "\n".join(
        f"{a} (floor {floor_of(a)}) imports {b} (floor {floor_of(b)})" for a, b in new
    )
    assert not gone, f"fixed, so remove from KNOWN_FLOOR_VIOLATIONS: {gone}"


def _lesson_code(notebook: Path) -> ast.Module:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    source = re.sub(r"(?m)^\s*[%!].*$", "", source)  # IPython magics and shell lines are not Python
    return ast.parse(source)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def lesson_private_uses(tree: ast.Module) -> tuple[list[str], set[str]]:
    """What a lesson's code takes from invattn that is private (imports of ``_name`` or from a ``_module``, and
    ``module._name`` on a name bound to invattn), and the private attributes it reads on anything else."""
    bound, problems, attributes = set(), [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "invattn":
                    bound.add(alias.asname or alias.name.split(".")[0])
                    problems += [f"import {alias.name}" for part in alias.name.split(".") if _private(part)]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "invattn":
            if any(_private(part) for part in node.module.split(".")):
                problems.append(f"from {node.module} import ...")
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private(alias.name):
                    problems.append(f"from {node.module} import {alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                problems.append(ast.unparse(node))
            else:
                attributes.add(node.attr)
    return problems, attributes


def test_the_lesson_reader_sees_private_uses():
    tree = ast.parse("import invattn as ia\nfrom invattn._x import y\nfrom invattn.a import _b\nia.a._c(1)\nm._d\n")
    problems, attributes = lesson_private_uses(tree)
    assert problems == ["from invattn._x import ...", "from invattn.a import _b", "ia.a._c"]
    assert attributes == {"_d"}


LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("notebook", LESSONS, ids=lambda path: path.stem)
def test_lessons_use_only_public_names(notebook):
    problems, attributes = lesson_private_uses(_lesson_code(notebook))
    assert not problems, f"{notebook.name} uses private names of invattn: {problems}"
    known = {name for lesson, name in KNOWN_LESSON_PRIVATE_ATTRIBUTES if lesson == notebook.name}
    assert attributes == known, (
        f"{notebook.name} reads private attributes {sorted(attributes - known)} (make them public); "
        f"KNOWN_LESSON_PRIVATE_ATTRIBUTES is stale for {sorted(known - attributes)}"
    )


def test_the_known_lesson_list_names_lessons():
    names = {path.name for path in LESSONS}
    assert {lesson for lesson, _ in KNOWN_LESSON_PRIVATE_ATTRIBUTES} <= names
