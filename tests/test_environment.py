"""The set-up itself: the package states lower bounds and constraints.txt the exact versions `make` installs; the
pinned torch/torchvision pair imports and runs on this CPU; conda users get the same packages as pip users; a fork's
CI workflow runs .ci/run."""

import re
from pathlib import Path

import tomllib
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip_names = {_name(r) for r in project["dependencies"] + extras["course"] + extras["book"] + extras["test"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_names, pip_section = set(), []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section += dep["pip"]
        else:
            conda_names.add(_name(dep))
    conda_names -= {"python", "pip"}
    pip_section_names = {_name(r) for r in pip_section if not r.startswith("-")}
    assert conda_names | pip_section_names == pip_names
    assert not conda_names & pip_section_names, "a package is installed twice"
    assert any(r.startswith("-e .") for r in pip_section), "environment.yml must install the project itself"


def _constraints() -> dict[str, str]:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    return {_name(line): line.split("==")[1].strip() for line in lines if "==" in line and not line.startswith("#")}


def test_package_states_lower_bounds_and_constraints_pin_every_requirement():
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for extra in project["optional-dependencies"].values() for r in extra]
    pins = _constraints()
    for line in requirements:
        requirement = Requirement(line)
        assert not any(spec.operator in ("==", "===", "<", "<=", "~=") for spec in requirement.specifier), (
            f"{line}: the package states lower bounds only; exact versions belong in constraints.txt"
        )
        name = _name(line)
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"constraints.txt's {name}=={pins[name]} breaks {line}"
        )


def test_torch_and_torchvision_pair_runs_on_cpu():
    import torch
    import torchvision

    pins = _constraints()
    assert torch.__version__.split("+")[0] == pins["torch"], "this environment was not installed from constraints.txt"
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda_pip = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert {f"torch=={pins['torch']}", f"torchvision=={pins['torchvision']}"} <= set(conda_pip), (
        "environment.yml installs another torch pair than constraints.txt"
    )
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]  # a compiled torchvision operator ran on the CPU


def test_the_course_kernel_carries_the_reproducible_environment():
    import json

    from jupyter_client.kernelspec import KernelSpecManager

    from invattn.lesson import REPRODUCIBLE_ENV

    spec = json.loads((Path(KernelSpecManager().find_kernel_specs()["python3"]) / "kernel.json").read_text())
    assert spec["env"] == REPRODUCIBLE_ENV, "run `python -m invattn.kernel` (make setup does)"


def test_a_forks_ci_workflow_runs_ci_run():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "ci.yml").read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    (job,) = workflow["jobs"].values()
    assert job["timeout-minutes"] <= 90
    steps = job["steps"]
    assert any(step.get("uses", "").startswith("actions/checkout@") for step in steps)
    assert [step["run"] for step in steps if "run" in step] == [".ci/run"]
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run must be executable"


def test_python3_kernel_is_available():
    from jupyter_client.kernelspec import KernelSpecManager

    assert "python3" in KernelSpecManager().find_kernel_specs()


def test_readme_gives_every_make_targets_commands_and_the_versions():
    """Each Makefile recipe line is a `python -m …` command (or the venv's creation) that README's "Without make"
    table gives, and README's versions are the ones pyproject.toml and constraints.txt hold."""
    readme = (ROOT / "README.md").read_text()
    without_make = readme[readme.index("### Without make") : readme.index("### Colab")]
    recipes = [line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line.startswith("\t")]
    modules = set()
    for line in recipes:
        command = line.lstrip("@")
        if command.startswith(("echo ", "touch ", "test -x")):
            continue
        match = re.match(r"\$\((?:PY|PYTHON)\) (?:-m ([\w.]+)|-c )", command)  # -c: `make clean`'s removal
        assert match, f"a Makefile recipe that is not a plain `python` command: {line}"
        if match.group(1):
            modules.add(match.group(1))
    for module in modules - {"venv"}:
        assert f"-m {module}" in without_make, f"README's 'Without make' does not give `python -m {module}`"
    assert "-m venv" in without_make
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bound = next(r for r in project["dependencies"] if _name(r) == "torch").replace(" ", "")
    pins = _constraints()
    assert f"`{bound}`" in readme, f"README must state the package's bound {bound}"
    assert f"torch {pins['torch']} with torchvision {pins['torchvision']}" in readme
