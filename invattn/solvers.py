"""Fixed-point solvers for x = G(x), with a tolerance, a report, and no silent failure.

Inverting y = x + g(x) means solving x = G(x) := y − g(x). When Lip(g) ≤ L < 1, G is a contraction:
plain iteration converges with ‖x_k − x*‖ ≤ L^k/(1−L)·‖x_1 − x_0‖ (Banach), and the a-posteriori
bound ‖x_{k+1} − x*‖ ≤ L/(1−L)·‖x_{k+1} − x_k‖ certifies the answer. Anderson acceleration mixes the last
``memory`` iterates to cut the number of evaluations of g, most of all when L is close to 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ._validation import check_choice, check_finite, check_positive_float, check_positive_int

__all__ = ["InverseInfo", "InversionError", "InversionWarning", "solve_fixed_point", "default_tol"]

METHODS = ("anderson", "fixed_point")
# Past iterates Anderson mixes by default: enough to need ≤ 1/4 of plain iteration's evaluations at
# Lip(g) = 0.9 and ≤ 1/10 at 0.99 (python -m invattn.bench inverse).
ANDERSON_MEMORY = 20
ON_FAILURE = ("raise", "warn", "return")


@dataclass
class InverseInfo:
    """How a fixed-point solve went.

    ``residuals[k]`` is the relative residual ‖G(x_k) − x_k‖/‖y‖ at iterate k (the largest over the
    batch); for an inverse of x + g(x) it equals ‖F(x_k) − y‖/‖y‖, the reconstruction mismatch.
    """

    method: str
    tol: float
    iterations: int = 0
    function_evals: int = 0
    converged: bool = False
    residuals: list[float] = field(default_factory=list)
    error_bound: float | None = None  # certified relative error of the returned x, when Lip(g) is known

    def __repr__(self) -> str:
        last = f"{self.residuals[-1]:.2e}" if self.residuals else "n/a"
        bound = f", error_bound={self.error_bound:.2e}" if self.error_bound is not None else ""
        return (
            f"InverseInfo(method={self.method!r}, converged={self.converged}, iterations={self.iterations}, "
            f"function_evals={self.function_evals}, last_residual={last}, tol={self.tol:g}{bound})"
        )


class InversionError(RuntimeError):
    """The solver did not reach its tolerance; ``.info`` says how far it got."""

    def __init__(self, message: str, info: InverseInfo) -> None:
        super().__init__(message)
        self.info = info


class InversionWarning(RuntimeWarning):
    """Issued instead of :class:`InversionError` when the caller chose ``on_failure="warn"``."""


def default_tol(dtype: torch.dtype) -> float:
    """A relative-residual tolerance a solve in ``dtype`` can reach: 1e-10 in float64, 1e-5 below."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def _per_sample_norm(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).norm(dim=1)


