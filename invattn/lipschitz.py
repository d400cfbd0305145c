"""Lipschitz-constrained layers and Lipschitz measurement.

* :func:`spectral_norm` registers ``W ← W / max(1, σ̂(W)/c)`` as a :mod:`torch.nn.utils.parametrize`
  parametrization, where σ̂ is the operator norm of the layer's linear map estimated by power iteration
  (for a k×k convolution: the convolution operator at the real input size, not the reshaped kernel).
* :func:`operator_norm` computes that norm exactly (SVD of the dense operator) for tests and lessons.
* :func:`lipschitz_bound` composes certified bounds: Lip(f∘h) ≤ Lip(f)·Lip(h).
* :func:`estimate_lipschitz` measures a lower bound on Lip(fn) to put beside every certified bound.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_coeff, check_positive_int

__all__ = [
    "SpectralNorm",
    "spectral_norm",
    "operator_norm",
    "lipschitz_bound",
    "estimate_lipschitz",
    "LipSwish",
]

# Power iteration run towards convergence (at construction and when a layer is frozen by ``eval()``).
# Convolution spectra have clustered top singular values, so σ̂ typically lands within ~1e-5 of σ;
# matrices (Linear, 1×1 conv) are instead converged exactly by an SVD.
_CONVERGE_TOL = 1e-9
_CONVERGE_MAX_ITER = 200


def _normalize(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm().clamp_min(1e-30)


class SpectralNorm(nn.Module):
    """Parametrization ``W ↦ W / max(1, σ̂/c)``: the layer's operator norm becomes at most ``coeff``.

    σ̂ = uᵀA(W)v with (u, v) the power-iteration vectors of the linear map A(W). The vectors are
    updated (``n_power_iterations`` steps, warm-started) on every access in training mode and frozen in
    eval mode, so that an inverse inverts a fixed function. Switching to eval mode runs the iteration to
    convergence first, so the frozen σ̂ is the operator norm to about 1e-7 relative accuracy.

    ``operator="matrix"`` treats W as an (out × in) matrix (``nn.Linear``; ``nn.Conv2d`` with a 1×1
    kernel and stride 1, whose operator norm equals that matrix's norm). ``operator="conv"`` uses the
    convolution itself on inputs of shape ``(C_in, *input_size)``.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        coeff: float = 0.9,
        n_power_iterations: int = 5,
        operator: str = "matrix",
        input_size: tuple[int, int] | None = None,
        conv_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        self.coeff = check_coeff(coeff)
        self.n_power_iterations = check_positive_int(n_power_iterations, "n_power_iterations")
        if operator not in ("matrix", "conv"):
            raise ValueError(f"operator must be 'matrix' or 'conv', got {operator!r}")
        self.operator = operator
        self.conv_kwargs = dict(conv_kwargs or {})
        generator = torch.Generator(device="cpu").manual_seed(0x5EED)
        if operator == "matrix":
            matrix = weight.detach().reshape(weight.shape[0], -1)
            v = torch.randn(matrix.shape[1], generator=generator, dtype=weight.dtype)
            self.input_size = None
        else:
            if input_size is None:
                raise ValueError(
                    "a k×k convolution's operator norm depends on the input size: pass input_size=(H, W)"
                )
            self.input_size = tuple(int(s) for s in input_size)
            in_channels = weight.shape[1] * self.conv_kwargs.get("groups", 1)
            v = torch.randn(1, in_channels, *self.input_size, generator=generator, dtype=weight.dtype)
        v = _normalize(v).to(weight.device)
        u = _normalize(self._forward_map(weight.detach(), v))
        self.register_buffer("_u", u)
        self.register_buffer("_v", v)
        self.register_buffer("sigma", torch.zeros((), dtype=weight.dtype, device=weight.device))
        self._converge_on_next_access = False
        self._power_iteration(weight.detach(), _CONVERGE_MAX_ITER, _CONVERGE_TOL)

    # A(W)v and its adjoint A(W)ᵀu.
    def _forward_map(self, weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.operator == "matrix":
            return weight.reshape(weight.shape[0], -1) @ v
        return F.conv2d(v, weight, **self.conv_kwargs)

    def _adjoint_map(self, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if self.operator == "matrix":
            return weight.reshape(weight.shape[0], -1).t() @ u
        return self._adjoint_map_batch(weight, u)

    def _adjoint_map_batch(self, weight: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        shape = (u.shape[0], *self._v.shape[1:])
        return torch.nn.grad.conv2d_input(shape, weight, u, **self.conv_kwargs)

    @torch.no_grad()
    def _power_iteration(self, weight: torch.Tensor, max_iter: int, tol: float = 0.0) -> None:
        """``max_iter`` warm-started power-iteration steps; with ``tol``, converge instead (see ``_converge``)."""
        if tol:
            self._converge(weight, max_iter, tol)
            return
        u, v = self._u, self._v
        for _ in range(max_iter):
            v = _normalize(self._adjoint_map(weight, u))
            u = _normalize(self._forward_map(weight, v))
        self._u.copy_(u)
        self._v.copy_(v)
        self.sigma.copy_(torch.dot(self._u.flatten(), self._forward_map(weight, self._v).flatten()))

    @torch.no_grad()
    def _converge(self, weight: torch.Tensor, max_iter: int, tol: float, block: int = 8) -> None:
        """Top singular pair to high accuracy.

        Matrices: an SVD. Convolutions: subspace iteration on AᵀA with ``block`` vectors (one batched
        convolution per step) and a Rayleigh–Ritz step, which converges at rate (σ_{block+1}/σ_1)² instead of
        plain power iteration's (σ_2/σ_1)², so clustered top singular values (common in convolutions) don't stall it.
        """
        if self.operator == "matrix":
            left, _, right = torch.linalg.svd(weight.reshape(weight.shape[0], -1).double(), full_matrices=False)
            self._u.copy_(left[:, 0])
            self._v.copy_(right[0])
        else:
            shape = self._v.shape[1:]
            dim = self._v.numel()
            k = min(block, dim)
            generator = torch.Generator(device="cpu").manual_seed(1)
            basis = torch.randn(k, dim, generator=generator, dtype=weight.dtype).to(weight.device)
            basis[0] = self._v.flatten()  # warm start from the current vector
            basis = torch.linalg.qr(basis.t().double()).Q.t().to(weight.dtype)
            previous = math.inf
            top = basis[0]
            for _ in range(max_iter):
                images = self._forward_map(weight, basis.view(k, *shape))
                gram = self._adjoint_map_batch(weight, images).reshape(k, dim)  # AᵀA applied to the basis
                ritz = (basis.double() @ gram.double().t())
                values, vectors = torch.linalg.eigh(0.5 * (ritz + ritz.t()))
                top = (vectors[:, -1] @ basis.double()).to(weight.dtype)
                sigma = math.sqrt(max(float(values[-1]), 0.0))
                basis = torch.linalg.qr(gram.t().double()).Q.t().to(weight.dtype)
                if abs(sigma - previous) <= tol * max(sigma, 1e-30):
                    break
                previous = sigma
            self._v.copy_(_normalize(top).view_as(self._v))
            self._u.copy_(_normalize(self._forward_map(weight, self._v)))
        self.sigma.copy_(torch.dot(self._u.flatten(), self._forward_map(weight, self._v).flatten()))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        # Never in reduced precision: under autocast a bfloat16 σ̂ could be off by ~1e-2 and the bound with it.
        with torch.autocast(device_type=weight.device.type, enabled=False):
            if self.training:
                self._power_iteration(weight.detach(), self.n_power_iterations)
            elif self._converge_on_next_access:
                self._power_iteration(weight.detach(), _CONVERGE_MAX_ITER, _CONVERGE_TOL)
                self._converge_on_next_access = False
            # Clones: the buffers change in place on the next access while autograd may still hold these.
            u, v = self._u.clone(), self._v.clone()
            sigma = torch.dot(u.flatten(), self._forward_map(weight, v).flatten())
            return weight / torch.clamp(sigma / self.coeff, min=1.0)

    def train(self, mode: bool = True) -> "SpectralNorm":
        if self.training and not mode:
            # Freezing: the next access converges the iteration, so the frozen norm is the one reported.
            self._converge_on_next_access = True
        return super().train(mode)

    def extra_repr(self) -> str:
        size = f", input_size={self.input_size}" if self.input_size else ""
        return f"coeff={self.coeff}, n_power_iterations={self.n_power_iterations}, operator={self.operator}{size}"


def spectral_norm(
    module: nn.Module,
    coeff: float = 0.9,
    n_power_iterations: int = 5,
    input_size: tuple[int, int] | None = None,
    name: str = "weight",
) -> nn.Module:
    """Constrain ``module``'s operator norm to at most ``coeff`` (in (0, 1)) and return the module.

    Works for ``nn.Linear`` and ``nn.Conv2d``. A k×k convolution (or any strided one) needs
    ``input_size=(H, W)``: its norm is that of the convolution on inputs of that size, and the module
    refuses inputs of another size so the bound can't silently stop holding.
    """
    coeff = check_coeff(coeff)
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no tensor attribute {name!r} to normalise")
    if parametrize.is_parametrized(module, name):
        raise ValueError(f"{type(module).__name__}.{name} is already parametrized")
    if isinstance(module, nn.Linear):
        parametrization = SpectralNorm(weight, coeff, n_power_iterations, "matrix")
    elif isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros":
            raise ValueError("only zero padding is supported (padding_mode='zeros')")
        pointwise = module.kernel_size == (1, 1) and module.stride == (1, 1) and module.groups == 1
        if pointwise:
            parametrization = SpectralNorm(weight, coeff, n_power_iterations, "matrix")
        else:
            if input_size is None:
                raise ValueError(
                    f"spectral_norm of a {module.kernel_size[0]}×{module.kernel_size[1]} convolution needs "
                    "input_size=(H, W): the operator norm of a convolution depends on the input size"
                )
            kwargs = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)
            parametrization = SpectralNorm(weight, coeff, n_power_iterations, "conv", input_size, kwargs)
            expected = parametrization.input_size

            def _check_size(mod: nn.Module, args: tuple) -> None:
                if tuple(args[0].shape[-2:]) != expected:
                    raise ValueError(
                        f"this spectral-normalised convolution was built for inputs of size {expected}, "
                        f"got {tuple(args[0].shape[-2:])}; its Lipschitz bound holds only at the size it was built for"
                    )

            module.register_forward_pre_hook(_check_size)
    else:
        raise TypeError(f"spectral_norm supports nn.Linear and nn.Conv2d, got {type(module).__name__}")
    parametrize.register_parametrization(module, name, parametrization)
    return module


def _spectral_parametrization(module: nn.Module) -> SpectralNorm | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations["weight"]:
            if isinstance(p, SpectralNorm):
                return p
    return None


@torch.no_grad()
def operator_norm(module: nn.Module, input_size: tuple[int, int] | None = None, max_dim: int = 8192) -> float:
    """The exact operator norm ‖A‖₂ of a Linear or Conv2d layer's linear part (bias excluded).

    For a convolution it is the largest singular value of the dense matrix of the convolution on inputs
    of size ``input_size`` (zero padding, exactly what the layer computes); ``max_dim`` caps C·H·W.
    """
    weight = module.weight
    if isinstance(module, nn.Linear):
        return float(torch.linalg.matrix_norm(weight.double(), ord=2))
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"operator_norm supports nn.Linear and nn.Conv2d, got {type(module).__name__}")
    if input_size is None:
        found = _spectral_parametrization(module)
        input_size = found.input_size if found is not None else None
    if input_size is None:
        if module.kernel_size == (1, 1) and module.stride == (1, 1) and module.groups == 1:
            return float(torch.linalg.matrix_norm(weight.double().flatten(1), ord=2))
        raise ValueError("pass input_size=(H, W): a convolution's operator norm depends on the input size")
    channels = module.in_channels
    dim = channels * input_size[0] * input_size[1]
    if dim > max_dim:
        raise ValueError(f"the dense operator has {dim} columns (> max_dim={max_dim}); use a smaller input_size")
    basis = torch.eye(dim, dtype=torch.float64, device=weight.device).reshape(dim, channels, *input_size)
    columns = F.conv2d(
        basis, weight.double(), None, module.stride, module.padding, module.dilation, module.groups
    ).reshape(dim, -1)
    return float(torch.linalg.matrix_norm(columns, ord=2))


_ONE_LIPSCHITZ = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity, nn.Softplus, nn.Dropout)


def lipschitz_bound(module: nn.Module) -> float:
    """A certified upper bound on Lip(module) w.r.t. the Euclidean norm, composed layer by layer.

    Known pieces: modules with their own ``lipschitz_bound()``; spectral-normalised Linear/Conv2d
    (σ̂ after normalisation, at most ``coeff``); ``nn.Sequential`` (product); 1-Lipschitz activations
    (ReLU, LeakyReLU with slope ≤ 1, Tanh, ELU with alpha ≤ 1, Softplus, LipSwish). Anything else raises
    ``ValueError`` instead of guessing.
    """
    own = getattr(module, "lipschitz_bound", None)
    if callable(own):
        return float(own())
    if isinstance(module, nn.Sequential):
        bound = 1.0
        for child in module:
            bound *= lipschitz_bound(child)
        return bound
    if isinstance(module, (nn.Linear, nn.Conv2d)):
        found = _spectral_parametrization(module)
        if found is None:
            raise ValueError(
                f"{type(module).__name__} has no spectral-norm constraint, so its Lipschitz constant is not "
                "controlled; wrap it with invattn.spectral_norm(module, coeff)"
            )
        return min(float(found.sigma), found.coeff) if float(found.sigma) > 0 else found.coeff
    if isinstance(module, nn.ELU):
        return max(1.0, float(module.alpha))
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(float(module.negative_slope)))
    if isinstance(module, _ONE_LIPSCHITZ):
        return 1.0
    raise ValueError(f"no known Lipschitz bound for {type(module).__name__}")


