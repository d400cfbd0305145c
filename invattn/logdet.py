"""log|det(I + J_g(x))|, the change-of-variables term of a residual block y = x + g(x).

With ‖J_g‖₂ < 1 the log-determinant is a convergent power series,
    ln det(I + J) = tr ln(I + J) = Σ_{k≥1} (−1)^{k+1} tr(J^k)/k,
and each trace is estimated with Hutchinson's identity tr(A) = E[vᵀAv], vᵀJ^k v built from k
vector–Jacobian products. Estimators (one value per sample):

* ``"exact"``: ``torch.func.jacrev`` + ``slogdet``, for small inputs and tests;
* ``"series"``: the first ``n_terms`` terms (i-ResNet); biased, by at most d·(−ln(1−L) − Σ_{k≤n} L^k/k);
* ``"roulette"``: Residual Flows' unbiased Russian-roulette estimator: ``n_exact_terms`` terms plus a random
  number N of further terms, each reweighted by 1/P(N ≥ k − n_exact_terms). Unbiased is not enough: its
  variance is finite when Σ_k L^{2k}/P(N ≥ k) < ∞ (term k is at most d·L^k/k for Lip(g) ≤ L, and the second
  moment is Σ_{j,k} a_j a_k / P(N ≥ min(j, k))). For a geometric N with success probability p,
  P(N ≥ k) = (1 − p)^{k−1}, so the condition is **L² < 1 − p**; Residual Flows' p = 0.5 meets it only for
  L < 0.71. By default p is chosen from the block's certified bound, p = min(0.5, 1 − L), so the series
  converges at rate L; a p that breaks the condition, a g without a certified bound, or a Poisson N (whose
  tail shrinks faster than any L^{2k}, so no L > 0 guarantees it) raise a :class:`RouletteVarianceWarning`.

``neumann_gradient=True`` (series and roulette) back-propagates through one product with J only, using
d ln det(I+J) = tr((I+J)⁻¹ dJ) with (I+J)⁻¹ = Σ_k (−J)^k, so memory stays flat in the number of terms: a
vector–Jacobian product, or for a convolutional branch a Jacobian–vector product taken beside g's forward pass
(:func:`chain_jvp`), whose gradient needs an ordinary backward pass instead of a second-order one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_choice, check_finite, check_positive_float, check_positive_int
from .lipschitz import LipSwish, lipschitz_bound

__all__ = [
    "LogdetOptions",
    "residual_logdet",
    "series_truncation_bound",
    "roulette_variance_is_finite",
    "RouletteVarianceWarning",
    "ESTIMATORS",
    "chain_jvp",
]

ESTIMATORS = ("exact", "series", "roulette")
DISTRIBUTIONS = ("geometric", "poisson")


@dataclass(frozen=True)
class LogdetOptions:
    """How to estimate ln|det(I + J_g(x))| (module docstring): one value, checked once.

    Arguments:
        estimator: "exact" (jacrev + slogdet), "series" (the first ``n_terms`` terms of Σ_k (−1)^{k+1} tr(J^k)/k) or
            "roulette" (``n_exact_terms`` terms plus a random number N of reweighted terms, unbiased).
        n_terms: series length (``"series"``).
        n_probes: Hutchinson probes averaged.
        n_exact_terms: terms the roulette always takes.
        distribution: N's law for the roulette: "geometric" (success probability ``p``) or "poisson" (mean ``lam``).
        p: the geometric p in (0, 1), or None to choose p = min(0.5, 1 − L) from g's certified bound L.
        lam: the Poisson mean.
        probe: "gaussian", "rademacher", or "basis" (all d basis vectors: exact traces, d times the cost).
        neumann_gradient: back-propagate through one product with J (flat memory in the number of terms).
        generator: the source of the probes and of N (None: torch's global generator).
    Raises:
        ValueError: an unknown estimator, distribution or probe, a non-positive n_terms, n_probes or lam, a negative
            n_exact_terms, or p outside (0, 1).
    """

    estimator: str = "series"
    n_terms: int = 5
    n_probes: int = 1
    n_exact_terms: int = 2
    distribution: str = "geometric"
    p: float | None = None
    lam: float = 2.0
    probe: str = "gaussian"
    neumann_gradient: bool = False
    generator: torch.Generator | None = None

    def __post_init__(self) -> None:
        check_choice(self.estimator, "estimator", ESTIMATORS)
        check_choice(self.distribution, "distribution", DISTRIBUTIONS)
        check_choice(self.probe, "probe", ("gaussian", "rademacher", "basis"))
        check_positive_int(self.n_terms, "n_terms")
        check_positive_int(self.n_probes, "n_probes")
        check_positive_int(self.n_exact_terms, "n_exact_terms", minimum=0)
        if self.p is not None and not 0 < check_positive_float(self.p, "p") < 1:
            raise ValueError(f"p (geometric success probability) must be in (0, 1), got {self.p}")
        check_positive_float(self.lam, "lam")
        if not isinstance(self.neumann_gradient, bool):
            raise TypeError(f"neumann_gradient must be True or False, got {self.neumann_gradient!r}")
        if self.generator is not None and not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {self.generator!r}")

    @classmethod
    def of(cls, options: LogdetOptions | str | None = None, **keywords) -> LogdetOptions:
        """``options`` (default: all defaults; a string is the estimator) with the named fields replaced: the one
        place where keyword arguments of a user entry point (``ia.logdet(block, x, "series", n_terms=10)``) become
        options.

        Raises:
            TypeError: a keyword that is not a field of LogdetOptions, or ``options`` of another type.
        """
        if isinstance(options, str):
            if keywords.get("estimator", options) != options:
                raise ValueError(f"estimator named twice: {options!r} and estimator={keywords['estimator']!r}")
            keywords = {"estimator": options, **keywords}
            options = None
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"options must be a LogdetOptions or an estimator name, got {type(options).__name__}")
        names = [f.name for f in fields(cls)]
        unknown = sorted(set(keywords) - set(names))
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (log-det options: {', '.join(names)})")
        return replace(options, **keywords) if keywords else options


def series_truncation_bound(lipschitz: float, n_terms: int, dim: int) -> float:
    """Worst-case |series − exact| for Lip(g) ≤ L: d·(−ln(1−L) − Σ_{k=1}^{n} L^k/k) (Behrmann et al., 2019).

    The tail Σ_{k>n} d·L^k/k, since |tr(J^k)| ≤ d·L^k: a bound on the bias of the ``"series"`` estimator of
    :func:`residual_logdet` (its whole error with exact traces, ``probe="basis"``).

    Arguments:
        lipschitz: L, a bound on Lip(g), in [0, 1).
        n_terms: n, the number of series terms taken.
        dim: d, the dimension per sample (C·H·W).
    Returns:
        the bound in nats, a Python float (per sample).
    Raises:
        ValueError: L ≥ 1 (from ``math.log1p``: the series then need not converge).
    """
    return dim * (-math.log1p(-lipschitz) - sum(lipschitz**k / k for k in range(1, n_terms + 1)))


class RouletteVarianceWarning(RuntimeWarning):
    """The roulette estimator's number-of-terms distribution does not guarantee a finite variance."""


def roulette_variance_is_finite(lipschitz: float, distribution: str = "geometric", p: float = 0.5) -> bool:
    """Whether Σ_k L^{2k}/P(N ≥ k) converges, the condition for a finite-variance roulette estimate with Lip(g) ≤ L.

    (Module doc.) L² < 1 − p for a geometric N; only L = 0 for a Poisson N.

    Arguments:
        lipschitz: L, a bound on Lip(g).
        distribution: N's law, ``"geometric"`` (default) or ``"poisson"``.
        p: the geometric success probability (unused for Poisson).
    Returns:
        True when the roulette's variance is guaranteed finite.
    Raises:
        ValueError: an unknown distribution.
    """
    check_choice(distribution, "distribution", DISTRIBUTIONS)
    if distribution == "geometric":
        return lipschitz**2 < 1 - p
    return lipschitz == 0


def _certified_bound(g: Callable) -> float | None:
    if not isinstance(g, nn.Module):
        return None
    try:
        return lipschitz_bound(g)
    except ValueError:
        return None


def _roulette_probability(g: Callable, distribution: str, p: float | None) -> float:
    """The geometric p to use (chosen from g's certified bound when ``p`` is None), warning when the
    variance is not guaranteed finite."""
    bound = _certified_bound(g)
    if distribution == "poisson":
        if bound is None or bound > 0:
            warnings.warn(
                "a Poisson number of roulette terms has a tail that shrinks faster than any L^(2k): no Lipschitz "
                "bound L > 0 guarantees a finite variance; use distribution='geometric'",
                RouletteVarianceWarning,
                stacklevel=4,
            )
        return 0.5 if p is None else p
    if p is None:
        if bound is not None and bound < 1:
            return min(0.5, 1.0 - bound)
        p = 0.5
        warnings.warn(
            f"g has no certified Lipschitz bound below 1, so p = {p} cannot be checked: the roulette's variance "
            "is finite only if Lip(g)^2 < 1 - p; pass p explicitly",
            RouletteVarianceWarning,
            stacklevel=4,
        )
        return p
    if bound is not None and not roulette_variance_is_finite(bound, "geometric", p):
        warnings.warn(
            f"p = {p} with Lip(g) <= {bound:.4g}: the roulette's variance is finite only if Lip(g)^2 < 1 - p "
            f"(here {bound**2:.3g} >= {1 - p:.3g}); use p < {1 - bound**2:.3g}, or leave p=None to choose it",
            RouletteVarianceWarning,
            stacklevel=4,
        )
    return p


def _tail_probability(k: int, distribution: str, p: float, lam: float) -> float:
    """P(N ≥ k) for the number N of random terms: geometric on {1, 2, ...} or Poisson(λ)."""
    if k <= 0:
        return 1.0
    if distribution == "geometric":
        return (1 - p) ** (k - 1)
    cdf = sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(k))
    return max(1.0 - cdf, 0.0)


