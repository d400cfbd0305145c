"""House style, checked on every `make test`: the code is formatted and linted by ruff (its rules live in
pyproject.toml's ``[tool.ruff]``), and no function of the package is longer than a reader takes in at once."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80
# the top floors (training, classifiers, demos, the ablation, the trained models) in modules a reader takes in whole
TOP_FLOORS = ("train", "classifiers", "demos", "ablation", "pretrained")
MAX_TOP_FLOOR_MODULE_LINES = 350


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_ruff_passes(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "invattn", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, (
        f"`python -m ruff {' '.join(command)} invattn tests` failed (fix with `python -m ruff format` or "
        f"`python -m ruff check --fix`):\n{result.stdout}{result.stderr}"
    )


def test_no_function_over_the_line_limit():
    long = []
    for path in sorted((ROOT / "invattn").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them):\n" + "\n".join(long)


def test_top_floor_modules_stay_small():
    paths = [p for name in TOP_FLOORS for p in sorted((ROOT / "invattn").glob(f"{name}*")) if p.name != "__pycache__"]
    modules = [m for p in paths for m in ([p] if p.suffix == ".py" else sorted(p.rglob("*.py")))]
    assert len(modules) > len(TOP_FLOORS)
    large = [
        f"{m.relative_to(ROOT)} ({n} lines)"
        for m in modules
        if (n := len(m.read_text().splitlines())) > MAX_TOP_FLOOR_MODULE_LINES
    ]
    assert not large, f"top-floor modules over {MAX_TOP_FLOOR_MODULE_LINES} lines (split them):\n" + "\n".join(large)
