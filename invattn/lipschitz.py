"""Lipschitz-constrained layers and Lipschitz measurement.

* :func:`spectral_norm` registers ``W ← s·W``, s = c/max(c, σ_up(W)) (with a rounding margin), as a
  :mod:`torch.nn.utils.parametrize` parametrization, where σ_up is a **certified upper bound** on the operator
  norm of the layer's linear map (:mod:`invattn.norms`: exact for matrices, the DFT bound for a k×k convolution
  at its real input size). It is computed from the weights in use at every evaluation, in training and in eval
  mode alike, so ‖layer‖ ≤ c holds for the function actually evaluated after any change of the weights.
* :func:`operator_norm` computes a layer's norm exactly (SVD of the dense operator) for tests and lessons;
  :func:`power_iteration_norm` is the classic estimate, a lower bound that cannot certify.
* :func:`lipschitz_bound` composes certified bounds: Lip(f∘h) ≤ Lip(f)·Lip(h).
* :func:`estimate_lipschitz` measures a lower bound on Lip(fn) to put beside every certified bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_coeff, check_finite, check_positive_float, check_positive_int, unwrap_functorch
from .norms import (
    ConvGeometry,
    NormCertificate,
    certify_operator_norm,
    layer_geometry,
    per_sample_norm,
    unit_roundoff,
)

__all__ = [
    "SpectralNorm",
    "spectral_norm",
    "operator_norm",
    "power_iteration_norm",
    "lipschitz_bound",
    "estimate_lipschitz",
    "search_lipschitz",
    "LipschitzSearch",
    "ascend_quotient",
    "LipSwish",
]


def _plain(weight: torch.Tensor) -> torch.Tensor:
    """The tensor under torch.func's gradient/jvp wrappers (same values); refuses weights batched by vmap."""
    plain, batched = unwrap_functorch(weight)
    if batched:
        raise ValueError(
            "torch.func.vmap over the weights of a spectral-normalised layer is not supported: each weight "
            "needs its own certificate; vmap over the inputs instead"
        )
    return plain


