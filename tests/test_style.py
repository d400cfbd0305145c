"""House style, checked on every `make test`: the code is formatted and linted by ruff (its rules live in
pyproject.toml's ``[tool.ruff]``), and no function of the package is longer than a reader takes in at once."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 80


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