class LipSwish(nn.Module):
    """LipSwish(x) = x·sigmoid(βx)/1.1 with learnable β ≥ 0 (Residual Flows): 1-Lipschitz for every β."""

    def __init__(self, beta: float = 1.0) -> None:
        super().__init__()
        # β = softplus(raw) keeps β > 0; Lip(x·sigmoid(βx)) ≤ 1.0998 for all β ≥ 0.
        self.raw_beta = nn.Parameter(torch.tensor(math.log(math.expm1(beta))))

    @property
    def beta(self) -> torch.Tensor:
        return F.softplus(self.raw_beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.beta * x) / 1.1

    def lipschitz_bound(self) -> float:
        return 1.0


def estimate_lipschitz(
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    n_iterations: int = 50,
    pair_steps: int = 100,
    seed: int = 0,
) -> float:
    """Measure a lower bound on Lip(fn) around ``x`` (first dimension = batch of independent samples).

    Two measurements, and the larger is returned:
    1. ‖J_fn(x_b)‖₂ for each sample, by power iteration on JᵀJ with ``torch.func.jvp``/``vjp``;
    2. max over pairs of ‖fn(x_b) − fn(x'_b)‖ / ‖x_b − x'_b‖, with x' found by gradient ascent on that ratio.
    Both are ≤ the true Lipschitz constant, so a certified bound must lie above the returned value.
    """
    check_positive_int(n_iterations, "n_iterations")
    check_positive_int(pair_steps, "pair_steps", minimum=0)
    if isinstance(fn, nn.Module) and any(isinstance(m, SpectralNorm) and m.training for m in fn.modules()):
        raise ValueError(
            "estimate_lipschitz measures a fixed function, but in training mode the spectral-norm power "
            "iteration changes the weights at every call: call .eval() on the module first"
        )
    x = x.detach()
    with torch.no_grad():
        fn(x)  # settles anything deferred to the first call (e.g. a frozen power iteration) outside the transforms
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batch = x.shape[0]

    def per_sample_norm(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(batch, -1).norm(dim=1)

    # 1. Jacobian spectral norm: the Jacobian of a batch-independent fn is block diagonal, so power
    #    iteration normalised per sample finds each block's top singular value.
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
    v = v / per_sample_norm(v).clamp_min(1e-30).view(batch, *[1] * (x.dim() - 1))
    _, vjp_fn = torch.func.vjp(fn, x)
    jac_norm = torch.zeros(batch, dtype=x.dtype, device=x.device)
    for _ in range(n_iterations):
        with warnings.catch_warnings():
            # torch 2.14 registers its jvp decompositions with torch.jit.script on first use and warns
            # about its own deprecated call; nothing in this code can act on it.
            warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*deprecated", category=FutureWarning)
            _, jv = torch.func.jvp(fn, (x,), (v,))
        (jtjv,) = vjp_fn(jv)
        # detached: through trainable parameters these carry history, and each step would keep the last one's graph
        jv, jtjv = jv.detach(), jtjv.detach()
        jac_norm = per_sample_norm(jv)
        v = jtjv / per_sample_norm(jtjv).clamp_min(1e-30).view(batch, *[1] * (x.dim() - 1))
    measured = float(jac_norm.detach().max())

    # 2. Pair search: start from small and large offsets, ascend the difference quotient.
    if pair_steps:
        fx = fn(x).detach()
        scale = per_sample_norm(x).clamp_min(1.0).view(batch, *[1] * (x.dim() - 1))
        for relative in (1e-2, 1.0):
            delta0 = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device)
            delta0 = delta0 / per_sample_norm(delta0).view(batch, *[1] * (x.dim() - 1)) * scale * relative
            delta = delta0.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([delta], lr=0.05 * relative * float(scale.mean()))
            for _ in range(pair_steps):
                ratio = per_sample_norm(fn(x + delta) - fx) / per_sample_norm(delta).clamp_min(1e-30)
                measured = max(measured, float(ratio.detach().max()))
                optimizer.zero_grad()
                (-ratio.sum()).backward()
                optimizer.step()
            with torch.no_grad():
                ratio = per_sample_norm(fn(x + delta) - fx) / per_sample_norm(delta).clamp_min(1e-30)
                measured = max(measured, float(ratio.detach().max()))
    return measured