class SpectralNorm(nn.Module):
    """Parametrization ``W ↦ fl(s·W)`` with ``s = c(1 − 2u)/max(c, σ_up + 2u·N_abs)``: ‖A(fl(s·W))‖₂ ≤ c, certified.

    σ_up ≥ ‖A(W)‖₂ is the certified bound of :func:`invattn.norms.certify_operator_norm` for the weights passed
    in, u the unit roundoff of their dtype (raised by 2⁻⁵⁰ to cover the float64 product rounded once more) and
    N_abs ≥ ‖A(|W|)‖₂. The product s·W is formed in float64 and rounded once to the weights' dtype, so each
    entry is s·W_ij(1 + δ_ij) + ε_ij with |δ_ij| ≤ u and |ε_ij| ≤ η, η half the dtype's smallest subnormal (the
    absolute error of rounding in the subnormal range). Hence ‖A(fl(sW))‖ ≤ s(‖A(W)‖ + u·‖A(|W|)‖) + η·K, with
    K = k_h·k_w·√(C_out·C_in/groups) ≥ the norm of the layer whose every weight is 1, and
    s(σ_up + u·N_abs) ≤ c(1 − 2u)(σ_up + u·N_abs)/(σ_up + 2u·N_abs) ≤ c(1 − 2u), so the total is ≤ c as long as
    η·K ≤ u·c, which is checked (it fails only for float16 layers with millions of weights: a ``ValueError``).

    The bound is recomputed whenever the weights differ from those it was computed for (compared by value, so an
    optimiser step, ``load_state_dict``, an EMA copy, a write through ``.data`` or ``.to(dtype)`` are all seen),
    in training and eval mode alike: there is no power-iteration state that can lag. Autograd differentiates
    s through ⟨D, W⟩, D = ∂σ_max/∂W at the maximising frequency. The guarantee is for the layer evaluated in
    its weights' dtype: under ``torch.autocast`` the convolution rounds s·W to bfloat16/float16, which it does not
    cover. :func:`spectral_norm` registers it on a layer; its forward maps the raw weight W to fl(s·W), same shape.

    Arguments:
        coeff: c, the certified ceiling of the layer's operator norm, in (0, 1) (default 0.9).
        geometry: the :class:`~invattn.norms.ConvGeometry` of the layer (:func:`invattn.norms.layer_geometry`);
            None for a plain matrix (``ConvGeometry(torus=(1, 1))``).
    Raises:
        ValueError: a ``coeff`` outside (0, 1); when evaluated, a dtype too coarse for the margin (above).
    """

    def __init__(self, coeff: float = 0.9, geometry: ConvGeometry | None = None) -> None:
        super().__init__()
        self.coeff = check_coeff(coeff)
        self.geometry = geometry if geometry is not None else ConvGeometry(torus=(1, 1))
        self._cache: tuple[torch.Tensor, NormCertificate] | None = None
        self._frozen: torch.Tensor | None = None  # see freeze()

    @property
    def input_size(self) -> tuple[int, int] | None:
        return self.geometry.input_size

    def certificate(self, weight: torch.Tensor, with_direction: bool = False) -> NormCertificate:
        """The :class:`~invattn.norms.NormCertificate` of ``weight`` (the unconstrained tensor), cached by value."""
        plain = _plain(weight)
        cached = self._cache
        if (
            cached is not None
            and cached[0].dtype == plain.dtype
            and cached[0].device == plain.device
            and cached[0].shape == plain.shape
            and (not with_direction or cached[1].direction is not None)
            and torch.equal(cached[0], plain.detach())
        ):
            return cached[1]
        # No warm start from the last weights' certificate: a Lanczos start changes the candidate it proves, so the
        # certificate must be a function of the weights alone for a resumed run (which starts without one) to
        # recompute exactly the certificates of an uninterrupted run.
        # Outside torch.func's transforms: inside one, even ops on the unwrapped weights return wrapped tensors, and
        # a cache holding those outlives the transform (copy.deepcopy of the layer then fails).
        with torch._C._DisableFuncTorch():
            certificate = certify_operator_norm(plain, self.geometry, with_direction)
            self._cache = (plain.detach().clone(), certificate)
        return certificate

    def _rounding(self, weight: torch.Tensor) -> tuple[float, float]:
        """(u, η·K) for weights of this shape and dtype (class docstring); raises if η·K > u·c."""
        u = unit_roundoff(weight.dtype)
        if weight.dtype != torch.float64:
            u *= 1 + 2.0**-50  # the float64 product s·W, rounded to float64 before the dtype
        eta = torch.finfo(weight.dtype).smallest_normal * unit_roundoff(weight.dtype)
        shape = weight.shape
        taps = math.prod(shape[2:]) if weight.dim() > 2 else 1
        absolute = eta * taps * math.sqrt(shape[0] * shape[1])
        if absolute > u * self.coeff:
            raise ValueError(
                f"{weight.dtype} is too coarse to certify a layer of shape {tuple(shape)}: rounding its weights in the "
                "subnormal range could add more than the certificate's margin; use float32 or float64"
            )
        return u, absolute

    def _scale(self, certificate: NormCertificate, u: float) -> float:
        """s in float64 (class docstring)."""
        return self.coeff * (1 - 2 * u) / max(self.coeff, certificate.sigma + 2 * u * certificate.abs_norm)

    def freeze(self, effective: torch.Tensor) -> None:
        """Return ``effective`` (cast to the weights' dtype) from now on instead of normalising: used only on a
        private float64 copy of a block that must evaluate the *same* weights as the original
        (:meth:`invattn.InvertibleResidual.inverse` measuring rounding). Not part of any certified model."""
        self._frozen = effective.detach()

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self._frozen is not None:
            return self._frozen.to(weight.dtype)
        # Never in reduced precision: the scale and its margin are computed in float64.
        with torch.autocast(device_type=weight.device.type, enabled=False):
            differentiate = torch.is_grad_enabled() and weight.requires_grad
            certificate = self.certificate(weight, with_direction=differentiate)
            u, _ = self._rounding(weight)
            sigma = torch.tensor(
                certificate.sigma + 2 * u * certificate.abs_norm, dtype=torch.float64, device=weight.device
            )
            if differentiate:
                # value: σ_up exactly; gradient: ∂σ_max/∂W = D
                inner = (weight.to(torch.float64) * certificate.direction).sum()
                sigma = sigma + (inner - inner.detach())
            scale = self.coeff * (1 - 2 * u) / torch.clamp(sigma, min=self.coeff)
            return (weight.to(torch.float64) * scale).to(weight.dtype)  # one rounding of the exact-ish product

    @torch.no_grad()
    def lipschitz_bound(self, weight: torch.Tensor) -> float:
        """Certified ‖A(fl(s·W))‖₂ ≤ s·(σ_up + u·N_abs) + η·K ≤ coeff for the weights ``forward(weight)`` returns."""
        certificate = self.certificate(weight)
        u, absolute = self._rounding(weight)
        bound = self._scale(certificate, u) * (certificate.sigma + u * certificate.abs_norm) + absolute
        # rounded up past this float64 expression's own rounding; the proof caps the true value at coeff
        return min(bound * (1 + 2.0**-50), self.coeff)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D102
        # _u, _v and sigma hold a power-iteration spectral norm's state, which this certified one does not use.
        for name in ("_u", "_v", "sigma"):
            state_dict.pop(prefix + name, None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        size = f", input_size={self.geometry.input_size}" if self.geometry.input_size else ""
        torus = f", torus={self.geometry.torus}" if self.geometry.torus != (1, 1) else ""
        return f"coeff={self.coeff}{size}{torus}"


def spectral_norm(
    module: nn.Module,
    coeff: float = 0.9,
    input_size: tuple[int, int] | None = None,
    name: str = "weight",
) -> nn.Module:
    """Constrain ``module``'s operator norm to ‖A(W)‖₂ ≤ ``coeff``, certified (:class:`SpectralNorm`: W ← s·W).

    Works for ``nn.Linear`` and ``nn.Conv2d`` (any kernel, stride, dilation, groups, ``padding`` including
    ``"same"``/``"valid"``, ``padding_mode`` ``"zeros"`` or ``"circular"``). A k×k or circular convolution
    needs ``input_size=(H, W)``: its norm is that of the convolution on inputs of that size, and the module
    refuses inputs of another size (``ValueError`` at the call) so the bound can't silently stop holding.

    Arguments:
        module: the ``nn.Linear`` or ``nn.Conv2d`` to constrain (changed in place).
        coeff: the ceiling c, in (0, 1) (default 0.9).
        input_size: (H, W) of the convolution's inputs; needed for a k×k or circular convolution, ignored by a
            Linear.
        name: the weight attribute to parametrize (default ``"weight"``).
    Returns:
        ``module`` itself, its ``name`` now parametrized (``lipschitz_bound(module)`` ≤ coeff, certified) and its
        inputs checked for finiteness and size on every call.
    Raises:
        ValueError: a ``coeff`` outside (0, 1); a weight already parametrized; a k×k convolution without
            ``input_size``; a configuration without a certified bound (``padding_mode`` ``"reflect"``/
            ``"replicate"``), naming the option.
        TypeError: a module that is not ``nn.Linear``/``nn.Conv2d``, or has no tensor attribute ``name``.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> layer = spectral_norm(nn.Linear(4, 3), coeff=0.5)
    >>> exact, bound = operator_norm(layer), lipschitz_bound(layer)  # SVD of the weight in use vs the certificate
    >>> print(exact <= bound <= 0.5, round(exact, 4), round(bound, 4))
    True 0.5 0.5
    """
    coeff = check_coeff(coeff)
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{type(module).__name__} has no tensor attribute {name!r} to normalise")
    if parametrize.is_parametrized(module, name):
        raise ValueError(f"{type(module).__name__}.{name} is already parametrized")
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise TypeError(f"spectral_norm supports nn.Linear and nn.Conv2d, got {type(module).__name__}")
    if isinstance(module, nn.Conv2d) and input_size is None and module.kernel_size != (1, 1):
        raise ValueError(
            f"spectral_norm of a {module.kernel_size[0]}×{module.kernel_size[1]} convolution needs "
            "input_size=(H, W): the operator norm of a convolution depends on the input size"
        )
    geometry = layer_geometry(module, input_size)
    expected = geometry.input_size

    def _check_input(mod: nn.Module, args: tuple, kwargs: dict) -> None:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor):
            return  # the layer's own forward reports a missing input
        check_finite(x, "input")
        if expected is not None and tuple(x.shape[-2:]) != expected:
            raise ValueError(
                f"this spectral-normalised convolution was built for inputs of size {expected}, "
                f"got {tuple(x.shape[-2:])}; its Lipschitz bound holds only at the size it was built for"
            )

    module.register_forward_pre_hook(_check_input, with_kwargs=True)
    parametrize.register_parametrization(module, name, SpectralNorm(coeff, geometry))
    return module


