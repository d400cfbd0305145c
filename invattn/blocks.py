"""Invertible building blocks: the residual block x + g(x), ActNorm, Squeeze and their composition.

Every block has ``forward(x)`` and ``inverse(y)``; ``inverse(forward(x)) = x`` up to the solver's
tolerance (residual blocks) or exactly (ActNorm, Squeeze).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ._validation import check_finite, check_inverse_mode, unchanged_by_inverse
from .lipschitz import lipschitz_bound
from .logdet import residual_logdet
from .solvers import ANDERSON_MEMORY, ANDERSON_RATE_GATE, InverseInfo, check_scale, check_tol, solve_fixed_point

__all__ = ["InvertibleResidual", "ActNorm", "Squeeze", "InvertibleSequential", "logdet"]


class InvertibleResidual(nn.Module):
    """F(x) = x + g(x), invertible when Lip(g) < 1; ``inverse`` solves x = y − g(x) to a tolerance.

    ``g`` is any module whose Lipschitz constant is below 1, for example a stack of
    :func:`invattn.spectral_norm` layers with 1-Lipschitz activations, or an attention module.
    """

    lipschitz_bound_is_of_branch = True  # invattn.lipschitz_bound(block) reports 1 + Lip(g) for x + g(x)

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        if not isinstance(g, nn.Module):
            raise TypeError(f"g must be an nn.Module, got {type(g).__name__}")
        self.g = g

    def lipschitz_bound(self) -> float:
        """Certified bound L on Lip(g) (so Lip(F) ≤ 1 + L and Lip(F⁻¹) ≤ 1/(1 − L))."""
        return lipschitz_bound(self.g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x, "x")
        return x + self.g(x)

    def forward_and_logdet(
        self, x: torch.Tensor, estimator: str = "series", **options
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + g(x), ln|det(I + J_g(x))|)`` per sample; see :func:`invattn.logdet` for the estimators."""
        check_finite(x, "x")
        gx, value = residual_logdet(self.g, x, estimator, **options)
        return x + gx, value

    def inverse(
        self,
        y: torch.Tensor,
        method: str = "anderson",
        tol: float | None = None,
        max_iter: int = 1000,
        on_failure: str = "raise",
        return_info: bool = False,
        memory: int = ANDERSON_MEMORY,
        callback: Callable[[int, torch.Tensor], None] | None = None,
        allow_uncertified: bool = False,
        rate_gate: float = ANDERSON_RATE_GATE,
    ) -> torch.Tensor | tuple[torch.Tensor, InverseInfo]:
        """Return x with x + g(x) = y, found by ``method`` ("anderson" or "fixed_point").

        ``y``: [B, ...] in float64, float32, float16 or bfloat16 (any other dtype: ``ValueError``); x has its shape and
        dtype. Stops when ‖x_k + g(x_k) − y‖/‖y‖ ≤ ``tol`` for every sample (a relative residual; default
        :func:`invattn.solvers.default_tol`: 1e-10 in float64, 1e-5 in float32, 16 unit roundoffs u in float16 (7.8e-3)
        and bfloat16 (0.0625)). A tol below 4u of y's dtype (2.4e-7 in float32, 4.4e-16 in float64), which rounding
        alone can keep the residual above, raises ``ValueError`` at once, before g is evaluated. If the tolerance is
        not reached within ``max_iter`` evaluations of g, or the residual stalls at the dtype's rounding floor above
        it (over the last 50 evaluations it fell too slowly to reach tol within max_iter), raises
        :class:`invattn.InversionError` (its message gives the stalled
        residual in units of u) or, with ``on_failure="warn"``, warns and returns the last iterate
        (``on_failure="return"``: returns it silently, for a deliberate fixed iteration count; any tol is then taken
        and the solve runs to ``max_iter`` or a residual ≤ tol, e.g. ``tol=1e-300`` to watch the error reach the
        rounding floor).
        With ``return_info=True`` returns ``(x, info)``; ``info.error_bound`` bounds the relative error when
        Lip(g) has a certified bound below 1: exactly for the contraction, plus a rounding allowance (see
        :func:`invattn.solvers.solve_fixed_point`; below float64 it re-evaluates g in float64 once to measure it).
        ``callback(k, x_k)`` sees every iterate. ``memory`` is
        the number of past iterates Anderson mixes (more helps as Lip(g) → 1; 1 is plain iteration); Anderson takes
        plain
        steps until the observed contraction rate exceeds ``rate_gate`` (0: mix from the start; see
        :func:`invattn.solvers.solve_fixed_point`).

        Raises ``RuntimeError`` while g holds batch normalisation or dropout in training mode, or in training mode
        changes a buffer or draws random numbers during the solve (its buffers and the random state are restored):
        such a g is not one function, so the inverse would be silently wrong; call ``model.eval()``.

        A g whose certified bound is not below 1 (for example the paper's attention formulation, bound
        ``inf``) is refused unless ``allow_uncertified=True``: then the solver just tries, and non-convergence
        is reported as usual.
        """
        check_inverse_mode(self.g, "InvertibleResidual.inverse")
        scale = check_scale(y)
        tol = check_tol(tol, y.dtype, on_failure)  # an unreachable tol is refused before any work on g
        try:
            bound = self.lipschitz_bound()
        except ValueError:
            bound = None
        if bound is not None and bound >= 1:
            if not allow_uncertified:
                raise ValueError(
                    f"Lip(g) ≤ {bound:.4g} is not below 1: x + g(x) may not be invertible "
                    "(pass allow_uncertified=True to try anyway)"
                )
            bound = None
        rounding = None
        if bound is not None and y.dtype != torch.float64:
            reference = _float64_twin(self.g)

            def rounding(x: torch.Tensor) -> torch.Tensor:
                difference = self.g(x).double() - reference(x.double())
                return 2 * difference.reshape(x.shape[0], -1).norm(dim=1)

        with torch.no_grad(), unchanged_by_inverse(self.g, "InvertibleResidual.inverse"):
            x, info = solve_fixed_point(
                lambda x: y - self.g(x),
                y,
                scale,
                method=method,
                tol=tol,
                max_iter=max_iter,
                memory=memory,
                on_failure=on_failure,
                lipschitz=bound,
                callback=callback,
                rounding=rounding,
                rate_gate=rate_gate,
            )
        return (x, info) if return_info else x


