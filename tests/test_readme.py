"""README's library examples run as printed, and what their comments claim holds: each ```python block of "The
library" runs in one namespace, in order, and the claims are asserted after the block that makes them."""

import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def library_examples() -> list[str]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## The library\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_the_library_examples_run_and_their_claims_hold(capsys):
    blocks = library_examples()
    assert len(blocks) == 3, "README's library section changed: update this test's claims"
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md (the library, block 1)", "exec"), namespace)
    ia, block, g, x, info = (namespace[k] for k in ("ia", "block", "g", "x", "info"))
    assert info.converged
    assert block.branch_lipschitz_bound() >= ia.estimate_lipschitz(g, x)  # certified Lip(g) ≥ measured
    assert block.lipschitz_bound() == 1.0 + block.branch_lipschitz_bound()
    exec(compile(blocks[1], "README.md (the library, block 2)", "exec"), namespace)
    density, t, flow = namespace["density"], namespace["t"], namespace["flow"]
    assert isinstance(t, torch.distributions.Transform) and bool(torch.isfinite(density.log_prob(x)).all())
    assert torch.allclose(t.inv(t(x)), x, atol=1e-4) and flow is t.block
    exec(compile(blocks[2], "README.md (the library, block 3)", "exec"), namespace)
    g, x, paper = namespace["g"], namespace["x"], namespace["paper"]
    assert g.lipschitz_bound() >= ia.estimate_lipschitz(g, x)  # certified ≥ measured
    assert paper.lipschitz_bound() == float("inf") and paper.bound_reason
    assert capsys.readouterr().out.count("\n") == 5  # every print of the three blocks printed
