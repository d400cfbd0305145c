"""Fixed-point solvers for x = G(x), with a tolerance, a report, and no silent failure.

Inverting y = x + g(x) means solving x = G(x) := y − g(x). When Lip(g) ≤ L < 1, G is a contraction:
plain iteration converges with ‖x_k − x*‖ ≤ L^k/(1−L)·‖x_1 − x_0‖ (Banach), and the a-posteriori
bound ‖x_{k+1} − x*‖ ≤ L/(1−L)·‖x_{k+1} − x_k‖ certifies the answer. Anderson acceleration mixes the last
``memory`` iterates to cut the number of evaluations of g, most of all when L is close to 1.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch

from ._validation import check_choice, check_finite, check_positive_float, check_positive_int
from .norms import per_sample_norm_float64, unit_roundoff

__all__ = [
    "ANDERSON_MEMORY",
    "ANDERSON_RATE_GATE",
    "InverseInfo",
    "InversionError",
    "InversionWarning",
    "SolverOptions",
    "solve_fixed_point",
    "default_tol",
    "check_tol",
    "smallest_tol",
]

METHODS = ("anderson", "fixed_point")
# Past iterates Anderson mixes by default. Each step costs O(B·d·m) beyond G (one row of the residual Gram matrix and
# one combination of stored images): m balances fewer evaluations of G against that cost on cheap maps
# (python -m invattn.bench inverse measures both).
ANDERSON_MEMORY = 10
# Anderson mixes only once plain iteration is seen to be slow: while every observed contraction rate
# ‖f_k‖/‖f_{k−1}‖ (the worst sample's relative residual, step over step) stays at or below this gate, it takes plain
# steps and keeps no history. Where plain iteration halves the error each step or better, it needs few evaluations and
# the O(B·d·m) mixing cost can exceed what it saves on a cheap map; where it is slower, the saved evaluations pay for
# the mixing. The price: on expensive maps that contract at ≤ 0.5 per step it gives up some evaluations
# (python -m invattn.bench inverse compares the gates).
ANDERSON_RATE_GATE = 0.5
"""The observed rate r_k/r_{k−1} above which Anderson starts mixing (:func:`solve_fixed_point`). The gate trades
evaluations for mixing work: on a map whose evaluation costs far more than the mixing (a trained model's blocks)
``rate_gate=0`` can be faster; ``python -m invattn.bench inverse`` measures both."""
ON_FAILURE = ("raise", "warn", "return")
# The dtypes a solve runs in. A coarser float (float8) cannot resolve a useful relative residual: its unit roundoff is
# 2^-4 or 2^-3, and its default tolerance below would be ≥ 1.
SOLVER_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
# A requested tol below TOL_FLOOR_ROUNDOFFS·u (u the unit roundoff of the working dtype) is refused. Even at the
# representable point nearest the solution, the computed residual fl(y − g(x)) − x carries x's own rounding through
# I + J_g (up to (1 + L)·u·‖x‖ < 2u‖x‖) and the rounding of the subtraction (up to u·‖G(x)‖): about 3u·‖y‖ when
# ‖x‖ ≈ ‖G(x)‖ ≈ ‖y‖, before g's own rounding. A tol below 4u is met only by lucky cancellation; solves stall at a few
# u (tests/test_tolerances.py).
TOL_FLOOR_ROUNDOFFS = 4
# Default tolerance in dtypes coarser than float32 (float16, bfloat16): 16u (7.8e-3 in float16, 6.25e-2 in bfloat16).
# A few times the stall floor of a few u, reached in a few evaluations, whatever Lip(g): the worst case
# ‖x‖ ≤ ‖y‖/(1 − L) that would scale the floor by 1/(1 − L) is rare, and when it happens the stall check reports it.
LOW_PRECISION_TOL_ROUNDOFFS = 16
# Stall backstop: a solve whose best worst-sample residual fell, over the last STALL_EVALUATIONS evaluations, too slowly
# to reach tol within max_iter at that rate (or not at all), while it is within STALL_LEVEL·u·(1 + (‖x‖ + ‖G(x)‖)/‖y‖)
# (the rounding of one evaluation, per sample, largest over the batch), sits on the rounding floor: it stops there
# instead of running to max_iter. A rate test, not "no new minimum": at the floor Anderson keeps setting tiny new minima
# for hundreds of evaluations. A solve that stops this way would not have reached tol within max_iter at its recent
# rate anyway.
STALL_EVALUATIONS = 50
STALL_LEVEL = 32


@dataclass
class InverseInfo:
    """How a fixed-point solve went: residuals r_k = max over the batch of ‖G(x_k) − x_k‖/‖y‖, and the error bound.

    ``residuals[k]`` is the relative residual at iterate k; for an inverse of x + g(x) it equals ‖F(x_k) − y‖/‖y‖,
    the reconstruction mismatch. With a bound L < 1 on Lip(G), :func:`solve_fixed_point` bounds ‖x̂ − x*‖/scale for
    the returned x̂ = fl(G(x_k)) and the exact fixed point x* by (L·r + e)/(1 − L), r the computed relative residual
    at x_k. The contraction argument is exact (‖G(x_k) − x*‖ ≤ L/(1−L)·‖G(x_k) − x_k‖); e/scale is a *rounding
    allowance* for the difference between the computed and the exact G(x_k): 8u(1 + (‖x_k‖ + ‖fl(G(x_k))‖)/scale),
    u the dtype's unit roundoff, plus ``rounding(x_k)`` (per sample, absolute) when the caller measures more
    (:meth:`invattn.InvertibleResidual.inverse` below float64: twice the difference between g evaluated in the
    working dtype and in float64 at x_k).

    Arguments:
        method: ``"anderson"`` or ``"fixed_point"``.
        tol: the relative-residual tolerance the solve used.
        iterations: iterates produced (the returned one included).
        function_evals: evaluations of G.
        converged: whether the residual reached ``tol``.
        residuals: r_k per iterate (floats, dimensionless).
        error_bound: the certified relative error of the returned x (largest over the batch), when Lip(G) is known;
            else None.
        sample_error_bounds: the same bound per sample (float64 [B], relative to that sample's scale), or None.
    """

    method: str
    tol: float
    iterations: int = 0
    function_evals: int = 0
    converged: bool = False
    residuals: list[float] = field(default_factory=list)
    error_bound: float | None = None  # certified relative error of the returned x, when Lip(g) is known
    # the same bound per sample (float64 [B], relative to that sample's scale), of which error_bound is the largest
    sample_error_bounds: torch.Tensor | None = None

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


@dataclass(frozen=True)
class SolverOptions:
    """How to solve x = G(x) (the inverse of a residual block y = x + g(x)): one value, checked once.

    Stop rule: ‖G(x_k) − x_k‖/‖y‖ ≤ ``tol`` for every sample (see :func:`solve_fixed_point`).

    Arguments:
        method: "anderson" (mixes the last ``memory`` iterates once ``rate_gate`` is passed) or "fixed_point".
        tol: relative-residual tolerance, or None for :func:`default_tol` of the input's dtype (checked against the
            dtype by :func:`check_tol` when the solve starts).
        max_iter: most evaluations of G.
        memory: past iterates Anderson mixes (1 is plain iteration).
        on_failure: "raise" (:class:`InversionError`), "warn" (:class:`InversionWarning`) or "return" (silently; any
            tol is then taken and the solve runs to ``max_iter``).
        callback: ``callback(k, x_k)`` sees every iterate.
        rate_gate: the observed contraction rate in [0, 1) above which Anderson starts mixing.
        allow_uncertified: invert a residual block whose branch has no certified bound below 1 (the solver just
            tries); None means "not said" (False for a block; a model may choose for its uncertified blocks).
    Raises:
        ValueError: an unknown method or on_failure, a non-positive max_iter, memory or tol, a rate_gate outside
            [0, 1).
        TypeError: a rate_gate that is not a real number.
    """

    method: str = "anderson"
    tol: float | None = None
    max_iter: int = 1000
    memory: int = ANDERSON_MEMORY
    on_failure: str = "raise"
    callback: Callable[[int, torch.Tensor], None] | None = None
    rate_gate: float = ANDERSON_RATE_GATE
    allow_uncertified: bool | None = None

    def __post_init__(self) -> None:
        check_choice(self.method, "method", METHODS)
        check_choice(self.on_failure, "on_failure", ON_FAILURE)
        check_positive_int(self.max_iter, "max_iter")
        check_positive_int(self.memory, "memory")
        if self.tol is not None:
            check_positive_float(self.tol, "tol")
        if isinstance(self.rate_gate, bool) or not isinstance(self.rate_gate, numbers.Real):
            raise TypeError(f"rate_gate must be a number in [0, 1), got {self.rate_gate!r}")
        if not 0.0 <= float(self.rate_gate) < 1.0:
            raise ValueError(f"rate_gate must be a number in [0, 1), got {self.rate_gate!r}")
        if self.allow_uncertified is not None and not isinstance(self.allow_uncertified, bool):
            raise TypeError(f"allow_uncertified must be True, False or None, got {self.allow_uncertified!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError(f"callback must be callable as callback(k, x_k) or None, got {self.callback!r}")

    @classmethod
    def of(cls, options: SolverOptions | None = None, **keywords) -> SolverOptions:
        """``options`` (default: all defaults) with the named fields replaced: the one place where keyword arguments
        of a user entry point (``block.inverse(y, tol=1e-8)``) become options.

        Raises:
            TypeError: a keyword that is not a field of SolverOptions, or ``options`` of another type.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(f"options must be a SolverOptions, got {type(options).__name__}")
        unknown = sorted(set(keywords) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r} (solver options: {_names(cls)})")
        return replace(options, **keywords) if keywords else options


def _names(cls: type) -> str:
    return ", ".join(f.name for f in fields(cls))


def _check_solver_dtype(dtype: torch.dtype) -> float:
    """The unit roundoff u of ``dtype``; ``ValueError`` for a dtype a solve does not run in."""
    if dtype not in SOLVER_DTYPES:
        raise ValueError(
            f"the inverse runs in float64, float32, float16 or bfloat16, got {dtype}: convert the model and "
            "its input (e.g. .double() or .float())"
        )
    return unit_roundoff(dtype)


def default_tol(dtype: torch.dtype) -> float:
    """The default relative-residual tolerance ‖G(x) − x‖/‖y‖ of a solve in ``dtype``, reachable in it.

    Arguments:
        dtype: the dtype the solve runs in.
    Returns:
        1e-10 in float64 (about 9·10^5 unit roundoffs u), 1e-5 in float32 (168u), and 16u in float16
        (2^-7 ≈ 7.8e-3) and bfloat16 (2^-4 = 0.0625).
    Raises:
        ValueError: any other dtype.
    """
    u = _check_solver_dtype(dtype)
    if dtype == torch.float64:
        return 1e-10
    if dtype == torch.float32:
        return 1e-5
    return LOW_PRECISION_TOL_ROUNDOFFS * u


def smallest_tol(dtype: torch.dtype) -> float:
    """The smallest relative-residual tolerance a solve in ``dtype`` accepts: 4u, u its unit roundoff.

    Below it the residual is within its own rounding.

    Arguments:
        dtype: the dtype the solve runs in.
    Returns:
        4u: 4.4e-16 in float64, 2.4e-7 in float32, 2.0e-3 in float16, 1.6e-2 in bfloat16.
    Raises:
        ValueError: a dtype a solve does not run in.
    """
    return TOL_FLOOR_ROUNDOFFS * _check_solver_dtype(dtype)


def check_tol(tol: float | None, dtype: torch.dtype, on_failure: str = "raise") -> float:
    """The tolerance a solve in ``dtype`` uses: :func:`default_tol` for None, else ``tol`` checked.

    Arguments:
        tol: a relative-residual tolerance, or None.
        dtype: the dtype the solve runs in.
        on_failure: the solve's ``on_failure``; ``"return"`` runs a set number of iterations on purpose
            (``tol=1e-300`` to watch the error fall to the rounding floor), so any positive tol is taken.
    Returns:
        the tolerance, a float.
    Raises:
        ValueError: a tol that is not a positive number, a dtype a solve does not run in, an unknown on_failure, or a
            tol below :func:`smallest_tol` (4 unit roundoffs of ``dtype``) unless ``on_failure="return"``.
        TypeError: a tol that is not a number.
    """
    check_choice(on_failure, "on_failure", ON_FAILURE)
    if tol is None:
        return default_tol(dtype)
    tol = check_positive_float(tol, "tol")
    floor = smallest_tol(dtype)
    if tol < floor and on_failure != "return":
        u = floor / TOL_FLOOR_ROUNDOFFS
        raise ValueError(
            f"tol={tol:g} cannot be reached in {dtype}: its unit roundoff is u = {u:.3g}, and a relative residual "
            "below "
            f"{TOL_FLOOR_ROUNDOFFS}u = {floor:.3g} is within the rounding of the residual itself. Ask for tol >= "
            f"{floor:.3g} "
            f"(the default in {dtype} is {default_tol(dtype):g})"
            + (
                ""
                if dtype == torch.float64
                else ", or compute in float64 (convert the model and its input with .double())"
            )
            + "; on_failure='return' runs a fixed number of iterations with any tol"
        )
    return tol


def solve_fixed_point(
    G: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    scale: torch.Tensor,
    options: SolverOptions | None = None,
    *,
    lipschitz: float | None = None,
    rounding: Callable[[torch.Tensor], torch.Tensor] | None = None,
    **keywords,
) -> tuple[torch.Tensor, InverseInfo]:
    """Solve x = G(x) from ``x0`` (plain or Anderson iteration) until ‖G(x_k) − x_k‖/scale ≤ tol for every sample.

    Anderson (``memory`` > 1) takes plain steps until the observed rate r_k/r_{k−1} first exceeds ``rate_gate``
    (default :data:`ANDERSON_RATE_GATE` = 0.5), then mixes for good: on maps that plain iteration contracts fast it
    costs no more than plain iteration. ``rate_gate=0`` mixes from the second step, the textbook algorithm; once the
    gate opens at step k, the iterates are those the textbook algorithm would produce from x_{k−1}. A residual that
    stalls at the rounding floor above tol (its best fell over the last :data:`STALL_EVALUATIONS` evaluations too
    slowly to reach tol within max_iter, and is within :data:`STALL_LEVEL`·u·(1 + (‖x‖ + ‖G(x)‖)/scale)) stops the
    solve as a failure, its message giving the residual in units of u.

    Arguments:
        G: the map, [B, ...] → [B, ...] (for the inverse of y = x + g(x): x ↦ y − g(x)).
        x0: the first iterate [B, ...], float64, float32, float16 or bfloat16 (the working dtype).
        scale: one positive number per sample, [B] (e.g. ‖y‖).
        options: a :class:`SolverOptions`: ``method``, ``tol`` (default :func:`default_tol` of x0's dtype; one below
            :func:`smallest_tol` is refused before G is evaluated), ``max_iter``, ``memory``, ``on_failure``,
            ``callback(k, x_k)`` (sees every iterate: x_0 = ``x0`` first, the returned point last), ``rate_gate``.
        lipschitz: a bound L < 1 on Lip(G): ``info.error_bound`` then certifies the result (:class:`InverseInfo`).
        rounding: ``rounding(x_k)``, a per-sample absolute allowance added to the error bound's (:class:`InverseInfo`).
        **keywords: fields of :class:`SolverOptions` that build or amend ``options``.
    Returns:
        ``(x, info)``: x [B, ...] in x0's dtype (fl(G(x_k)) once converged, else the last point reached) and an
        :class:`InverseInfo` (``info.converged`` says what happened).
    Raises:
        InversionError: with ``on_failure="raise"``, when tol is not reached within ``max_iter``, an iterate turns
            non-finite or the solve stalls; ``"warn"`` warns (:class:`InversionWarning`) and returns, ``"return"``
            just returns (for demonstrations that stop on purpose: it runs to ``max_iter`` or to a residual ≤ tol,
            whatever tol is, without the stall check).
        ValueError: an unknown method or on_failure, a non-positive max_iter, memory or tol, a tol below
            :func:`smallest_tol` (unless ``on_failure="return"``), an x0 not float64, float32, float16 or bfloat16, a
            negative lipschitz, a rate_gate outside [0, 1) (``TypeError`` for one that is not a real number).

    >>> one = torch.ones(1, dtype=torch.float64)  # G(x) = cos(x)/2 contracts with L = 1/2
    >>> x, info = solve_fixed_point(lambda x: 0.5 * torch.cos(x), 0 * one, one, lipschitz=0.5, tol=1e-12)
    >>> print(round(x.item(), 6), info.converged, info.error_bound < 1e-11)
    0.450184 True True
    """
    options = SolverOptions.of(options, **keywords)
    method, on_failure, max_iter, callback = options.method, options.on_failure, options.max_iter, options.callback
    tol, rate_gate = _checked_options(options, x0, lipschitz)
    scale = scale.double()
    info = InverseInfo(method=method, tol=tol)
    x = x0
    step = _NextIterate(x0, scale, options.memory if method == "anderson" else 1, rate_gate)
    bests: list[float] = []  # bests[k]: the smallest worst-sample residual of iterates 0..k (the stall check)
    for iteration in range(max_iter):
        if callback is not None:
            callback(iteration, x)
        gx = G(x)
        info.function_evals += 1
        if not torch.isfinite(gx).all():
            info.iterations = iteration
            return _fail(info, x, "an iterate became non-finite (is Lip(g) really < 1?)", on_failure)
        residual = per_sample_norm_float64(gx - x) / scale
        worst = float(residual.max())
        info.residuals.append(worst)
        if worst <= tol:
            info.converged = True
            if lipschitz is not None and lipschitz < 1:
                info.sample_error_bounds = _error_bounds(x, gx, scale, residual, lipschitz, rounding)
                info.error_bound = float(info.sample_error_bounds.max())
            return _hand_back(info, gx, iteration + 1, callback)
        bests.append(min([worst, *bests[-1:]]))
        stalled = _stalled(x, gx, scale, bests, tol, max_iter) if on_failure != "return" else None
        if stalled is not None:  # stopped at the rounding floor
            return _hand_back(info, gx, iteration + 1, callback, stalled, on_failure)
        x = step(x, gx, info.residuals)
    return _hand_back(
        info, x, max_iter, callback, f"did not reach tol={tol:g} in max_iter={max_iter} iterations", on_failure
    )


def _hand_back(
    info: InverseInfo,
    point: torch.Tensor,
    iterations: int,
    callback,
    failure: str | None = None,
    on_failure: str = "raise",
) -> tuple[torch.Tensor, InverseInfo]:
    """End a solve at ``point`` after ``iterations``: the callback sees it like every other iterate, then it is
    returned, or for a ``failure`` (its reason) handled by ``on_failure`` (:func:`_fail`)."""
    info.iterations = iterations
    if callback is not None:
        callback(iterations, point)
    return (point, info) if failure is None else _fail(info, point, failure, on_failure)


def _checked_options(options: SolverOptions, x0: torch.Tensor, lipschitz: float | None) -> tuple[float, float]:
    """:func:`solve_fixed_point`'s checks of what depends on the solve, before any evaluation of G (an unreachable tol
    is refused at once); returns (tol, resolved against x0's dtype; rate_gate as a float)."""
    tol = check_tol(options.tol, x0.dtype, options.on_failure)
    if lipschitz is not None and not (0.0 <= float(lipschitz) < math.inf):
        raise ValueError(f"lipschitz must be a bound L >= 0 on Lip(G) (or None), got {lipschitz!r}")
    return tol, float(options.rate_gate)


class _NextIterate:
    """The step from (x_k, G(x_k)) to x_{k+1}: plain iteration (``memory`` = 1), or Anderson, which takes plain steps
    until the observed rate r_k/r_{k−1} first exceeds ``rate_gate`` and then mixes for good over a ring buffer of the
    last ``memory`` pairs (:class:`_AndersonHistory`: residuals f_i = G(x_i) − x_i in float64, the images G(x_i), and
    their Gram matrix, one new row per step)."""

    def __init__(self, x0: torch.Tensor, scale: torch.Tensor, memory: int, rate_gate: float):
        self.shape, self.scale, self.memory, self.rate_gate = x0.shape, scale, memory, rate_gate
        self.history: _AndersonHistory | None = None
        self.mixed_steps = 0
        self.mixing = False
        self.previous = x0

    def __call__(self, x: torch.Tensor, gx: torch.Tensor, residuals: list[float]) -> torch.Tensor:
        if self.memory == 1:
            return gx
        if not self.mixing and len(residuals) > 1:
            self.mixing = self.rate_gate == 0 or (residuals[-2] > 0 and residuals[-1] / residuals[-2] > self.rate_gate)
        if not self.mixing:
            self.previous = x
            return gx
        flat = (self.shape[0], -1)
        if self.history is None:
            self.history = _AndersonHistory(self.shape[0], x[0].numel(), self.memory, x.dtype, x.device)
            # the last plain step's pair (x_{k−1}, G(x_{k−1}) = x_k) joins the history, as if it had mixed all along
            self.history.step(self.previous.reshape(flat), x.reshape(flat), self.scale, 0, 1)
            self.mixed_steps = 1
        slot = self.mixed_steps % self.memory  # ring buffer: the oldest pair is overwritten once ``memory`` are stored
        self.mixed_steps += 1
        stored = min(self.mixed_steps, self.memory)
        return self.history.step(x.reshape(flat), gx.reshape(flat), self.scale, slot, stored).reshape(self.shape)


class _AndersonHistory:
    """Type-II Anderson mixing over the last ``memory`` iterates, at O(B·d·m) per step.

    With f_i = G(x_i) − x_i and k the newest column, choose γ = argmin ‖f_k − Σ_i γ_i (f_k − f_i)‖ and return
    x⁺ = G(x_k) − Σ_i γ_i (G(x_k) − G(x_i)), the affine combination of the images whose residual combination is
    smallest. The normal equations need only inner products of residuals: with R_ij = f_iᵀf_j,
    (f_k − f_i)ᵀ(f_k − f_j) = R_kk − R_ki − R_kj + R_ij and (f_k − f_i)ᵀf_k = R_kk − R_ik. R is kept per sample and
    gains one row per step (m inner products), instead of forming all m differences and their m×m Gram anew
    (O(B·d·m²), more than G itself costs on cheap maps). Residuals and R are float64; the small system is solved
    with a relative ridge.
    """

    def __init__(self, batch: int, dim: int, memory: int, dtype: torch.dtype, device: torch.device) -> None:
        # Layouts for the two products per step: the new Gram row f_kᵀ[f_1 … f_m] as a [1, d]·[d, m] product over
        # residuals stored as columns, the combination γᵀ[G(x_1); …; G(x_m)] over images stored as rows (the faster
        # layout of each; python -m invattn.bench inverse times them).
        # Residuals are zero-filled, so the row product can always run over all m columns (contiguous; unwritten
        # columns give 0 and are never read); images are only read in written slots (``[:stored]``).
        self.residuals = torch.zeros(batch, dim, memory, dtype=torch.float64, device=device)
        self.images = torch.empty(batch, memory, dim, dtype=dtype, device=device)
        self.gram = torch.empty(batch, memory, memory, dtype=torch.float64, device=device)

    def step(self, x: torch.Tensor, gx: torch.Tensor, scale: torch.Tensor, newest: int, stored: int) -> torch.Tensor:
        # γ does not change when every residual of a sample is divided by the same number: relative residuals keep
        # the Gram matrix finite for inputs of any size (‖y‖ = 1e160 would overflow it in float64).
        f_new = (gx.double() - x.double()) / scale.unsqueeze(-1)
        self.residuals[:, :, newest] = f_new
        self.images[:, newest] = gx
        row = (f_new.unsqueeze(1) @ self.residuals).squeeze(1)[:, :stored]  # [B, stored]: f_iᵀf_k
        self.gram[:, newest, :stored] = row
        self.gram[:, :stored, newest] = row
        if stored == 1:
            return gx
        gram = self.gram[:, :stored, :stored]
        r_kk = row[:, newest : newest + 1]  # [B, 1]
        rhs = r_kk - row  # (f_k − f_i)ᵀf_k, zero for i = k
        normal = r_kk.unsqueeze(-1) - row.unsqueeze(-1) - row.unsqueeze(-2) + gram  # (f_k − f_i)ᵀ(f_k − f_j)
        # Normalised by its trace (every entry is then at most 1 in size) plus a relative ridge of 1e-10; a sample whose
        # stored residuals are all equal (e.g. already exactly converged) has trace 0 and gets γ = 0: a plain step.
        trace = normal.diagonal(dim1=1, dim2=2).sum(-1)
        unit = torch.where(trace > 0, trace, torch.ones_like(trace)).view(-1, 1)
        normal = normal / unit.unsqueeze(-1)
        normal.diagonal(dim1=1, dim2=2).add_(1e-10)
        gamma = torch.linalg.solve(normal, (rhs / unit).unsqueeze(-1)).squeeze(-1)
        # x⁺ = (1 − Σγ)·G(x_k) + Σ_i γ_i G(x_i): one product with the stored images
        gamma[:, newest] += 1 - gamma.sum(-1)
        return (gamma.to(gx.dtype).unsqueeze(1) @ self.images[:, :stored]).squeeze(1)


def _error_bounds(
    x: torch.Tensor,
    gx: torch.Tensor,
    scale: torch.Tensor,
    residual: torch.Tensor,
    lipschitz: float,
    rounding: Callable[[torch.Tensor], torch.Tensor] | None,
) -> torch.Tensor:
    """Per-sample bound (float64 [B]) on ‖fl(G(x)) − x*‖/scale: (L·r + e/scale)/(1 − L), e the rounding allowance
    8u(scale + ‖x‖ + ‖G(x)‖) plus ``rounding(x)`` when the caller measures more (see :func:`solve_fixed_point`)."""
    u = unit_roundoff(x.dtype)
    allowance = 8 * u * (scale + per_sample_norm_float64(x) + per_sample_norm_float64(gx))
    if rounding is not None:
        allowance = allowance + rounding(x)
    return (lipschitz * residual + allowance.double() / scale) / (1 - lipschitz)


def _stalled(
    x: torch.Tensor, gx: torch.Tensor, scale: torch.Tensor, bests: list[float], tol: float, max_iter: int
) -> str | None:
    """Why the solve stops at the rounding floor (see :func:`_stall_message`), or None while it may still reach tol."""
    if len(bests) <= STALL_EVALUATIONS or not _too_slow(bests, tol, max_iter):
        return None
    return _stall_message(x, gx, scale, bests[-1], tol)


def _too_slow(bests: list[float], tol: float, max_iter: int) -> bool:
    """Whether the best residual, at the rate it fell over the last STALL_EVALUATIONS evaluations (not at all, or by a
    factor p), would need more evaluations to reach ``tol`` than ``max_iter`` leaves."""
    now, then = bests[-1], bests[-1 - STALL_EVALUATIONS]
    if now >= then:
        return True
    needed = STALL_EVALUATIONS * math.log(tol / now) / math.log(now / then)
    return needed > max_iter - len(bests)


def _stall_message(x: torch.Tensor, gx: torch.Tensor, scale: torch.Tensor, best: float, tol: float) -> str | None:
    """Why the solve stops, if its best residual ``best`` (falling too slowly to reach tol, see :func:`_too_slow`) lies
    within STALL_LEVEL times the rounding of one evaluation, u·(1 + (‖x‖ + ‖G(x)‖)/‖y‖) (largest over the batch);
    else None."""
    u = unit_roundoff(x.dtype)
    rounding = u * float((1 + (per_sample_norm_float64(x) + per_sample_norm_float64(gx)) / scale).max())
    if best > STALL_LEVEL * rounding:
        return None
    return (
        f"stalled at the rounding floor of {x.dtype}: its best relative residual {best:.2e} ≈ {best / u:.1f}u "
        f"(u = {u:.3g}) is above tol={tol:g} and fell too slowly over the last {STALL_EVALUATIONS} evaluations to "
        "reach "
        "it within max_iter; ask for a larger "
        f"tol (at least about {2 * best:.1e}), or compute in float64 (convert the model and its input with .double())"
    )


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
    """Per-sample ‖y‖ (float64) used to make residuals relative. Only a sample with y = 0, which has no relative
    scale, gets 1e-12 of the batch's largest norm (1 if every y is 0); every other sample keeps its own norm, so a
    small y beside a huge one is still solved to its own relative tolerance."""
    check_finite(y, "y")
    norms = per_sample_norm_float64(y.detach())  # float64: no overflow for float32 inputs up to their largest value
    largest = float(norms.max())
    fallback = largest * 1e-12 if largest > 0 else 1.0
    return torch.where(norms > 0, norms, torch.full_like(norms, fallback))