def _float64_twin(g: nn.Module) -> nn.Module:
    """A float64 copy of ``g`` computing with the *same* effective weights (every spectral norm's output is
    evaluated once in g's dtype and frozen in the copy), so g(x) − twin(x) measures g's rounding in its dtype,
    not a re-scaling of the weights."""
    twin = copy.deepcopy(g)
    sources = dict(g.named_modules())
    for name, module in twin.named_modules():
        if parametrize.is_parametrized(module):
            for tensor_name, chain in module.parametrizations.items():
                with torch.no_grad():
                    effective = getattr(sources[name], tensor_name).detach()
                for parametrization in chain:
                    if hasattr(parametrization, "freeze"):
                        parametrization.freeze(effective.to(torch.float64))
    return twin.double()


class ActNorm(nn.Module):
    """y = x·exp(s) + b per channel, with s and b set from the first training batch so y has zero mean
    and unit variance per channel (Kingma & Dhariwal, 2018). log|det| = (positions per channel)·Σ s."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("initialized", torch.tensor(False))

    def _view(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return t.view(1, -1, *[1] * (x.dim() - 2))

    def _check(self, x: torch.Tensor) -> None:
        check_finite(x, "x")
        if x.dim() < 2 or x.shape[1] != self.log_scale.numel():
            raise ValueError(
                f"ActNorm({self.log_scale.numel()}) needs inputs [B, {self.log_scale.numel()}, ...], got "
                f"{tuple(x.shape)}"
            )

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        per_channel = x.transpose(0, 1).reshape(x.shape[1], -1)
        mean, var = per_channel.mean(dim=1), per_channel.var(dim=1, unbiased=False)
        self.log_scale.copy_(-0.5 * torch.log(var + 1e-5))
        self.bias.copy_(-mean * self.log_scale.exp())
        self.initialized.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        if self.training and not bool(self.initialized):
            self._initialize(x)
        return x * self._view(self.log_scale.exp(), x) + self._view(self.bias, x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        self._check(y)
        return (y - self._view(self.bias, y)) * self._view(torch.exp(-self.log_scale), y)

    def logdet(self, x: torch.Tensor) -> torch.Tensor:
        """log|det ∂y/∂x| for each sample: positions·Σ s."""
        positions = x[0, 0].numel()
        return (positions * self.log_scale.sum()).expand(x.shape[0])


class Squeeze(nn.Module):
    """Space-to-depth: [B, C, H, W] → [B, 4C, H/2, W/2] (``pixel_unshuffle``); a permutation, log|det| = 0.

    i-RevNet's invertible downsampling (Jacobsen et al., 2018; after Dinh et al.'s Real NVP squeeze), used by the
    density model between scales and by :mod:`invattn.classifiers` at every stride-2 stage."""

    def __init__(self, factor: int = 2) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_finite(x, "x")
        if x.dim() != 4 or x.shape[-1] % self.factor or x.shape[-2] % self.factor:
            raise ValueError(
                f"Squeeze({self.factor}) needs [B, C, H, W] with H and W divisible by {self.factor}, got "
                f"{tuple(x.shape)}"
            )
        return F.pixel_unshuffle(x, self.factor)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        check_finite(y, "y")
        if y.dim() != 4 or y.shape[1] % (self.factor**2):
            raise ValueError(
                f"Squeeze.inverse needs [B, C, H, W] with C divisible by {self.factor**2}, got {tuple(y.shape)}"
            )
        return F.pixel_shuffle(y, self.factor)

    def logdet(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)


class InvertibleSequential(nn.Sequential):
    """A chain of invertible blocks; ``inverse`` runs the parts backwards. Extra keyword arguments of
    ``inverse`` (method, tol, ...) go to the residual blocks."""

    def inverse(self, y: torch.Tensor, **solver_options) -> torch.Tensor:
        for block in reversed(self):
            if isinstance(block, (InvertibleResidual, InvertibleSequential)):
                y = block.inverse(y, **solver_options)
            else:
                y = block.inverse(y)
        return y


def logdet(block: nn.Module, x: torch.Tensor, estimator: str = "series", **options) -> torch.Tensor:
    """ln|det ∂block(x)/∂x| per sample.

    Residual blocks use ``estimator``: ``"exact"`` (jacrev + slogdet), ``"series"`` (truncated power series
    with Hutchinson probes; ``n_terms``, ``n_probes``) or ``"roulette"`` (unbiased; ``n_exact_terms``,
    ``distribution``), and ``neumann_gradient=True`` for flat memory; see :mod:`invattn.logdet`.
    ActNorm and Squeeze are exact; a sequence sums its parts along the forward pass.
    """
    if isinstance(block, InvertibleResidual):
        return block.forward_and_logdet(x, estimator, **options)[1]
    if isinstance(block, InvertibleSequential):
        total = x.new_zeros(x.shape[0])
        for part in block:
            if isinstance(part, InvertibleResidual):  # one evaluation of g serves both the output and the log-det
                x, value = part.forward_and_logdet(x, estimator, **options)
            else:
                value = logdet(part, x, estimator, **options)
                x = part(x)
            total = total + value
        return total
    if hasattr(block, "logdet"):
        return block.logdet(x)
    raise TypeError(f"no log-determinant for {type(block).__name__}")