def _spectral_parametrization(module: nn.Module) -> SpectralNorm | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations["weight"]:
            if isinstance(p, SpectralNorm):
                return p
    return None


def _linear_map(module: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    if isinstance(module, nn.Linear):
        return lambda x: F.linear(x, module.weight)
    return lambda x: module._conv_forward(x, module.weight, None)


def _input_shape(module: nn.Module, input_size: tuple[int, int] | None) -> tuple[int, ...]:
    if isinstance(module, nn.Linear):
        return (module.in_features,)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"operator norms are for nn.Linear and nn.Conv2d, got {type(module).__name__}")
    if input_size is None:
        found = _spectral_parametrization(module)
        input_size = found.input_size if found is not None else None
    if input_size is None:
        if module.kernel_size == (1, 1) and module.padding_mode == "zeros":
            input_size = (1, 1)  # a pointwise convolution's norm is its matrix's, at every size
        else:
            raise ValueError("pass input_size=(H, W): a convolution's operator norm depends on the input size")
    return (module.in_channels, *(int(s) for s in input_size))


@torch.no_grad()
def operator_norm(module: nn.Module, input_size: tuple[int, int] | None = None, max_dim: int = 8192) -> float:
    """The exact operator norm ‖A‖₂ of a Linear or Conv2d layer's linear part (bias excluded), in float64.

    For a convolution: the largest singular value of the dense matrix of the layer's own convolution (its
    padding and padding mode included) on inputs of size ``input_size`` (H, W). For a spectral-normalised layer
    this is the norm of the weight it uses.

    Arguments:
        module: an ``nn.Linear`` or ``nn.Conv2d`` (spectral-normalised or not).
        input_size: (H, W) of a convolution's inputs; by default the size a spectral-normalised layer was built
            for ((1, 1) for a zero-padded 1×1 convolution, whose norm is the same at every size).
        max_dim: the largest dense operator allowed, in columns C·H·W (the SVD is O(dim³)).
    Returns:
        σ_max(A) as a Python float (computed in float64).
    Raises:
        ValueError: without a known input size, or when C·H·W > ``max_dim``.
        TypeError: a module that is not ``nn.Linear``/``nn.Conv2d``.
    """
    shape = _input_shape(module, input_size)
    dim = math.prod(shape)
    if dim > max_dim:
        raise ValueError(f"the dense operator has {dim} columns (> max_dim={max_dim}); use a smaller input_size")
    original = module.weight
    basis = torch.eye(dim, dtype=torch.float64, device=original.device).reshape(dim, *shape)
    weight = original.double()
    if isinstance(module, nn.Linear):
        columns = F.linear(basis, weight)
    else:
        columns = module._conv_forward(basis, weight, None)
    return float(torch.linalg.matrix_norm(columns.reshape(dim, -1), ord=2))


