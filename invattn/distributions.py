"""Certified invertible blocks as ``torch.distributions`` transforms, and the density model as a distribution.

A normalising flow's density is the change of variables: for a bijection f with latent z = f(x) and a base
density p_Z,

    log p_X(x) = log p_Z(f(x)) + log|det J_f(x)|.

:class:`BlockTransform` makes any :class:`invattn.blocks.InvertibleBlock` (:class:`invattn.ActNorm`,
:class:`invattn.Squeeze`, :class:`invattn.InvertibleResidual`, :class:`invattn.AdditiveCoupling`,
:class:`invattn.AffineCoupling`, :class:`invattn.AttentionCoupling`, :class:`invattn.models.FlowStep`, an
:class:`invattn.InvertibleSequential` of them such as :func:`invattn.toy2d.make_flow`'s flow) a
:class:`torch.distributions.Transform`: ``t(x)`` runs the block, ``t.inv(y)`` its inverse (the certified fixed-point
solver of :meth:`invattn.InvertibleResidual.inverse` for a residual block), ``t.log_abs_det_jacobian(x, y)`` its
log|det J|, all through the block contract alone. So it composes with torch's transforms (``ComposeTransform``,
``TransformedDistribution``) and with other flow libraries built on them (zuko's ``NormalizingFlow`` takes it as its
transform f, data → latent, as it is).

Direction: the blocks map data to latent (f above); ``TransformedDistribution(base, transforms)`` maps base samples to
data. Give it ``t.inv``: its ``log_prob`` then runs the block forward (differentiable, no solve) and its ``sample`` the
inverse (the solver). :class:`ResidualFlowDistribution` makes the multi-scale density model
:class:`invattn.models.ResidualFlow` a :class:`torch.distributions.Distribution`.

Every call into the rest of invattn is in the section "The calls into invattn" below.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn
from torch.distributions import Distribution, Transform, constraints

# -- The calls into invattn (the only place this module touches the blocks' and the model's own API) -----------------
from .blocks import ActNorm, InvertibleBlock, InvertibleResidual, InvertibleSequential, Squeeze
from .coupling import AdditiveCoupling, AffineCoupling, InjectivePad
from .logdet import ESTIMATORS, LogdetOptions
from .models import FlowStep, ResidualFlow
from .solvers import SolverOptions

__all__ = ["BlockTransform", "ResidualFlowDistribution"]


def _has_residual(block: nn.Module) -> bool:
    """Whether ``block`` holds a residual block x + g(x) (whose inverse is solved and whose log-det is estimated)."""
    return any(isinstance(module, InvertibleResidual) for module in block.modules())


def _check_block(block: nn.Module) -> None:
    """Refuse what is not a bijective :class:`InvertibleBlock` (``TypeError``; ``ValueError`` for InjectivePad)."""
    if not isinstance(block, InvertibleBlock):
        raise TypeError(
            f"block must be an invattn.blocks.InvertibleBlock (the contract forward, inverse(y, options), "
            f"logdet(x, options) that BlockTransform calls), got {type(block).__name__}"
            + (": derive it from InvertibleBlock" if isinstance(block, nn.Module) else "")
        )
    for module in block.modules():
        if isinstance(module, InjectivePad):
            raise ValueError(
                f"{type(block).__name__} holds InjectivePad ({module.extra_repr()} channels), which maps into a larger "
                "space: it is injective, not bijective, so log|det J| is undefined and there is no change of "
                "variables; a BlockTransform needs a bijection (the padding's range is a set of measure zero)"
            )


def _solver_options(options: SolverOptions | dict | None) -> SolverOptions:
    """``options`` as one :class:`SolverOptions` (a dict: its fields; None: the defaults), validated by building it."""
    if isinstance(options, SolverOptions):
        return options
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"solver_options must be a SolverOptions or a dict of its fields, got {type(options).__name__}")
    if options and "return_info" in options:
        raise ValueError("solver_options cannot hold return_info: the transform's inverse returns x alone")
    return SolverOptions.of(None, **(options or {}))


def _logdet_options(options: LogdetOptions | dict | None, default: LogdetOptions) -> LogdetOptions:
    """``options`` as one :class:`LogdetOptions`: a value as it is, a dict amending ``default``, None: ``default``."""
    if isinstance(options, LogdetOptions):
        return options
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"logdet_options must be a LogdetOptions or a dict of its fields, got {type(options).__name__}")
    return LogdetOptions.of(default, **(options or {}))


def _with_estimator(options: LogdetOptions | dict | None, logdet: str | None) -> LogdetOptions:
    """The transform's :class:`LogdetOptions`: ``options`` with the estimator ``logdet`` (None: the options' own)."""
    if logdet is not None and logdet not in ESTIMATORS:
        raise ValueError(f"logdet must be None or one of {', '.join(ESTIMATORS)}, got {logdet!r}")
    value = _logdet_options(options, LogdetOptions())
    stated = options.estimator if isinstance(options, LogdetOptions) else (options or {}).get("estimator")
    if logdet is None or logdet == value.estimator:
        return value
    if stated is not None:
        raise ValueError(f"logdet={logdet!r} contradicts the estimator {stated!r} of logdet_options: give one of them")
    return replace(value, estimator=logdet)


def _event_shape_through(block: nn.Module, shape: tuple[int, ...], inverse: bool) -> tuple[int, ...]:
    """The event shape after ``block`` (or its inverse): only Squeeze changes it."""
    if isinstance(block, InvertibleSequential):
        for part in reversed(block) if inverse else block:
            shape = _event_shape_through(part, shape, inverse)
        return shape
    if not isinstance(block, Squeeze):
        return shape
    f = block.factor
    if len(shape) != 3 or (shape[0] % f**2 if inverse else shape[1] % f or shape[2] % f):
        need = f"C divisible by {f**2}" if inverse else f"H and W divisible by {f}"
        raise ValueError(f"Squeeze({f}){'.inverse' if inverse else ''} needs events [C, H, W] with {need}, got {shape}")
    c, h, w = shape
    return (c // f**2, h * f, w * f) if inverse else (c * f**2, h // f, w // f)


def _sign(block: nn.Module) -> int:
    """sign det J of ``block`` where it is one number; NotImplementedError saying why otherwise."""
    if isinstance(block, ActNorm):
        return 1  # diag(exp(s)) > 0
    if isinstance(block, InvertibleResidual):
        try:
            bound = block.branch_lipschitz_bound()
        except ValueError:
            bound = math.inf
        if bound < 1:
            return 1  # the eigenvalues of I + J_g have positive real parts (|λ(J_g)| ≤ Lip(g) < 1): det > 0
        raise NotImplementedError(
            f"Lip(g) ≤ {bound:.4g} is not certified below 1: the sign of det(I + J_g) is not known"
        )
    if isinstance(block, FlowStep):  # R ∘ A: the product of its parts' signs
        return _sign(block.residual) * (_sign(block.actnorm) if block.actnorm is not None else 1)
    if isinstance(block, InvertibleSequential):
        return math.prod(_sign(part) for part in block)
    if isinstance(block, (Squeeze, AdditiveCoupling, AffineCoupling)):
        raise NotImplementedError(
            f"{type(block).__name__} permutes entries (a space-to-depth or a swap of halves): the sign of det J is "
            "(−1) to a power that depends on the event's size, so it is not one number"
        )
    raise NotImplementedError(f"the sign of det J of {type(block).__name__} is not known")


def _model_event_shape(model: ResidualFlow) -> torch.Size:
    config = model.config
    return torch.Size((config.in_channels, config.image_size, config.image_size))


# -- shared checks ----------------------------------------------------------------------------------------------------


def _flatten(x: torch.Tensor, event_dim: int, name: str) -> tuple[torch.Tensor, torch.Size]:
    """``x`` [*batch, *event] as [prod(batch), *event] (what the blocks take), and the batch shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < event_dim:
        raise ValueError(
            f"{name} has shape {tuple(x.shape)}: fewer than event_dim = {event_dim} dimensions (events are "
            f"[C, H, W] for event_dim 3, points [D] for event_dim 1)"
        )
    batch = x.shape[: x.dim() - event_dim]
    return x.reshape(-1, *x.shape[x.dim() - event_dim :]), batch