def solve_fixed_point(
    G: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    scale: torch.Tensor,
    method: str = "anderson",
    tol: float | None = None,
    max_iter: int = 1000,
    memory: int = ANDERSON_MEMORY,
    on_failure: str = "raise",
    lipschitz: float | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    rounding: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, InverseInfo]:
    """Solve x = G(x) from ``x0``; stop when ‖G(x) − x‖/scale ≤ tol for every sample.

    ``scale`` holds one positive number per sample (e.g. ‖y‖). Returns ``(x, info)``. If the tolerance
    is not reached within ``max_iter`` evaluations, or an iterate becomes non-finite, raises
    :class:`InversionError` (``on_failure="raise"``), warns and returns the last iterate
    (``on_failure="warn"``), or just returns it (``on_failure="return"``: for demonstrations that stop
    after a set number of iterations on purpose; ``info.converged`` says what happened).

    With ``lipschitz`` = a bound L < 1 on Lip(G), ``info.error_bound`` bounds ‖x̂ − x*‖/scale for the returned
    x̂ = fl(G(x_k)) and the exact fixed point x*: (L·r + e)/(1 − L), r the computed relative residual at x_k. The
    contraction argument is exact (‖G(x_k) − x*‖ ≤ L/(1−L)·‖G(x_k) − x_k‖); e/scale is a *rounding allowance*
    for the difference between the computed and the exact G(x_k): 8u(1 + (‖x_k‖ + ‖fl(G(x_k))‖)/scale), u the
    dtype's unit roundoff, plus ``rounding(x_k)`` (per sample, absolute) when the caller measures more
    (:meth:`invattn.InvertibleResidual.inverse` below float64: twice the difference between g evaluated in the
    working dtype and in float64 at x_k).
    ``callback(k, x_k)``, if given, sees every iterate (x_0 = ``x0`` first, the returned point last).
    """
    check_choice(method, "method", METHODS)
    check_choice(on_failure, "on_failure", ON_FAILURE)
    check_positive_int(max_iter, "max_iter")
    check_positive_int(memory, "memory")
    tol = default_tol(x0.dtype) if tol is None else check_positive_float(tol, "tol")
    info = InverseInfo(method=method, tol=tol)
    batch = x0.shape[0]
    flat_shape = (batch, -1)
    x = x0
    # Anderson's history as ring buffers [B, d, memory] of iterates and their images under G.
    hist_x = hist_g = None
    stored = 0
    result = None
    for iteration in range(max_iter):
        if callback is not None:
            callback(iteration, x)
        gx = G(x)
        info.function_evals += 1
        if not torch.isfinite(gx).all():
            info.iterations = iteration
            return _fail(info, x, "an iterate became non-finite (is Lip(g) really < 1?)", on_failure)
        residual = _per_sample_norm(gx - x) / scale
        worst = float(residual.max())
        info.residuals.append(worst)
        if worst <= tol:
            info.iterations = iteration + 1
            info.converged = True
            result = gx
            if callback is not None:
                callback(iteration + 1, gx)
            if lipschitz is not None and lipschitz < 1:
                u = torch.finfo(x.dtype).eps / 2
                allowance = 8 * u * (scale + _per_sample_norm(x) + _per_sample_norm(gx))
                if rounding is not None:
                    allowance = allowance + rounding(x)
                bound = (lipschitz * residual.double() + allowance.double() / scale.double()) / (1 - lipschitz)
                info.error_bound = float(bound.max())
            break
        if method == "fixed_point" or memory == 1:
            x = gx
            continue
        if hist_x is None:
            hist_x = x.new_zeros(batch, x[0].numel(), memory)
            hist_g = x.new_zeros(batch, x[0].numel(), memory)
        slot = iteration % memory
        hist_x[:, :, slot] = x.reshape(flat_shape)
        hist_g[:, :, slot] = gx.reshape(flat_shape)
        stored = min(stored + 1, memory)
        x = _anderson_step(hist_x[:, :, :stored], hist_g[:, :, :stored], slot).reshape(x0.shape)
    if result is None:
        info.iterations = max_iter
        if callback is not None:  # the point handed back is the last iterate, seen like every other
            callback(max_iter, x)
        return _fail(info, x, f"did not reach tol={tol:g} in max_iter={max_iter} iterations", on_failure)
    return result, info


def _anderson_step(hist_x: torch.Tensor, hist_g: torch.Tensor, newest: int) -> torch.Tensor:
    """Type-II Anderson mixing over the stored iterates (columns of [B, d, m], ``newest`` the latest).

    With f_i = G(x_i) − x_i, choose γ = argmin ‖f_k − Σ_i γ_i (f_k − f_i)‖ and return
    x⁺ = G(x_k) − Σ_i γ_i (G(x_k) − G(x_i)): the affine combination of the images whose residual
    combination is smallest. The small normal equations are solved in float64 with a relative ridge.
    """
    g_k = hist_g[:, :, newest]
    if hist_x.shape[-1] == 1:
        return g_k
    residuals = hist_g - hist_x
    d_f = (residuals[:, :, newest : newest + 1] - residuals).double()  # column `newest` is zero
    d_g = (hist_g[:, :, newest : newest + 1] - hist_g).double()
    f_k = residuals[:, :, newest : newest + 1].double()
    gram = d_f.transpose(1, 2) @ d_f
    ridge = 1e-10 * gram.diagonal(dim1=1, dim2=2).sum(-1).clamp_min(1e-300)
    eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
    gamma = torch.linalg.solve(gram + ridge.view(-1, 1, 1) * eye, d_f.transpose(1, 2) @ f_k)
    return (g_k.double() - (d_g @ gamma).squeeze(-1)).to(g_k.dtype)


def _fail(info: InverseInfo, x: torch.Tensor, reason: str, on_failure: str) -> tuple[torch.Tensor, InverseInfo]:
    last = f"{info.residuals[-1]:.2e}" if info.residuals else "n/a"
    message = f"inverse ({info.method}) {reason}; last relative residual {last} after {info.function_evals} evaluations"
    if on_failure == "raise":
        raise InversionError(message, info)
    if on_failure == "return":
        return x, info
    warnings.warn(message, InversionWarning, stacklevel=3)
    return x, info


def check_scale(y: torch.Tensor) -> torch.Tensor:
    """Per-sample ‖y‖ (at least 1e-12 relative to the batch) used to make residuals relative."""
    check_finite(y, "y")
    norms = _per_sample_norm(y.detach())
    return norms.clamp_min(max(float(norms.max()) * 1e-12, 1e-30))
