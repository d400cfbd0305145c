"""The set-up itself: the pinned torch/torchvision pair imports and runs on this CPU, and conda users get
the same packages as pip users."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_names_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_names = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["test"]}
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


def test_torch_and_torchvision_pair_runs_on_cpu():
    import torch
    import torchvision

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = {_name(r): r.split("==")[1] for r in project["dependencies"] if "==" in r}
    assert torch.__version__.split("+")[0] == pins["torch"]
    assert torchvision.__version__.split("+")[0] == pins["torchvision"]
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 0.9], [2.0, 2.0, 3.0, 3.0]])
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]  # a compiled torchvision operator ran on the CPU


def test_python3_kernel_is_available():
    from jupyter_client.kernelspec import KernelSpecManager

    assert "python3" in KernelSpecManager().find_kernel_specs()
