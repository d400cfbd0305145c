"""`python -m invattn.compat` without installing anything: its oldest pair is pyproject's lower bound, every option
parses and shows in the plan, and the tests it runs (marked compat) cover the core library."""

import ast
import re
from pathlib import Path

import pytest
import tomllib

from invattn import compat

ROOT = Path(__file__).resolve().parent.parent


def _lower_bound(name: str) -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = [r for r in project["dependencies"] if re.split(r"[<>=!~ ]", r, maxsplit=1)[0] == name]
    match = re.fullmatch(rf"{name}\s*>=\s*([\w.]+)", requirement)
    assert match, f"pyproject must state {name} as a lower bound only (`{name}>=…`), got {requirement!r}"
    return match.group(1)


def test_the_oldest_pair_is_pyprojects_lower_bound():
    # 2.8 and 2.8.0 are the same release
    assert compat.release(compat.OLDEST_PAIR.torch) == compat.release(_lower_bound("torch"))
    assert compat.release(compat.OLDEST_PAIR.torchvision) == compat.release(_lower_bound("torchvision"))


def test_without_options_the_plan_is_oldest_newest_and_colab_like(capsys, tmp_path):
    assert compat.main(["--plan", "--folder", str(tmp_path)]) == 0
    plan = capsys.readouterr().out
    oldest = compat.OLDEST_PAIR
    assert f"pip install torch=={oldest.torch} torchvision=={oldest.torchvision}" in plan
    assert "newest:" in plan and "pip install --dry-run torch torchvision" in plan
    assert "colab-like:" in plan and "its install cell installs invattn" in plan
    assert str(tmp_path / oldest.name) in plan and "pytest -m compat" in plan
    assert "01_" in plan  # the default lesson


def test_every_option_reaches_the_plan(capsys, tmp_path):
    argv = [
        "--pair",
        "2.9.1",
        "0.24.1",
        "--pair",
        "2.10.0",
        "0.25.0",
        "--colab-like",
        "--folder",
        str(tmp_path / "envs"),
        "--lesson",
        "03",
        "--plan",
    ]
    args = compat.parse_args(argv)
    assert args.pair == [compat.Pair("2.9.1", "0.24.1"), compat.Pair("2.10.0", "0.25.0")]
    assert args.colab_like and args.plan and args.folder == tmp_path / "envs" and args.lesson.name.startswith("03_")
    assert [c.label for c in compat.planned_checks(args.pair, args.colab_like)] == ["given", "given", "colab-like"]
    assert compat.main(argv) == 0
    plan = capsys.readouterr().out
    assert "torch==2.9.1 torchvision==0.24.1" in plan and "torch==2.10.0 torchvision==0.25.0" in plan
    assert "colab-like" in plan and str(tmp_path / "envs" / "colab-like") in plan
    assert "newest" not in plan and f"torch=={compat.OLDEST_PAIR.torch} " not in plan  # given pairs replace both
    assert "03_" in plan and "01_" not in plan


def test_colab_like_alone_is_the_only_check():
    assert [c.label for c in compat.planned_checks([], colab_like=True)] == ["colab-like"]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--pair", "2.6.0", "latest"], "not a version number"),
        (["--pair", "2.6.0"], "expected 2 arguments"),
        (["--lesson", "99"], "no lesson"),
        (["--pair", "2.7.0", "0.23.0"], "below the package's lower bound"),
        (["--pair", "2.8.0", "0.22.0"], "torchvision 0.22.0 is below"),
        (["--folder", __file__], "is a file"),
    ],
)
def test_bad_options_are_refused_with_the_reason(argv, says, capsys):
    with pytest.raises(SystemExit) as caught:
        compat.parse_args(argv)
    assert caught.value.code == 2 and says in capsys.readouterr().err


def test_the_table_names_each_failure():
    results = [
        compat.Result("oldest", "2.6.0", "0.21.0", "2.4.6", 200.0, 120, 0, True, 300.0),
        compat.Result("newest", "9.9.0", "9.9.0", error="installing torch failed (exit status 1)"),
    ]
    text = compat.table(results)
    assert text.splitlines()[0].split()[:3] == ["check", "torch", "torchvision"]
    assert "120/0" in text and "newest (torch 9.9.0, torchvision 9.9.0) failed: installing torch failed" in text


def _compat_tests() -> dict[str, list[str]]:
    """Per test file, the test functions decorated with @pytest.mark.compat."""
    found = {}
    for path in sorted((ROOT / "tests").glob("test_*.py")):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d).removesuffix("()") == "pytest.mark.compat" for d in node.decorator_list
            ):
                found.setdefault(path.name, []).append(node.name)
    return found


def test_the_compat_subset_covers_the_core_library():
    marked = _compat_tests()
    assert sum(map(len, marked.values())) >= 30, marked
    # the test files that exercise each floor of the library (the module named first)
    covers = {
        "norms": "test_certificates.py",
        "lipschitz": "test_lipschitz.py",
        "solvers": "test_tolerances.py",
        "blocks": "test_blocks.py",
        "logdet": "test_logdet.py",
        "attention": "test_attention.py",
        "train": "test_train.py",
        "_files (weights_only loading)": "test_faults.py",
        "data": "test_data.py",
    }
    for module, test_file in covers.items():
        assert marked.get(test_file), f"no test of {module} ({test_file}) is marked compat"
    assert any("save_and_load" in name for name in marked["test_certificates.py"])
    assert any("refusal" in name for name in marked["test_faults.py"])  # weights_only refuses pickled code
