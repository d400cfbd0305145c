"""The invertible residual block F(x) = x + g(x) (Behrmann et al., 2019), invertible when Lip(g) < 1."""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import parametrize

from .._validation import check_finite, check_inverse_mode, unchanged_by_inverse
from ..lipschitz import lipschitz_bound
from ..logdet import LogdetOptions, residual_logdet
from ..solvers import InverseInfo, SolverOptions, check_scale, check_tol, solve_fixed_point
from .base import InvertibleBlock

__all__ = ["InvertibleResidual"]


class InvertibleResidual(InvertibleBlock):
    """F(x) = x + g(x), invertible when Lip(g) < 1; ``inverse`` solves x = y − g(x) to a tolerance.

    Lip(F) ≤ 1 + Lip(g) (:meth:`lipschitz_bound`) and Lip(F⁻¹) ≤ 1/(1 − Lip(g)) (:meth:`branch_lipschitz_bound` gives
    the certified Lip(g)). The block keeps the contract of :class:`invattn.blocks.InvertibleBlock`.

    Arguments:
        g: the residual branch, any module mapping [B, ...] to [B, ...] sample by sample whose Lipschitz constant is
            below 1: for example a stack of :func:`invattn.spectral_norm` layers with 1-Lipschitz activations, or an
            attention module.
    Raises:
        TypeError: g is not an ``nn.Module``.

    >>> import torch, invattn as ia
    >>> torch.manual_seed(0) and None
    >>> g = torch.nn.Sequential(ia.spectral_norm(torch.nn.Linear(4, 4), 0.9), torch.nn.Tanh())
    >>> block = ia.InvertibleResidual(g).double()
    >>> round(block.branch_lipschitz_bound(), 6) <= 0.9 < block.lipschitz_bound()
    True
    >>> x = torch.randn(3, 4, dtype=torch.float64)
    >>> error = float((block.inverse(block(x), tol=1e-12) - x).norm() / x.norm())
    >>> print(round(error, 9))
    0.0
    """

    def __init__(self, g: nn.Module) -> None:
        super().__init__()
        if not isinstance(g, nn.Module):
            raise TypeError(f"g must be an nn.Module, got {type(g).__name__}")
        self.g = g

    def branch_lipschitz_bound(self) -> float:
        """Certified L ≥ Lip(g), the branch's bound (so Lip(F) ≤ 1 + L and Lip(F⁻¹) ≤ 1/(1 − L)).

        Raises:
            ValueError: g has no certified bound (:func:`invattn.lipschitz_bound`).
        """
        return lipschitz_bound(self.g)

    def lipschitz_bound(self) -> float:
        """Certified bound on Lip(F) of F(x) = x + g(x): 1 + Lip(g) (Lip(g) from :meth:`branch_lipschitz_bound`).

        Raises:
            ValueError: g has no certified bound.
        """
        return 1.0 + float(self.branch_lipschitz_bound())

    def _check_dtype(self, t: torch.Tensor, name: str) -> None:
        """``ValueError`` for a dtype other than the branch's parameters'."""
        parameter = next((p for p in self.g.parameters() if p.is_floating_point()), None)
        if parameter is not None and t.dtype != parameter.dtype:
            raise ValueError(
                f"{name} is {t.dtype} but the branch's parameters are {parameter.dtype}: convert one of them "
                "(e.g. block.double() or x.float())"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x + g(x), [B, ...] → [B, ...]; ``ValueError`` for non-finite x, a dtype other than the branch's, or a
        branch that changes the shape."""
        check_finite(x, "x")
        self._check_dtype(x, "x")
        gx = self.g(x)
        if gx.shape != x.shape:
            raise ValueError(f"the branch maps {tuple(x.shape)} to {tuple(gx.shape)}: x + g(x) needs g to keep it")
        return x + gx

    def forward_and_logdet(
        self, x: torch.Tensor, options: LogdetOptions | str | None = None, **keywords
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x + g(x), ln|det(I + J_g(x))|)`` per sample, from one evaluation of g.

        Arguments:
            x: input [B, ...].
            options: a :class:`invattn.logdet.LogdetOptions` or an estimator name ("exact", "series", "roulette");
                keyword arguments amend it (see :func:`invattn.logdet.residual_logdet`).
        Returns:
            ``(y, logdet)``: y of x's shape and dtype, logdet [B] in nats.
        Raises:
            ValueError: non-finite x, a dtype other than the branch's, or invalid options. TypeError: an unknown
                keyword.
        """
        self._check_dtype(x, "x")  # residual_logdet checks that x is finite
        gx, value = residual_logdet(self.g, x, LogdetOptions.of(options, **keywords))
        return x + gx, value

    def logdet(self, x: torch.Tensor, options: LogdetOptions | str | None = None, **keywords) -> torch.Tensor:
        """ln|det(I + J_g(x))| per sample [B] (see :meth:`forward_and_logdet`)."""
        return self.forward_and_logdet(x, options, **keywords)[1]

    def inverse(
        self, y: torch.Tensor, options: SolverOptions | None = None, *, return_info: bool = False, **keywords
    ) -> torch.Tensor | tuple[torch.Tensor, InverseInfo]:
        """Return x with x + g(x) = y, found by ``options.method`` ("anderson" or "fixed_point").

        Arguments:
            y: [B, ...] in float64, float32, float16 or bfloat16 (any other dtype: ``ValueError``); x has its shape and
                dtype.
            options: a :class:`invattn.solvers.SolverOptions`; keyword arguments (``method``, ``tol``, ``max_iter``,
                ``on_failure``, ``memory``, ``callback``, ``allow_uncertified``, ``rate_gate``) build or amend it.
            return_info: also return the solve's :class:`invattn.InverseInfo`.

        Stops when ‖x_k + g(x_k) − y‖/‖y‖ ≤ ``tol`` for every sample (a relative residual; default
        :func:`invattn.solvers.default_tol`: 1e-10 in float64, 1e-5 in float32, 16 unit roundoffs u in float16 (7.8e-3)
        and bfloat16 (0.0625)). A tol below 4u of y's dtype (2.4e-7 in float32, 4.4e-16 in float64), which rounding
        alone can keep the residual above, raises ``ValueError`` at once, before g is evaluated. If the tolerance is
        not reached within ``max_iter`` evaluations of g, or the residual stalls at the dtype's rounding floor above
        it (over the last 50 evaluations it fell too slowly to reach tol within max_iter), raises
        :class:`invattn.InversionError` (its message gives the stalled residual in units of u) or, with
        ``on_failure="warn"``, warns and returns the last iterate (``on_failure="return"``: returns it silently, for a
        deliberate fixed iteration count; any tol is then taken and the solve runs to ``max_iter`` or a residual ≤ tol,
        e.g. ``tol=1e-300`` to watch the error reach the rounding floor).
        With ``return_info=True`` returns ``(x, info)``; ``info.error_bound`` bounds the relative error when
        Lip(g) has a certified bound below 1: exactly for the contraction, plus a rounding allowance (see
        :func:`invattn.solvers.solve_fixed_point`; below float64 it re-evaluates g in float64 once to measure it).
        ``callback(k, x_k)`` sees every iterate. ``memory`` is the number of past iterates Anderson mixes (more helps
        as Lip(g) → 1; 1 is plain iteration); Anderson takes plain steps until the observed contraction rate exceeds
        ``rate_gate`` (0: mix from the start; see :func:`invattn.solvers.solve_fixed_point`).

        Raises:
            RuntimeError: g holds batch normalisation or dropout in training mode, or in training mode changes a
                buffer or draws random numbers during the solve (its buffers and the random state are restored): such
                a g is not one function, so the inverse would be silently wrong; call ``model.eval()``.
            ValueError: a g whose certified bound is not below 1 (for example the paper's attention formulation,
                bound ``inf``) unless ``allow_uncertified=True`` (then the solver just tries, and non-convergence is
                reported as usual); invalid options; a y of another dtype or with non-finite values.
            InversionError: the solve did not converge (``on_failure="raise"``).
        """
        options = SolverOptions.of(options, **keywords)
        check_inverse_mode(self.g, "InvertibleResidual.inverse")
        self._check_dtype(y, "y")
        scale = check_scale(y)  # and that y is finite
        tol = check_tol(options.tol, y.dtype, options.on_failure)  # an unreachable tol is refused before any work on g
        bound = self._contraction_bound(bool(options.allow_uncertified))
        rounding = self._rounding_measure(y.dtype) if bound is not None else None
        with torch.no_grad(), unchanged_by_inverse(self.g, "InvertibleResidual.inverse"):
            x, info = solve_fixed_point(
                lambda x: y - self.g(x), y, scale, options, lipschitz=bound, rounding=rounding, tol=tol
            )
        return (x, info) if return_info else x

    def _contraction_bound(self, allow_uncertified: bool) -> float | None:
        """The certified Lip(g) the solver may use, None without one; ``ValueError`` for a bound ≥ 1 unless allowed."""
        try:
            bound = self.branch_lipschitz_bound()
        except ValueError:
            return None
        if bound >= 1:
            if not allow_uncertified:
                raise ValueError(
                    f"Lip(g) ≤ {bound:.4g} is not below 1: x + g(x) may not be invertible "
                    "(pass allow_uncertified=True to try anyway)"
                )
            return None
        return bound

    def _rounding_measure(self, dtype: torch.dtype):
        """Below float64: x ↦ 2‖g(x) − g₆₄(x)‖ per sample, g₆₄ a float64 twin with the same effective weights."""
        if dtype == torch.float64:
            return None
        reference = _float64_twin(self.g)

        def rounding(x: torch.Tensor) -> torch.Tensor:
            difference = self.g(x).double() - reference(x.double())
            return 2 * difference.reshape(x.shape[0], -1).norm(dim=1)

        return rounding

    def inverse_with_info(
        self, y: torch.Tensor, options: SolverOptions | None = None, **keywords
    ) -> tuple[torch.Tensor, list[InverseInfo]]:
        """``(x, [info])``: :meth:`inverse` with ``return_info=True``, its one report in a list."""
        options = SolverOptions.of(options, **keywords)
        x, info = self.inverse(y, options, return_info=True)
        return x, [info]

    def inverse_and_error_bound(
        self, y: torch.Tensor, error: torch.Tensor, options: SolverOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, bound)``: x = inverse(y) and bound = error/(1 − L) + e·‖y‖ per sample (float64 [B]), L the certified
        Lip(g) (Lip(F⁻¹) ≤ 1/(1 − L) carries the incoming error) and e the solve's certified relative error
        (``InverseInfo.sample_error_bounds``).

        Raises:
            ValueError: g has no certified bound below 1 (nothing to certify). Otherwise as :meth:`inverse`.
        """
        scale = check_scale(y).double()  # the ‖y‖ that the solver's relative error_bound refers to
        x, info = self.inverse(y, options, return_info=True)
        if info.sample_error_bounds is None:
            raise ValueError("the inverse of a branch without a certified bound below 1 has no certified error")
        return x, error / (1 - self.branch_lipschitz_bound()) + info.sample_error_bounds.to(error.device) * scale


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