# -- the transform ----------------------------------------------------------------------------------------------------


class BlockTransform(Transform):
    """An invertible invattn block as a :class:`torch.distributions.Transform`: y = block(x), x = block.inverse(y).

    The change of variables: with z = f(x) = block(x), log p_X(x) = log p_Z(f(x)) + log|det J_f(x)|. Inputs are
    [*batch, *event] with ``event_dim`` event dimensions (images [*batch, C, H, W]: 3; points [*batch, D]: 1); the
    batch dimensions are flattened into the block's one batch dimension and restored. Put ``t.inv`` in a
    ``TransformedDistribution`` (module docstring) and ``t`` itself in zuko's ``NormalizingFlow``.

    ``log_abs_det_jacobian(x, y)`` is ln|det ∂block(x)/∂x| per event, computed from x (y is not used):

    * ActNorm (positions·Σ s), Squeeze (0), the couplings (0 additive, Σ s affine): exact whatever ``logdet``;
    * a residual block x + g(x) (also inside a sequence or FlowStep) by the estimator of the
      :class:`invattn.logdet.LogdetOptions` (``logdet``, else ``logdet_options``' own, by default ``"series"``,
      :func:`invattn.blocks.logdet`'s default); ``"series"``: the first ``n_terms`` terms of
      Σ_k (−1)^{k+1} tr(J_g^k)/k with Hutchinson traces, random through its probes and **biased**: its mean over the
      probes is the truncated sum, which differs from the exact value by at most
      :func:`invattn.series_truncation_bound` (L, n_terms, d) for L the certified Lip(g) (``probe="basis"``: exact
      traces, deterministic); ``"roulette"``: Residual Flows' Russian roulette, random and **unbiased** (its mean
      over the random number of terms and the probes is the exact value); ``"exact"``: ``torch.func.jacrev`` +
      ``slogdet``, deterministic, for events of at most 4096 entries.

    An estimated log-det makes log p_X an estimate too (roulette: unbiased for log p_X, not for p_X).
    Seed the estimators with ``logdet_options={"generator": ...}``. The options are checked once, when the transform
    is built, and the one value goes to every call: ``block.inverse(y, solver_options)``,
    ``block.logdet(x, logdet_options)`` and, in ``call_and_ladj``, ``block.forward_and_logdet(x, logdet_options)``
    (one evaluation for both; the :class:`invattn.blocks.InvertibleBlock` contract).

    The inverse of a residual block is the certified fixed-point solve (``InversionError`` if it does not converge to
    its tolerance); it runs without an autograd graph, so ``t.inv`` is not differentiable where it solves: train
    through the forward direction (``log_prob`` of ``TransformedDistribution(base, [t.inv])``).

    ``sign`` is +1 for ActNorm and for residual blocks whose Lip(g) is certified below 1 (and their sequences);
    for Squeeze and the couplings it depends on the event's size, and ``sign`` raises ``NotImplementedError``.
    Two BlockTransforms are equal when they wrap the same block object with equal options.

    Arguments:
        block: an :class:`invattn.blocks.InvertibleBlock` (module docstring), mapping [B, *event] to [B, *event']
            (Squeeze changes the event shape [C, H, W] → [4C, H/2, W/2]; ``forward_shape``/``inverse_shape`` follow
            it).
        event_dim: the number of trailing dimensions forming one event, at least 1 (keyword only).
        logdet: ``None`` (the estimator of ``logdet_options``), ``"series"``, ``"roulette"`` or ``"exact"``: the
            residual blocks' estimator (above); it must agree with an estimator ``logdet_options`` names.
        logdet_options: a :class:`invattn.logdet.LogdetOptions`, or a dict of its fields (``estimator``, ``n_terms``,
            ``n_probes``, ``n_exact_terms``, ``distribution``, ``p``, ``lam``, ``probe``, ``neumann_gradient``,
            ``generator``) amending the defaults; only for a block holding a residual block. Stored, as one value,
            in ``t.logdet_options``.
        solver_options: a :class:`invattn.solvers.SolverOptions`, or a dict of its fields (``tol``, ``method``,
            ``max_iter``, ``allow_uncertified``, ...; not ``return_info``); only for a block holding a residual block.
            Stored, as one value, in ``t.solver_options``.
        cache_size: 0 or 1, torch's cache of the last (x, y) pair (``t.inv(t(x))`` is then x itself, no solve).
    Returns:
        the transform; ``t(x)`` and ``t.inv(y)`` keep the batch shape, ``t.log_abs_det_jacobian(x, y)`` has it.
    Raises:
        TypeError: ``block`` is not an InvertibleBlock; an option dict holds an unknown field (the options' own
            error); an option that is neither its dataclass nor a dict.
        ValueError: ``block`` holds an InjectivePad (not bijective); ``event_dim`` < 1; an unknown ``logdet``, or one
            contradicting ``logdet_options``' estimator; an invalid option value (the options' own error);
            ``return_info`` in ``solver_options``; options for a block without a residual part (its inverse and
            log-det are closed-form); ``cache_size`` not 0 or 1; an input with fewer than ``event_dim`` dimensions
            (when called).

    >>> import torch
    >>> from torch.distributions import Independent, Normal, TransformedDistribution
    >>> from invattn.distributions import BlockTransform
    >>> from invattn.toy2d import make_flow
    >>> _ = torch.manual_seed(0)
    >>> flow = make_flow(n_blocks=2, width=8).double()           # 2 × (ActNorm → x + g(x)) on points [B, 2]
    >>> t = BlockTransform(flow, event_dim=1, logdet="series", logdet_options={"n_terms": 20, "probe": "basis"})
    >>> zeros = torch.zeros(2, dtype=torch.float64)
    >>> density = TransformedDistribution(Independent(Normal(zeros, 1.0), 1), [t.inv])
    >>> x = torch.tensor([[0.5, -1.0], [2.0, 0.0]], dtype=torch.float64)
    >>> [round(v, 4) for v in density.log_prob(x).tolist()]     # log N(flow(x); 0, I) + log|det J_flow(x)|
    [-3.7354, -5.1489]
    >>> bool(torch.allclose(t.inv(t(x)), x)), t.sign            # the certified solver inverts; det J > 0
    (True, 1)
    >>> density.sample((3,)).shape                              # flow⁻¹(z) by the certified solver
    torch.Size([3, 2])
    >>> from invattn.logdet import LogdetOptions
    >>> t == BlockTransform(flow, event_dim=1, logdet_options=LogdetOptions(n_terms=20, probe="basis"))
    True
    """

    bijective = True

    def __init__(
        self,
        block: nn.Module,
        *,
        event_dim: int,
        logdet: str | None = None,
        logdet_options: LogdetOptions | dict | None = None,
        solver_options: SolverOptions | dict | None = None,
        cache_size: int = 0,
    ) -> None:
        _check_block(block)
        if isinstance(event_dim, bool) or not isinstance(event_dim, int) or event_dim < 1:
            raise ValueError(
                f"event_dim must be an int ≥ 1 (the blocks act on whole events [B, C, ...]), got {event_dim!r}"
            )
        given = any(options not in (None, {}) for options in (logdet_options, solver_options))
        self._residual = _has_residual(block)
        if given and not self._residual:
            raise ValueError(
                f"{type(block).__name__} holds no residual block: its inverse and log-determinant are closed-form, "
                "so logdet_options and solver_options would do nothing"
            )
        self.logdet_options = _with_estimator(logdet_options, logdet)
        self.solver_options = _solver_options(solver_options)
        super().__init__(cache_size=cache_size)
        self.block = block
        self._event_dim = event_dim

    @property
    def logdet(self) -> str:
        """The residual blocks' estimator, ``"series"``, ``"roulette"`` or ``"exact"``: ``logdet_options.estimator``."""
        return self.logdet_options.estimator

    @property
    def domain(self) -> constraints.Constraint:
        """Real events of ``event_dim`` dimensions."""
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def codomain(self) -> constraints.Constraint:
        """Real events of ``event_dim`` dimensions."""
        return constraints.independent(constraints.real, self._event_dim)

    @property
    def sign(self) -> int:
        """sign det J: +1 where it is known to be (class docstring); ``NotImplementedError`` saying why otherwise."""
        return _sign(self.block)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        flat, batch = _flatten(x, self._event_dim, "x")
        y = self.block(flat)
        return y.reshape(*batch, *y.shape[1:])

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        flat, batch = _flatten(y, self._event_dim, "y")
        x = self.block.inverse(flat, self.solver_options)
        return x.reshape(*batch, *x.shape[1:])

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """ln|det ∂y/∂x| of each event of x (shape: x's batch shape), exact or estimated (class docstring).

        Arguments:
            x: events [*batch, *event] in the block's dtype.
            y: ignored (torch's signature).
        Returns:
            ln|det ∂y/∂x| [*batch] in nats, in x's dtype: ``block.logdet(x, logdet_options)``.
        Raises:
            TypeError: the block has no log-determinant (an InvertibleBlock that does not implement ``logdet``).
        """
        flat, batch = _flatten(x, self._event_dim, "x")
        return self.block.logdet(flat, self.logdet_options).reshape(batch)

    def call_and_ladj(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y, log|det ∂y/∂x|)``, the pair zuko's transforms and normflows' layers return, from one
        ``block.forward_and_logdet(x, logdet_options)``; with ``cache_size=1`` the pair (x, y) is cached.

        Arguments:
            x: events [*batch, *event] in the block's dtype.
        Returns:
            ``(y, ladj)``: y [*batch, *event'] and ladj [*batch] in nats.
        Raises:
            TypeError: the block has no log-determinant.
        """
        flat, batch = _flatten(x, self._event_dim, "x")
        y, ladj = self.block.forward_and_logdet(flat, self.logdet_options)
        y = y.reshape(*batch, *y.shape[1:])
        if self._cache_size == 1:
            self._cached_x_y = x, y
        return y, ladj.reshape(batch)

    def forward_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        batch, event = self._split_shape(shape)
        return torch.Size((*batch, *_event_shape_through(self.block, event, inverse=False)))

    def inverse_shape(self, shape: torch.Size | tuple[int, ...]) -> torch.Size:
        batch, event = self._split_shape(shape)
        return torch.Size((*batch, *_event_shape_through(self.block, event, inverse=True)))

    def _split_shape(self, shape: torch.Size | tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = tuple(shape)
        if len(shape) < self._event_dim:
            raise ValueError(f"shape {shape} has fewer than event_dim = {self._event_dim} dimensions")
        return shape[: len(shape) - self._event_dim], shape[len(shape) - self._event_dim :]

    def with_cache(self, cache_size: int = 1) -> BlockTransform:
        if self._cache_size == cache_size:
            return self
        options = (self.logdet_options, self.solver_options) if self._residual else (None, None)
        return BlockTransform(
            self.block,
            event_dim=self._event_dim,
            logdet=self.logdet,
            logdet_options=options[0],
            solver_options=options[1],
            cache_size=cache_size,
        )

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, BlockTransform)
            and other.block is self.block
            and other._event_dim == self._event_dim
            and other.logdet_options == self.logdet_options
            and other.solver_options == self.solver_options
        )

    __hash__ = None  # equality is by value (equal options), and an option may hold an unhashable callback

    def __repr__(self) -> str:
        return f"BlockTransform({type(self.block).__name__}, event_dim={self._event_dim}, logdet={self.logdet!r})"


# -- the density model ------------------------------------------------------------------------------------------------


class ResidualFlowDistribution(Distribution):
    """The density model :class:`invattn.models.ResidualFlow` as a :class:`torch.distributions.Distribution`.

    log p(x) = log p_Z(f(x)) + log|det J_f(x)| with the model's learned diagonal Gaussian prior p_Z and its multi-scale
    map f (:meth:`ResidualFlow.log_prob`); the residual blocks' log-determinants come from the model's estimator
    (:meth:`ResidualFlow.logdet_options` of ``config.logdet``: the truncated series, biased, or the roulette,
    unbiased; both random through their probes), or from ``logdet_options`` (``{"estimator": "exact"}`` for small
    images). The options are checked once, when the distribution is built, and passed as one value to every call.
    The density is one on ℝ^D (``support``: real events [C, H, W]); for the paper's bits per dimension the images are
    dequantised into [−0.5, 0.5)^D (:meth:`bits_per_dim`). ``sample`` draws z from the prior and inverts f block by
    block with the certified solver (``InversionError`` if a block does not converge). ``has_rsample`` is False: that
    solve runs without an autograd graph, so samples carry no gradient to the model's parameters (``log_prob`` does:
    train on ``-log_prob``).
    No batch dimensions: ``batch_shape`` is ``()``, ``event_shape`` is ``(C, H, W)`` of ``model.config``.

    Arguments:
        model: the :class:`ResidualFlow` (call ``model.eval()`` first for the trained ActNorms to stay as they are).
        logdet_options: a :class:`invattn.logdet.LogdetOptions` for :meth:`ResidualFlow.log_prob`, or a dict of its
            fields (``estimator``, ``n_terms``, ...) amending the model's own :meth:`ResidualFlow.logdet_options`;
            None: the model's own (keyword only). Stored, as one value, in ``density.logdet_options``.
        solver_options: a :class:`invattn.solvers.SolverOptions` for :meth:`ResidualFlow.sample`, or a dict of its
            fields (``tol``, ``method``, ...; not ``return_info``); None: the defaults. Stored in
            ``density.solver_options``.
        validate_args: torch's argument validation (``None``: torch's default); checks each ``log_prob`` value's shape
            and that it is finite-real (not NaN).
    Returns:
        the distribution; ``log_prob(x)`` [*sample] for x [*sample, C, H, W], ``sample(shape)`` [*shape, C, H, W].
    Raises:
        TypeError: ``model`` is not a ResidualFlow; an option dict holds an unknown field (the options' own error); an
            option that is neither its dataclass nor a dict.
        ValueError: an invalid option value (the options' own error); ``return_info`` in ``solver_options``;
            (``log_prob``, validating) a value whose last dimensions are not (C, H, W), or NaN.

    >>> import torch
    >>> from invattn.distributions import ResidualFlowDistribution
    >>> from invattn.models import PRESETS, ResidualFlow
    >>> _ = torch.manual_seed(0)
    >>> model = ResidualFlow(PRESETS["smoke"]).eval()            # images [1, 8, 8]
    >>> density = ResidualFlowDistribution(model)
    >>> density.event_shape
    torch.Size([1, 8, 8])
    >>> x = density.sample((2, 3))
    >>> x.shape
    torch.Size([2, 3, 1, 8, 8])
    >>> density.log_prob(x).shape
    torch.Size([2, 3])
    >>> _ = torch.manual_seed(1); a = density.log_prob(x[0])    # the model's estimator, its probes seeded
    >>> _ = torch.manual_seed(1); b = model.log_prob(x[0])
    >>> bool(torch.equal(a, b))
    True
    """

    arg_constraints: dict = {}
    support = constraints.independent(constraints.real, 3)
    has_rsample = False

    def __init__(
        self,
        model: ResidualFlow,
        *,
        logdet_options: LogdetOptions | dict | None = None,
        solver_options: SolverOptions | dict | None = None,
        validate_args: bool | None = None,
    ) -> None:
        if not isinstance(model, ResidualFlow):
            raise TypeError(f"model must be an invattn.models.ResidualFlow, got {type(model).__name__}")
        self.logdet_options = _logdet_options(logdet_options, model.logdet_options())
        self.solver_options = _solver_options(solver_options)
        self.model = model
        super().__init__(torch.Size(), _model_event_shape(model), validate_args=validate_args)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """log p(value) in nats, one per event: value [*sample, C, H, W] → [*sample]."""
        if self._validate_args:
            self._validate_sample(value)
        flat, batch = _flatten(value, 3, "value")
        return self.model.log_prob(flat, self.logdet_options).reshape(batch)

    def bits_per_dim(self, value: torch.Tensor) -> torch.Tensor:
        """−log₂ p(value)/D + 8 per event [*sample]: the 8-bit image's bits per dimension (value = (pixel + u)/256 −
        0.5, as :meth:`ResidualFlow.bits_per_dim`)."""
        return -self.log_prob(value) / (self.event_shape.numel() * math.log(2)) + 8.0

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = torch.Size()) -> torch.Tensor:
        """Samples [*sample_shape, C, H, W] in the model's dtype: z from the prior, x = f⁻¹(z) by the solver."""
        shape = self._extended_shape(torch.Size(sample_shape))
        n = math.prod(sample_shape)
        if n == 0:
            parameter = next(self.model.parameters())
            return torch.empty(shape, dtype=parameter.dtype, device=parameter.device)
        return self.model.sample(n, options=self.solver_options).reshape(shape)

    def __repr__(self) -> str:
        return f"ResidualFlowDistribution(event_shape={tuple(self.event_shape)})"