@torch.no_grad()
def power_iteration_norm(
    module: nn.Module, n_iterations: int, input_size: tuple[int, int] | None = None, seed: int = 0
) -> float:
    """σ̂ = ‖A v_n‖ after ``n_iterations`` power-iteration steps on AᵀA from a random unit v₀.

    Since ‖Av‖ ≤ σ_max for every unit v, σ̂ is a **lower** bound on the operator norm and converges to it
    from below: the classic spectral normalisation (Miyato et al., 2018; i-ResNet) divides by it, which is why
    its layers can exceed c. Shown here for comparison, never used as a certificate.

    Arguments:
        module: an ``nn.Linear`` or ``nn.Conv2d`` (bias excluded), evaluated in its weights' dtype.
        n_iterations: power-iteration steps, ≥ 0 (0 gives ‖A v₀‖).
        input_size: (H, W) of a convolution's inputs, as for :func:`operator_norm`.
        seed: seeds v₀ (a CPU generator).
    Returns:
        σ̂ ≤ ‖A‖₂, a Python float.
    Raises:
        ValueError: a negative ``n_iterations``; a convolution without a known input size.
        TypeError: a non-integer ``n_iterations``; a module that is not ``nn.Linear``/``nn.Conv2d``.
    """
    check_positive_int(n_iterations, "n_iterations", minimum=0)
    shape = _input_shape(module, input_size)
    apply = _linear_map(module)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn((1, *shape), generator=generator, dtype=module.weight.dtype).to(module.weight.device)
    v = v / v.norm()
    for _ in range(n_iterations):
        with torch.enable_grad():
            probe = v.detach().requires_grad_(True)
            image = apply(probe)
            (adjoint,) = torch.autograd.grad(image, probe, image.detach())  # AᵀA v
        v = adjoint / adjoint.norm().clamp_min(1e-30)
    return float(apply(v).norm())