def _sample_terms(distribution: str, p: float, lam: float, generator: torch.Generator | None) -> int:
    if distribution == "geometric":
        u = float(torch.rand((), generator=generator))
        return int(math.floor(math.log1p(-u) / math.log1p(-p))) + 1
    return int(torch.poisson(torch.tensor(lam, dtype=torch.float64), generator=generator))


def _probe(x: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
    return noise if kind == "gaussian" else noise.sign()


def residual_logdet(
    g: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    options: LogdetOptions | str | None = None,
    **keywords,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(g(x), logdet)`` with logdet[b] an estimate of ln|det(I + J_g(x_b))| = Σ_k (−1)^{k+1} tr(J^k)/k.

    Arguments:
        g: the residual branch, acting on each sample of [B, ...] independently.
        x: input [B, ...], any float dtype, finite.
        options: a :class:`LogdetOptions`, or the estimator's name; keyword arguments (its field names: ``n_terms``,
            ``n_probes``, ``n_exact_terms``, ``distribution``, ``p``, ``lam``, ``probe``, ``neumann_gradient``,
            ``generator``) build or amend it. ``p=None`` chooses p = min(0.5, 1 − L) from g's certified bound L,
            which keeps the roulette's variance finite (module doc); ``probe="basis"`` sums over all d basis vectors,
            giving exact traces (d times the cost; for small inputs, tests and lessons).
    Returns:
        ``(g(x), logdet)``: g(x) of x's shape and logdet [B] in x's dtype, in nats. Gradients flow to ``x`` and to g's
        parameters when grad is enabled.
    Raises:
        ValueError: invalid options (:class:`LogdetOptions`), non-finite x, or an exact log-det of more than 4096
            dimensions per sample.
        TypeError: an unknown keyword.

    >>> from torch import nn
    >>> from invattn.lipschitz import spectral_norm
    >>> _ = torch.manual_seed(0)
    >>> g = nn.Sequential(spectral_norm(nn.Linear(3, 3), 0.5), nn.Tanh()).double()  # Lip(g) ≤ 0.5
    >>> x = torch.randn(2, 3, dtype=torch.float64)
    >>> _, exact = residual_logdet(g, x, "exact")
    >>> _, series = residual_logdet(g, x, "series", n_terms=5, probe="basis")  # exact traces, 5 terms
    >>> [round(v, 4) for v in exact.tolist()], [round(v, 4) for v in series.tolist()]
    ([-0.1354, -0.1355], [-0.1353, -0.1349])
    >>> bool((exact - series).abs().max() <= series_truncation_bound(0.5, n_terms=5, dim=3))
    True
    """
    options = LogdetOptions.of(options, **keywords)
    check_finite(x, "x")
    if options.estimator == "exact":
        return _exact(g, x)
    return _estimate(g, x, options)


def _estimate(g: Callable, x: torch.Tensor, options: LogdetOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """The series or roulette estimate of :func:`residual_logdet`."""
    o, generator = options, options.generator
    # How many terms and with which weights: series = n terms of weight 1; roulette = reweighted tail.
    if o.estimator == "series":
        weights = [1.0] * o.n_terms
    else:
        p = _roulette_probability(g, o.distribution, o.p)
        extra = _sample_terms(o.distribution, p, o.lam, generator)
        weights = [
            1.0 / _tail_probability(k - o.n_exact_terms, o.distribution, p, o.lam)
            for k in range(1, o.n_exact_terms + extra + 1)
        ]

    track = torch.is_grad_enabled()  # differentiate the estimate (training) or only evaluate it
    x_in = x if x.requires_grad else x.detach().requires_grad_(True)
    forward_mode = o.neumann_gradient and o.probe != "basis" and o.n_probes == 1
    if track and forward_mode and _forward_mode_applies(g, x_in):
        v = _probe(x, o.probe, generator)
        pair = chain_jvp(g, x_in, v)
        if pair is not None:  # the surrogate from a Jacobian–vector product (no double backward)
            return pair[0], _neumann_forward(pair[0], x_in, v, pair[1], weights)
        with torch.enable_grad():  # a pre-hook replaced an input: the vector–Jacobian route, same probe
            gx = g(x_in)
        return gx, _neumann(gx, x_in, v, weights, track)
    with torch.enable_grad():  # the vector–Jacobian products need g's graph even when evaluating
        gx = g(x_in)
    series = _neumann if o.neumann_gradient else _power_series
    if o.probe == "basis":  # Σ_i e_iᵀ A e_i = tr(A) exactly
        dim = x[0].numel()
        basis = torch.eye(dim, dtype=x.dtype, device=x.device)
        logdet = sum(series(gx, x_in, basis[i].view(1, *x.shape[1:]).expand_as(x), weights, track) for i in range(dim))
    else:
        probes = range(o.n_probes)
        logdet = sum(series(gx, x_in, _probe(x, o.probe, generator), weights, track) for _ in probes) / o.n_probes
    if not track:
        gx, logdet = gx.detach(), logdet.detach()
    return gx, logdet


def _vjp(gx: torch.Tensor, x: torch.Tensor, w: torch.Tensor, create_graph: bool) -> torch.Tensor:
    (out,) = torch.autograd.grad(gx, x, w, create_graph=create_graph, retain_graph=True)
    return out


def _power_series(gx, x, v, weights, track: bool) -> torch.Tensor:
    """Σ_k weights[k]·(−1)^{k+1}/k · vᵀJ^k v, differentiating through every term when ``track``."""
    w = v
    total = x.new_zeros(x.shape[0])
    for k, weight in enumerate(weights, start=1):
        w = _vjp(gx, x, w, create_graph=track)  # w = vᵀJ^k
        term = (w * v).reshape(x.shape[0], -1).sum(1)
        total = total + ((-1) ** (k + 1) / k) * weight * term
    return total


def _series_value(zero: torch.Tensor, weights: list[float], traces: list[torch.Tensor]) -> torch.Tensor:
    """Σ_k (−1)^{k+1}/k · weight_k · t_k from the traces t_k = vᵀJ^k v, summed in order from ``zero`` [B]."""
    value = zero
    for k, (weight, trace) in enumerate(zip(weights, traces), start=1):
        value = value + ((-1) ** (k + 1) / k) * weight * trace
    return value


def _neumann(gx, x, v, weights, track: bool) -> torch.Tensor:
    """Value of the power series without a graph; gradient through wᵀJv with w = Σ_k (−1)^k weight_{k+1} vᵀJ^k.

    One chain of vector–Jacobian products gives both. With c_k = (−1)^k weight_{k+1} and t_k = vᵀJ^k v, the products
    w_k = vᵀJ^k for k < n give the value's first n − 1 terms and w = Σ_{k<n} c_k w_k; the one product taken with a
    graph, wᵀJ, gives the surrogate S = wᵀJv = Σ_{k<n} c_k t_{k+1}, hence the last term t_n = (S − Σ_{k<n−1} c_k
    t_{k+1})/c_{n−1} without an n-th product (n − 1 products without a graph and one with, instead of n and one).
    Without ``track`` (no gradient wanted) the n products are taken without a graph and nothing is solved for.
    """
    batch = x.shape[0]
    n = len(weights)
    coefficients = [((-1) ** k) * weights[k] for k in range(n)]  # c_k, k = 0 … n − 1
    traces = []  # t_k = vᵀJ^k v, k = 1 … n (or n − 1 when the surrogate gives the last)
    neumann = coefficients[0] * v
    w = v
    with torch.no_grad():
        for k in range(1, n + 1 if not track else n):
            w = _vjp(gx, x, w, create_graph=False)
            traces.append((w * v).reshape(batch, -1).sum(1))
            if k < n:
                neumann = neumann + coefficients[k] * w
    surrogate = None
    if track:
        surrogate = (_vjp(gx, x, neumann.detach(), create_graph=True) * v).reshape(batch, -1).sum(1)
        known = sum((c * t for c, t in zip(coefficients, traces)), torch.zeros_like(surrogate))
        traces.append((surrogate.detach() - known) / coefficients[n - 1])
    value = _series_value(x.new_zeros(batch), weights, traces)
    if surrogate is None:
        return value
    return value + surrogate - surrogate.detach()


def _neumann_forward(gx, x, v, jv, weights) -> torch.Tensor:
    """:func:`_neumann` with the surrogate from J v (``jv``, carrying the graph) instead of a product with a graph.

    With w_k = vᵀJ^k (n − 1 products without a graph), the value's terms are t_k = w_k·v for k < n and
    t_n = w_{n−1}·(Jv); the surrogate wᵀ(Jv), w = Σ_{k<n} c_k w_k, has the gradient of ``_neumann``'s wᵀJv.
    Back-propagating it is an ordinary backward pass through the forward-mode computation of Jv.
    """
    batch = x.shape[0]
    n = len(weights)
    coefficients = [((-1) ** k) * weights[k] for k in range(n)]
    traces = []
    neumann = coefficients[0] * v
    w = v
    with torch.no_grad():
        for k in range(1, n):
            w = _vjp(gx, x, w, create_graph=False)
            traces.append((w * v).reshape(batch, -1).sum(1))
            neumann = neumann + coefficients[k] * w
        traces.append((w * jv.detach()).reshape(batch, -1).sum(1))
    value = _series_value(x.new_zeros(batch), weights, traces)
    surrogate = (neumann * jv).reshape(batch, -1).sum(1)
    return value + surrogate - surrogate.detach()


def _activation_jvp(layer: nn.Module, z: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(σ(z), σ'(z)·t) for an ELU or a LipSwish, written with differentiable operations (reverse and forward mode, in
    z, t and LipSwish's β; z and t may broadcast); None for anything else.

    The ELU from e = exp(min(z, 0)), min(z, 0) written as z − relu(z): ELU(z) = relu(z) + α(e − 1) and ELU'(z) = α·e
    below 0, exactly 1 above. Autograd then differentiates ELU(z) as F.elu, its kink included (ELU'(0) = α), so the
    vector–Jacobian products taken through σ(z) agree with the tangent; the tangent's own derivative at z = 0 is
    α·e = α where torch's double backward of F.elu takes the other side's 0 (both one-sided values of ELU''), so
    gradients of the log-det's surrogate differ from the vector–Jacobian route's only where a pre-activation is
    exactly 0. It keeps relu(z), e and t for the backward pass (and ELU'(z) for α ≠ 1). Value and derivative with
    their backward pass run several times faster than with ``F.elu`` (expm1) and ``torch.where`` under torch's AVX-512
    kernels, about twice as fast under AVX2 (one thread of this project's AMD EPYC machines, where those ELUs had been
    a fifth of a training step). Its value differs from ``F.elu``'s by at most about one unit in the last place of α,
    for z just below 0 where e − 1 cancels: far inside the rounding of the convolutions around it. An infinite z (only
    after an overflow upstream) gives NaN at +∞.
    """
    if type(layer) is nn.ELU and not layer.inplace:
        alpha = layer.alpha
        positive = F.relu(z)
        e = torch.exp(z - positive)
        h = positive + alpha * (e - 1)
        slope = e if alpha == 1.0 else (alpha * e).masked_fill(z > 0, 1.0)
        return h, t * slope
    if type(layer) is LipSwish:
        beta = layer.beta
        s = torch.sigmoid(beta * z)
        return z * s / 1.1, t * ((s + beta * z * s * (1 - s)) / 1.1)
    return None


def _forward_mode_applies(g: Callable, x: torch.Tensor) -> bool:
    """Whether :func:`chain_jvp` can differentiate g forward: a plain ``nn.Sequential`` (not a subclass) of plain
    zero-padded ``nn.Conv2d`` layers and ELU (not in place) or LipSwish activations on a 4-D input, with no forward
    or backward hooks anywhere, module or global (a convolution's forward pre-hooks, such as
    :func:`invattn.spectral_norm`'s input check, are run; the modules themselves are never called, so any other hook
    would silently not fire)."""
    if type(g) is not nn.Sequential or x.dim() != 4 or len(g) == 0 or _has_hooks(g, pre=True):
        return False
    hooks = nn.modules.module
    if (
        hooks._global_forward_hooks
        or hooks._global_forward_pre_hooks
        or hooks._global_backward_hooks
        or hooks._global_backward_pre_hooks
    ):
        return False
    for layer in g:
        if _plain_class(layer) is nn.Conv2d:
            if layer.padding_mode != "zeros" or isinstance(layer.padding, str) or _has_hooks(layer, pre=False):
                return False
        elif not ((type(layer) is nn.ELU and not layer.inplace) or type(layer) is LipSwish):
            return False
        elif _has_hooks(layer, pre=True):
            return False
    return True


def _has_hooks(module: nn.Module, pre: bool) -> bool:
    """Whether ``module`` has forward hooks (and forward pre-hooks if ``pre``) or backward hooks of any kind."""
    return bool(
        module._forward_hooks
        or (pre and module._forward_pre_hooks)
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def _plain_class(layer: nn.Module) -> type:
    """The module's class, or for a parametrized module (:mod:`torch.nn.utils.parametrize` makes it an instance of a
    generated subclass) the class it was made from."""
    return type(layer).__bases__[0] if parametrize.is_parametrized(layer) else type(layer)


def _run_pre_hooks(layer: nn.Module, h: torch.Tensor) -> bool:
    """Run ``layer``'s forward pre-hooks on (h,) as its ``__call__`` would; False if one replaces the input."""
    for key, hook in layer._forward_pre_hooks.items():
        with_kwargs = key in layer._forward_pre_hooks_with_kwargs
        if (hook(layer, (h,), {}) if with_kwargs else hook(layer, (h,))) is not None:
            return False
    return True


def chain_jvp(g: nn.Module, x: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(g(x), J_g(x)·v)`` by forward-mode differentiation written out layer by layer, both differentiable, or None.

    For a plain ``nn.Sequential`` of zero-padded ``nn.Conv2d`` layers (spectral-normalised or not) and ELU or
    LipSwish activations, without forward or backward hooks (the i-ResNet's convolutional branch,
    :func:`invattn.branches.conv_branch`): each convolution is applied to the primal with its bias and to the tangent
    without, after its forward pre-hooks (a spectral-normalised convolution's check of the input's size and
    finiteness); each activation multiplies the tangent by its derivative; the convolutions run in channels-last
    memory. Any other g gives None (callers then use vector–Jacobian products), as does a pre-hook that replaces the
    input. The residual log-det's Neumann gradient (Chen et al., 2019, Residual Flows, section 3.2:
    ∂ ln det(I + J) = tr((I + J)⁻¹ ∂J) ≈ Σ_k (−1)^k vᵀJ^k ∂J v) needs J v as a differentiable function of the
    parameters; this gives it from one forward pass, without a double backward.

    Arguments:
        g: the residual branch.
        x: input [B, C, H, W], a floating-point tensor.
        v: tangent, x's shape, dtype and device.
    Returns:
        ``(g(x), J v)``, each g's output shape [B, C', H', W'] (x's shape for a residual branch) in contiguous memory,
        or None.
    Raises:
        TypeError: when x or v is not a tensor.
        ValueError: when v has another shape, dtype or device than x; from a convolution's pre-hook (e.g. an input of
            another size than a certified convolution's). Other errors come from ``torch.nn.functional.conv2d`` (an
            input whose channels do not match the first convolution's).
    """
    for name, value in (("x", x), ("v", v)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if v.shape != x.shape or v.dtype != x.dtype or v.device != x.device:
        raise ValueError(
            f"v must have x's shape, dtype and device: v is {tuple(v.shape)} {v.dtype} on {v.device}, "
            f"x is {tuple(x.shape)} {x.dtype} on {x.device}"
        )
    if not _forward_mode_applies(g, x):
        return None
    h = x.contiguous(memory_format=torch.channels_last)
    t = v.contiguous(memory_format=torch.channels_last)
    with torch.enable_grad():
        for layer in g:
            if _plain_class(layer) is nn.Conv2d:
                if not _run_pre_hooks(layer, h):
                    return None
                arguments = (layer.stride, layer.padding, layer.dilation, layer.groups)
                weight = layer.weight
                h, t = F.conv2d(h, weight, layer.bias, *arguments), F.conv2d(t, weight, None, *arguments)
            else:
                h, t = _activation_jvp(layer, h, t)
    return h.contiguous(), t.contiguous()


def _exact(g, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample: the dense Jacobian by ``torch.func.jacrev``, then ``slogdet`` of I + J."""
    dim = x[0].numel()
    if dim > 4096:
        raise ValueError(f"the exact log-determinant builds a {dim}×{dim} Jacobian per sample; use a smaller input")
    gx = g(x)
    values = []
    eye = torch.eye(dim, dtype=x.dtype, device=x.device)

    def single(z: torch.Tensor) -> torch.Tensor:  # g acts on each sample independently
        return g(z.view(1, *x.shape[1:])).reshape(-1)

    for b in range(x.shape[0]):
        jac = torch.func.jacrev(single)(x[b].reshape(-1))
        values.append(torch.linalg.slogdet(eye + jac).logabsdet)
    return gx, torch.stack(values)
