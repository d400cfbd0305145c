"""The contract every invertible block keeps, and the chain of blocks.

:class:`InvertibleBlock` states, once, what ``forward``, ``inverse``, ``forward_and_logdet`` and ``logdet`` take and
return (as FrEIA's ``InvertibleModule`` does for its implementers); :class:`InvertibleSequential` composes blocks
through that contract alone.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from ..logdet import LogdetOptions
from ..solvers import InverseInfo, SolverOptions

__all__ = ["InvertibleBlock", "InvertibleSequential", "logdet"]


class InvertibleBlock(nn.Module):
    """An invertible map F of [B, ...] tensors, sample by sample, with its inverse and its log-determinant.

    The contract (each method acts on every sample of the batch independently; B ≥ 1):

    * ``forward(x)`` → y = F(x): x [B, ...] of any float dtype the block's parameters have; y of the same dtype, on the
      same device, its shape fixed by x's (the same for a bijection; :class:`invattn.Squeeze` and
      :class:`invattn.InjectivePad` change it).
    * ``inverse(y, options=None)`` → x with F(x) = y: exactly up to rounding for an analytic inverse (ActNorm, Squeeze,
      the couplings), to ``options.tol`` for a fixed-point solve (a :class:`invattn.solvers.SolverOptions`; blocks
      with an analytic inverse ignore it). x has y's dtype; raises :class:`invattn.InversionError` when a solve does
      not converge, ``ValueError`` for a y with non-finite values or of a shape or dtype the block refuses (a
      residual block's branch raises its own error for a shape it cannot take), and ``RuntimeError`` while a
      branch holds batch normalisation or dropout in training mode (the inverse would silently be of another map).
    * ``forward_and_logdet(x, options=None)`` → ``(y, logdet)``: y = forward(x) and logdet [B] = ln|det ∂F(x_b)/∂x_b|
      in nats, in x's dtype, differentiable w.r.t. x and the parameters. Exact for the analytic blocks; estimated as
      ``options`` say for a residual block (a :class:`invattn.logdet.LogdetOptions`). The default evaluates
      ``logdet(x)`` first, then ``forward(x)``.
    * ``logdet(x, options=None)`` → logdet [B], as above. A block that is not a bijection of one space (InjectivePad)
      refuses with ``ValueError``.

    * ``inverse_with_info(y, options=None)`` → ``(x, infos)``: x = inverse(y) and the
      :class:`invattn.InverseInfo` of every fixed-point solve it ran, in the order run (last block first in a chain;
      empty for an analytic inverse).
    * ``inverse_and_error_bound(y, error, options=None)`` → ``(x, bound)``: x = inverse(y) and per sample a certified
      bound [B] (float64) on ‖x − F⁻¹(ŷ)‖ for every exact ŷ with ‖y − ŷ‖ ≤ ``error`` [B]: the bound a chain carries
      backwards. Only blocks with a certified inverse error have it (InvertibleResidual, ActNorm, a chain of them);
      the others raise ``TypeError``.

    Subclasses implement ``forward``, ``inverse`` and ``logdet`` (or ``forward_and_logdet``, when one evaluation
    serves both). ``lipschitz_bound()``, where a block has it, bounds Lip(F) of the block's own map.

    Arguments:
        (none): the base class takes no constructor arguments (``nn.Module``'s); each subclass documents its own.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        raise NotImplementedError(f"{type(self).__name__} implements no forward")

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """x with forward(x) = y (class docstring)."""
        raise NotImplementedError(f"{type(self).__name__} implements no inverse")

    def forward_and_logdet(
        self, x: torch.Tensor, options: LogdetOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward(x), logdet(x))``, the log-determinant evaluated first (class docstring)."""
        value = self.logdet(x, options)
        return self(x), value

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """ln|det ∂F(x_b)/∂x_b| per sample, [B] (class docstring)."""
        raise TypeError(f"no log-determinant for {type(self).__name__}")

    def inverse_with_info(
        self, y: torch.Tensor, options: SolverOptions | None = None, **keywords
    ) -> tuple[torch.Tensor, list[InverseInfo]]:
        """``(inverse(y), infos)``: the reports of the fixed-point solves run (none for an analytic inverse)."""
        options = SolverOptions.of(options, **keywords)
        return self.inverse(y, options), []

    def inverse_and_error_bound(
        self, y: torch.Tensor, error: torch.Tensor, options: SolverOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inverse(y), bound)``, bound [B] ≥ ‖x − F⁻¹(ŷ)‖ for ‖y − ŷ‖ ≤ ``error`` (class docstring)."""
        raise TypeError(f"no certified inverse error bound for {type(self).__name__}")


def _check_block(module: nn.Module) -> nn.Module:
    if not isinstance(module, InvertibleBlock):
        raise TypeError(f"InvertibleSequential chains InvertibleBlocks, got {type(module).__name__}")
    return module


class InvertibleSequential(InvertibleBlock, nn.Sequential):
    """A chain of invertible blocks F = F_n ∘ … ∘ F_1; ``inverse`` runs the parts backwards, and
    ln|det J_F(x)| = Σ_k ln|det J_{F_k}(x_{k−1})| along the forward pass.

    Arguments:
        *blocks: :class:`InvertibleBlock` instances (``TypeError`` for anything else), applied in order.

    ``inverse(y, options=None, **keywords)``: the keywords (``tol``, ``method``, …) build one
    :class:`invattn.solvers.SolverOptions` given to every part; ``forward_and_logdet(x, options=None, **keywords)``
    likewise builds one :class:`invattn.logdet.LogdetOptions` (a string ``options`` is the estimator).

    >>> import torch, invattn as ia
    >>> torch.manual_seed(0) and None
    >>> g = torch.nn.Sequential(ia.spectral_norm(torch.nn.Linear(3, 3), 0.5), torch.nn.Tanh())
    >>> chain = ia.InvertibleSequential(ia.ActNorm(3), ia.InvertibleResidual(g)).double().eval()
    >>> x = torch.randn(4, 3, dtype=torch.float64)
    >>> error = float((chain.inverse(chain(x)) - x).detach().abs().max())
    >>> print(error < 1e-9)
    True
    """

    def __init__(self, *blocks: nn.Module | OrderedDict[str, nn.Module]) -> None:
        named = len(blocks) == 1 and isinstance(blocks[0], OrderedDict)  # as nn.Sequential takes (and slices build)
        for block in blocks[0].values() if named else blocks:
            _check_block(block)
        nn.Sequential.__init__(self, *blocks)

    # every way nn.Sequential adds a part checks it too, and a slice or a sum stays a chain
    def append(self, module: nn.Module) -> InvertibleSequential:  # noqa: D102
        return nn.Sequential.append(self, _check_block(module))

    def insert(self, index: int, module: nn.Module) -> InvertibleSequential:  # noqa: D102
        return nn.Sequential.insert(self, index, _check_block(module))

    def extend(self, sequential) -> InvertibleSequential:  # noqa: D102
        return nn.Sequential.extend(self, [_check_block(module) for module in sequential])

    def __setitem__(self, index: int, module: nn.Module) -> None:
        nn.Sequential.__setitem__(self, index, _check_block(module))

    def __add__(self, other: InvertibleSequential) -> InvertibleSequential:
        if not isinstance(other, InvertibleSequential):
            raise TypeError(f"an InvertibleSequential adds another InvertibleSequential, got {type(other).__name__}")
        return InvertibleSequential(*self, *other)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return nn.Sequential.forward(self, x)

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """x with forward(x) = y: each part's inverse, last part first, with the same solver options."""
        options = SolverOptions.of(options, **keywords)
        for block in reversed(self):
            y = block.inverse(y, options)
        return y

    def inverse_with_info(
        self, y: torch.Tensor, options: SolverOptions | None = None, **keywords
    ) -> tuple[torch.Tensor, list[InverseInfo]]:
        """``(x, infos)``: each part's inverse, last part first, and the reports of their solves in that order."""
        options = SolverOptions.of(options, **keywords)
        infos: list[InverseInfo] = []
        for block in reversed(self):
            y, found = block.inverse_with_info(y, options)
            infos += found
        return y, infos

    def inverse_and_error_bound(
        self, y: torch.Tensor, error: torch.Tensor, options: SolverOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, bound)``: each part's certified inverse, last part first, its bound carried through the chain."""
        for block in reversed(self):
            y, error = block.inverse_and_error_bound(y, error, options)
        return y, error

    def forward_and_logdet(
        self, x: torch.Tensor, options: LogdetOptions | str | None = None, **keywords
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(x), Σ_k logdet_k)`` per sample, each part's output and log-det from one evaluation of it."""
        options = LogdetOptions.of(options, **keywords)
        total = x.new_zeros(x.shape[0])
        for part in self:
            x, value = part.forward_and_logdet(x, options)
            total = total + value
        return x, total

    def logdet(self, x: torch.Tensor, options: LogdetOptions | str | None = None, **keywords) -> torch.Tensor:
        """Σ_k ln|det J_{F_k}| per sample, [B] (see :meth:`forward_and_logdet`)."""
        return self.forward_and_logdet(x, options, **keywords)[1]


def logdet(block: nn.Module, x: torch.Tensor, options: LogdetOptions | str | None = None, **keywords) -> torch.Tensor:
    """ln|det ∂block(x)/∂x| per sample: ``block.logdet(x, options)`` of an :class:`InvertibleBlock`.

    Arguments:
        block: an :class:`InvertibleBlock` (a chain sums its parts' log-dets along the forward pass).
        x: input [B, ...] of the block's dtype.
        options: a :class:`invattn.logdet.LogdetOptions` or an estimator name for the residual blocks: ``"exact"``
            (jacrev + slogdet), ``"series"`` (truncated power series with Hutchinson probes; ``n_terms``,
            ``n_probes``) or ``"roulette"`` (unbiased; ``n_exact_terms``, ``distribution``); keyword arguments amend
            it, e.g. ``neumann_gradient=True`` for flat memory (see :mod:`invattn.logdet`). ActNorm, Squeeze and the
            couplings are exact whatever the options.
    Returns:
        logdet [B] in x's dtype, in nats.
    Raises:
        TypeError: ``block`` is not an InvertibleBlock, or an unknown keyword.
        ValueError: invalid options, or a block without a log-determinant (InjectivePad).
    """
    if not isinstance(block, InvertibleBlock):
        raise TypeError(f"no log-determinant for {type(block).__name__}")
    return block.logdet(x, LogdetOptions.of(options, **keywords))