_ONE_LIPSCHITZ = (nn.ReLU, nn.LeakyReLU, nn.Tanh, nn.Identity, nn.Softplus)


def lipschitz_bound(module: nn.Module) -> float:
    """A certified upper bound on Lip(module) (Euclidean norm), composed layer by layer: Lip(f∘h) ≤ Lip(f)·Lip(h).

    Known pieces: modules with their own ``lipschitz_bound()``; spectral-normalised Linear/Conv2d
    (the certified norm of the weights they use now, at most ``coeff``, in any mode); ``nn.Sequential`` (product);
    1-Lipschitz activations (ReLU, LeakyReLU with slope ≤ 1, Tanh, ELU with alpha ≤ 1, Softplus, LipSwish; a larger
    slope or alpha gives that value); dropout (1/(1 − p) in training mode, 1 in eval mode); an invertible residual
    block x + g(x) (1 + Lip(g)).

    Arguments:
        module: the network to bound.
    Returns:
        L ≥ Lip(module), a Python float (dimensionless: output units per input unit).
    Raises:
        ValueError: anything else, including an unconstrained Linear/Conv2d or a weight with parametrizations
            besides the spectral norm, instead of guessing.

    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> net = nn.Sequential(spectral_norm(nn.Linear(4, 4), 0.9), nn.ReLU(), spectral_norm(nn.Linear(4, 2), 0.5))
    >>> exact = operator_norm(net[0]) * operator_norm(net[2])  # the product of the exact layer norms
    >>> print(exact <= lipschitz_bound(net) <= 0.9 * 0.5, round(lipschitz_bound(net), 4), round(exact, 4))
    True 0.3447 0.3447
    """
    own = getattr(module, "lipschitz_bound", None)
    if callable(own):  # the module's own map, e.g. 1 + Lip(g) for a residual block x + g(x)
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
        chain = list(module.parametrizations.weight)
        if len(chain) != 1:
            raise ValueError(
                f"{type(module).__name__}.weight has parametrizations besides the spectral norm "
                f"({', '.join(type(p).__name__ for p in chain)}): the certificate covers SpectralNorm alone"
            )
        return found.lipschitz_bound(module.parametrizations.weight.original)
    if isinstance(module, nn.ELU):
        return max(1.0, float(module.alpha))
    if isinstance(module, nn.LeakyReLU):
        return max(1.0, abs(float(module.negative_slope)))
    if isinstance(module, _ONE_LIPSCHITZ):
        return 1.0
    if isinstance(module, nn.modules.dropout._DropoutNd):  # training mode: kept entries scaled by 1/(1 − p)
        return 1.0 / (1.0 - module.p) if module.training and module.p < 1 else (0.0 if module.training else 1.0)
    raise ValueError(f"no known Lipschitz bound for {type(module).__name__}")


class LipSwish(nn.Module):
    """LipSwish(x) = x·sigmoid(βx)/1.1, learnable β ≥ 0 (Residual Flows, Chen et al., 2019): 1-Lipschitz for every β.

    Elementwise, any shape to the same shape; β = softplus(raw_beta) is stored through its inverse.

    Arguments:
        beta: the initial β > 0 (default 1.0).
    """

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
    1. ‖J_fn(x_b)‖₂ for each sample, by ``n_iterations`` steps of power iteration on JᵀJ with
       ``torch.func.jvp``/``vjp``;
    2. max over pairs of ‖fn(x_b) − fn(x'_b)‖ / ‖x_b − x'_b‖, x' = x + δ with δ found by ``pair_steps`` Adam steps
       of :func:`ascend_quotient` (the ascent :func:`search_lipschitz` uses too) from a small and a large start.
    Both are ≤ the true Lipschitz constant, so a certified bound must lie above the returned value.

    Arguments:
        fn: maps [B, ...] to [B, ...] sample by sample.
        x: the points [B, ...] (any float dtype; float64 measures best).
        n_iterations: power-iteration steps (≥ 1); pair_steps: Adam steps per pair start (0: no pair search).
        seed: seeds the random starts (a CPU generator).
    Returns:
        the measured lower bound on Lip(fn), a float.
    Raises:
        ValueError: n_iterations < 1 or pair_steps < 0.
    """
    check_positive_int(n_iterations, "n_iterations")
    check_positive_int(pair_steps, "pair_steps", minimum=0)
    x = x.detach()
    with torch.no_grad():
        fn(x)  # computes the certificates of the current weights once, outside the transforms
    generator = torch.Generator(device="cpu").manual_seed(seed)
    batch = x.shape[0]

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

            def quotient(delta: torch.Tensor = delta) -> torch.Tensor:
                return per_sample_norm(fn(x + delta) - fx) / per_sample_norm(delta).clamp_min(1e-30)

            def record(ratio: torch.Tensor) -> None:
                nonlocal measured
                measured = max(measured, float(ratio.max()))

            ascend_quotient(quotient, [delta], 0.05 * relative * float(scale.mean()), pair_steps, record)
            with torch.no_grad():
                ratio = per_sample_norm(fn(x + delta) - fx) / per_sample_norm(delta).clamp_min(1e-30)
                measured = max(measured, float(ratio.detach().max()))
    return measured


def ascend_quotient(
    quotient: Callable[[], torch.Tensor],
    parameters: list[torch.Tensor],
    lr: float,
    steps: int,
    record: Callable[[torch.Tensor], None],
) -> None:
    """The one Lipschitz search: ``steps`` Adam steps (step ``lr``) ascending Σ_b q_b of a per-sample difference
    quotient q = ‖fn(a_b) − fn(a'_b)‖/‖a_b − a'_b‖ over the tensors that place the pairs.

    Arguments:
        quotient: evaluates q [B] from the current ``parameters`` (it may raise to stop the search).
        parameters: the leaf tensors (requires_grad) that place the pairs; only they get gradients, so fn's own
            parameters are left without ``.grad``.
        lr: Adam's step, in input units.
        steps: number of evaluations of q.
        record: sees every q (detached) before the step that follows it.
    """
    optimizer = torch.optim.Adam(parameters, lr=lr)
    for _ in range(steps):
        value = quotient()
        record(value.detach())
        gradients = torch.autograd.grad(-value.sum(), parameters)
        for parameter, gradient in zip(parameters, gradients):
            parameter.grad = gradient
        optimizer.step()


@dataclass(frozen=True)
class LipschitzSearch:
    """What :func:`search_lipschitz` found: the best difference quotient ‖fn(x + h) − fn(x − h)‖/‖2h‖, a lower bound.

    Arguments:
        quotient: the largest difference quotient over all starts and steps, a lower bound on Lip(fn).
        per_start: [B], the best quotient of each start.
        inputs: [B, ...], the midpoint x of each start's best pair x ± h.
    """

    quotient: float
    per_start: torch.Tensor
    inputs: torch.Tensor


def search_lipschitz(
    fn: Callable[[torch.Tensor], torch.Tensor],
    starts: torch.Tensor,
    steps: int = 100,
    lr: float = 0.05,
    offset: float = 1e-4,
    seed: int = 0,
) -> LipschitzSearch:
    """Adam ascent (:func:`ascend_quotient`) of the difference quotient ‖fn(x + h) − fn(x − h)‖ / ‖2h‖ over both the
    point x and the direction of h (‖h‖ = ``offset``), from every start at once.

    Arguments:
        fn: maps a batch [B, ...] to a batch [B, ...] sample by sample (no mixing across the batch).
        starts: [B, ...], the B initial points, floating point.
        steps: Adam steps; lr: Adam's step in input units; offset: the half-distance of each pair in input units.
        seed: seeds the initial directions (a CPU generator).
    Returns:
        a :class:`LipschitzSearch`. Every recorded quotient is that of an actual pair (x − h, x + h), with the
        denominator measured from the two tensors passed to ``fn``: a lower bound on Lip(fn) whatever ``offset`` is,
        up to the rounding of the two evaluations, a relative error of about u·‖fn(x)‖/‖fn(x + h) − fn(x − h)‖ (u the
        unit roundoff: ~1e-11 in float64 with the default offset for outputs of norm ~10, far too coarse in float32,
        so search in float64). Gradients are taken with respect to x and h only, so ``fn``'s parameters are left
        without ``.grad``.
    Raises:
        TypeError: ``starts`` is not a floating-point tensor with a batch dimension and at least one more.
        ValueError: non-finite starts, ``steps`` < 1, a non-positive ``lr`` or ``offset``, or a search that leaves
            the range where fn is finite.
    """
    if not isinstance(starts, torch.Tensor) or not starts.is_floating_point() or starts.dim() < 2:
        raise TypeError("starts must be a floating-point tensor [B, ...] with a batch dimension and at least one more")
    check_finite(starts, "starts")
    check_positive_int(steps, "steps")
    lr = check_positive_float(lr, "lr")
    offset = check_positive_float(offset, "offset")
    generator = torch.Generator(device="cpu").manual_seed(seed)
    point = starts.detach().clone().requires_grad_(True)
    direction = torch.randn(starts.shape, generator=generator, dtype=starts.dtype).to(starts.device)
    direction.requires_grad_(True)
    batch = starts.shape[0]
    best = torch.zeros(batch, dtype=starts.dtype, device=starts.device)
    best_inputs = starts.detach().clone()
    shape = (batch, *[1] * (starts.dim() - 1))

    def quotient() -> torch.Tensor:
        step = offset * direction / per_sample_norm(direction).clamp_min(1e-300).view(shape)
        upper, lower = point + step, point - step
        outputs = fn(torch.cat([upper, lower]))
        distance = per_sample_norm(upper - lower)
        if not torch.isfinite(outputs).all() or not bool((distance > 0).all()):
            raise ValueError(
                "the search left the range where fn is finite or the pair offset underflowed "
                f"(offset {offset:g}): no quotient can be measured there; use other starts or offset"
            )
        return per_sample_norm(outputs[:batch] - outputs[batch:]) / distance

    def record(value: torch.Tensor) -> None:
        nonlocal best
        better = value > best
        best = torch.where(better, value, best)
        best_inputs[better] = point.detach()[better]

    ascend_quotient(quotient, [point, direction], lr, steps, record)
    return LipschitzSearch(quotient=float(best.max()), per_start=best.detach(), inputs=best_inputs)
