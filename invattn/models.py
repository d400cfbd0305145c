"""The multi-scale i-ResNet density model (Behrmann et al., 2019), with invertible attention in any scale
(Zha et al., 2021) and the Residual Flows options (Chen et al., 2019).

Layout for a 3×32×32 image with the paper's CIFAR-10 configuration (``PRESETS["cifar10-paper"]``):

    x [3, 32, 32] → squeeze → [12, 16, 16]
    scale 0: 16 × (ActNorm → x + g(x)) → attention block x + a(x) → split: z₀ = half [6, 16, 16]
    scale 1: squeeze → [24, 8, 8], 16 blocks, split: z₁ [12, 8, 8]
    scale 2: squeeze → [48, 4, 4], 16 blocks: z₂ [48, 4, 4]

with g = [ELU] SN-conv3×3 (C→width) → ELU → SN-conv1×1 → ELU → SN-conv3×3 (width→C), every convolution's
operator norm ≤ c, and a learned diagonal Gaussian prior on (z₀, z₁, z₂). log p(x) = log p(z) + Σ log|det|.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ._validation import check_choice, check_coeff, check_finite, check_images, check_positive_int
from .attention import GENERATION_KINDS, KINDS, PAPER_KINDS, VARIANTS, make_attention
from .blocks import ActNorm, InvertibleBlock, InvertibleResidual, InvertibleSequential, Squeeze
from .branches import conv_branch
from .logdet import LogdetOptions
from .norms import relative_error
from .solvers import InverseInfo, SolverOptions

__all__ = ["FlowConfig", "PRESETS", "PRESET_TRAINING", "ResidualFlow", "FlowStep", "with_attention"]


@dataclass(frozen=True)
class FlowConfig:
    """Everything that defines a model (saved in checkpoints, so a run can be rebuilt from its file).

    Defaults: the paper's CIFAR-10 configuration (``PRESETS["cifar10-paper"]``, module docstring).

    Arguments:
        in_channels: C of the images [B, C, H, W].
        image_size: H = W, divisible by 2 once per squeeze (the initial one and one per stride 2).
        blocks: the number of (ActNorm → x + g(x)) steps of each scale.
        strides: per scale, 1 or 2 (2: a squeeze before it); the first is 1 (the initial squeeze precedes it).
        width: the hidden channels of every branch g.
        coeff: the certified bound on each convolution's operator norm, in (0, 1).
        activation: ``"elu"`` (i-ResNet) or ``"lipswish"`` (Residual Flows).
        actnorm: an ActNorm before every residual block.
        attention: per scale, a kind of :data:`invattn.KINDS` for an attention block after its steps, or None.
        attention_coeff: the attention branches' certified bound, in (0, 1).
        attention_variant: ``"certified"`` or, for comparison only, ``"paper"``/``"generative"`` (module comment).
        logdet: ``"series"`` (i-ResNet, biased) or ``"roulette"`` (Residual Flows, unbiased).
        n_terms: series terms, or the roulette's exact terms.
        n_probes: Hutchinson probes per log-det estimate.
        neumann_gradient: the Neumann-series gradient (:mod:`invattn.logdet`).
    Raises:
        ValueError: a value out of range, an unknown choice, per-scale tuples of different lengths (or empty), bad
            strides, an attention kind the variant does not have, an image size that cannot be squeezed as often.
        TypeError: a count that is not an integer, a coefficient that is not a number.
    """

    in_channels: int = 3
    image_size: int = 32
    blocks: tuple[int, ...] = (16, 16, 16)
    strides: tuple[int, ...] = (1, 2, 2)
    width: int = 512
    coeff: float = 0.9
    activation: str = "elu"  # "elu" (i-ResNet) or "lipswish" (Residual Flows)
    actnorm: bool = True
    attention: tuple[str | None, ...] = ("concat", None, None)  # a kind of invattn.KINDS per scale, or None
    attention_coeff: float = 0.9
    # "certified" (bound ≤ attention_coeff) or, for comparison only, an original formulation ("paper": the validation
    # repository's, "generative": the generative repository's); those have no bound, their blocks are inverted
    # uncertified (the solver tries and raises if it does not converge) and their log-det series is not guaranteed
    attention_variant: str = "certified"
    logdet: str = "series"  # "series" (i-ResNet, biased) or "roulette" (Residual Flows, unbiased)
    n_terms: int = 5  # series terms, or the roulette's exact terms
    n_probes: int = 1
    # The Neumann-series gradient: the same estimate, an unbiased gradient of it at flat memory (the default; its cost
    # against the plain series: python -m invattn.bench)
    neumann_gradient: bool = True

    def __post_init__(self) -> None:
        check_positive_int(self.in_channels, "in_channels")
        check_positive_int(self.image_size, "image_size", minimum=2)
        check_positive_int(self.width, "width")
        check_coeff(self.coeff)
        check_coeff(self.attention_coeff, "attention_coeff")
        check_choice(self.activation, "activation", ("elu", "lipswish"))
        check_choice(self.logdet, "logdet", ("series", "roulette"))
        if not (len(self.blocks) == len(self.strides) == len(self.attention)) or not self.blocks:
            raise ValueError("blocks, strides and attention need one entry per scale")
        if self.strides[0] != 1 or any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides are 1 or 2, the first 1 (the initial squeeze precedes it); got {self.strides}")
        check_choice(self.attention_variant, "attention_variant", VARIANTS)
        allowed = {"certified": KINDS, "paper": PAPER_KINDS, "generative": GENERATION_KINDS}[self.attention_variant]
        for kind in self.attention:
            if kind is not None:
                check_choice(kind, f"attention kind of variant {self.attention_variant!r}", allowed)
        if self.image_size % (2 * 2 ** sum(s == 2 for s in self.strides)):
            raise ValueError(
                f"image_size {self.image_size} cannot be squeezed {1 + sum(s == 2 for s in self.strides)} times"
            )

    @property
    def dims(self) -> int:
        return self.in_channels * self.image_size**2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> FlowConfig:
        tuples = {k: tuple(v) for k, v in values.items() if k in ("blocks", "strides", "attention")}
        # "n_power_iterations" set a power-iteration spectral norm, which this model does not have: ignored
        known = {k: v for k, v in {**values, **tuples}.items() if k != "n_power_iterations"}
        return cls(**known)


PRESETS: dict[str, FlowConfig] = {
    # seconds on a CPU: the pipeline end to end
    "smoke": FlowConfig(
        in_channels=1, image_size=8, blocks=(2, 2), strides=(1, 2), width=16, attention=("concat", None), n_terms=3
    ),
    # real 8×8 handwritten digits (scikit-learn), minutes on a CPU
    "digits": FlowConfig(
        in_channels=1, image_size=8, blocks=(4, 4), strides=(1, 2), width=64, attention=("concat", None), n_terms=5
    ),
    # the paper's CIFAR-10 model (GPU), its log-det series at 2 terms with the Neumann gradient (the paper
    # back-propagated through 5 terms; python -m invattn.bench train compares the two, speed and held-out bits/dim)
    "cifar10-paper": FlowConfig(n_terms=2),
    # the paper's CIFAR-10 layout with 2 steps per scale and width 128, for 32×32 photograph patches (offline; as on
    # CIFAR-10, the first scale's attention sees N = 256 positions): CPU-sized
    "patches": FlowConfig(blocks=(2, 2, 2), width=128, n_terms=2),
}

# How each preset is trained: the fields of invattn.train.TrainConfig that differ from its defaults, as plain values
# (this table sits below the training loop, which builds invattn.train.TRAINING from it)
PRESET_TRAINING: dict[str, dict] = {
    "smoke": dict(
        dataset="digits", n_train=256, batch_size=16, epochs=1, steps=20, checkpoint_every=10, samples_per_epoch=4
    ),
    "digits": dict(dataset="digits", batch_size=64, epochs=10, checkpoint_every=200, samples_per_epoch=16),
    # the paper: Adamax, lr 3e-3, batch 64, 200 epochs, with a 1-epoch linear warm-up
    "cifar10-paper": dict(dataset="cifar10", batch_size=64, epochs=200, warmup_steps=782, checkpoint_every=1000),
    "patches": dict(dataset="patches", batch_size=32, epochs=2, checkpoint_every=100, samples_per_epoch=16),
}


class FlowStep(InvertibleBlock):
    """ActNorm (exactly invertible, log-det in closed form) followed by a residual block x + g(x):
    F(x) = R(A(x)), ln|det J_F(x)| = ln|det J_A| + ln|det(I + J_g(A(x)))|.

    Arguments:
        residual: the residual block R.
        channels: C of the inputs [B, C, H, W] (ActNorm's channels).
        actnorm: with the ActNorm A (else A is the identity).
    """

    def __init__(self, residual: InvertibleResidual, channels: int, actnorm: bool) -> None:
        super().__init__()
        self.actnorm = ActNorm(channels) if actnorm else None
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """R(A(x))."""
        return self.residual(self.actnorm(x) if self.actnorm is not None else x)

    def forward_and_logdet(
        self, x: torch.Tensor, options: LogdetOptions | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(F(x), logdet [B])``, the residual block's log-det estimated as ``options`` say."""
        logdet = x.new_zeros(x.shape[0])
        if self.actnorm is not None:
            logdet = logdet + self.actnorm.logdet(x)
            x = self.actnorm(x)
        y, value = self.residual.forward_and_logdet(x, options)
        return y, logdet + value

    def logdet(self, x: torch.Tensor, options: LogdetOptions | None = None) -> torch.Tensor:
        """ln|det J_F(x)| per sample, [B] (see :meth:`forward_and_logdet`)."""
        return self.forward_and_logdet(x, options)[1]

    def inverse(self, y: torch.Tensor, options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """A⁻¹(R⁻¹(y)), R⁻¹ solved as ``options`` say (:meth:`invattn.InvertibleResidual.inverse`)."""
        options = SolverOptions.of(options, **keywords)
        x = self.residual.inverse(y, options)
        return self.actnorm.inverse(x) if self.actnorm is not None else x

    def inverse_with_info(
        self, y: torch.Tensor, options: SolverOptions | None = None, **keywords
    ) -> tuple[torch.Tensor, list[InverseInfo]]:
        """``(A⁻¹(R⁻¹(y)), [R's solve report])``."""
        options = SolverOptions.of(options, **keywords)
        x, infos = self.residual.inverse_with_info(y, options)
        return (self.actnorm.inverse(x) if self.actnorm is not None else x), infos


class ResidualFlow(nn.Module):
    """The multi-scale invertible residual density model, log p(x) = log p(z) + Σ log|det| (module docstring).

    ``forward(x)`` returns ``(zs, logdet)`` (one z per scale); ``log_prob(x)``, ``bits_per_dim(x)`` for inputs
    dequantised to [−0.5, 0.5) as in the paper; ``inverse(zs)``, ``sample(n)`` and ``reconstruct(x)`` invert the
    whole model to a tolerance, block by block. The weights are drawn from the global torch generator.

    Arguments:
        config: the :class:`FlowConfig` (e.g. ``PRESETS["smoke"]``), kept as ``model.config``.

    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> model = ResidualFlow(PRESETS["smoke"])  # 1×8×8 images, 2 scales of 2 blocks, concat attention
    >>> x = torch.rand(2, 1, 8, 8) - 0.5  # dequantised images in [−0.5, 0.5)
    >>> model.bits_per_dim(x).shape
    torch.Size([2])
    >>> [tuple(z.shape) for z in model(x)[0]]
    [(2, 2, 4, 4), (2, 8, 2, 2)]
    >>> max(model.lipschitz_bounds()) < 1, model.reconstruct(x)[1] < 1e-4
    (True, True)
    """

    def __init__(self, config: FlowConfig) -> None:
        super().__init__()
        self.config = config
        self.squeeze = Squeeze()
        channels, size = 4 * config.in_channels, config.image_size // 2
        self.scales = nn.ModuleList()
        self.z_shapes: list[tuple[int, int, int]] = []
        for index, (n_blocks, stride, kind) in enumerate(zip(config.blocks, config.strides, config.attention)):
            if stride == 2:
                channels, size = channels * 4, size // 2
            steps = []
            for i in range(n_blocks):
                g = conv_branch(
                    channels,
                    config.width,
                    size,
                    config.coeff,
                    config.activation,
                    input_nonlinearity=(index > 0 or i > 0),
                )
                steps.append(FlowStep(InvertibleResidual(g), channels, config.actnorm))
            attention = None
            if kind is not None:
                attention = InvertibleResidual(
                    make_attention(kind, channels, coeff=config.attention_coeff, variant=config.attention_variant)
                )
            last = index == len(config.blocks) - 1
            blocks = {"steps": InvertibleSequential(*steps), **({"attention": attention} if attention else {})}
            self.scales.append(nn.ModuleDict(blocks))
            out_channels = channels if last else channels // 2
            self.z_shapes.append((out_channels, size, size))
            if not last:
                channels //= 2
        self.prior_mean = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in self.z_shapes])
        self.prior_log_std = nn.ParameterList([nn.Parameter(torch.zeros(s)) for s in self.z_shapes])

    # -- options of the log-det estimator -------------------------------------------------------
    def logdet_options(self) -> LogdetOptions:
        """The log-det estimator the config asks for: ``config.logdet`` with ``n_probes`` and ``neumann_gradient``,
        ``config.n_terms`` as the series' terms or the roulette's exact terms."""
        c = self.config
        terms = {"n_terms": c.n_terms} if c.logdet == "series" else {"n_exact_terms": c.n_terms}
        return LogdetOptions(estimator=c.logdet, n_probes=c.n_probes, neumann_gradient=c.neumann_gradient, **terms)

    def _options(self, options: LogdetOptions | None, keywords: dict) -> LogdetOptions:
        return LogdetOptions.of(self.logdet_options() if options is None else options, **keywords)

    def forward(
        self, x: torch.Tensor, options: LogdetOptions | None = None, **keywords
    ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``(zs, logdet)``: the latent pieces and Σ log|det ∂f/∂x| per sample [B], estimated with ``options``
        (default :meth:`logdet_options`; keyword arguments amend it, e.g. ``n_terms=10``)."""
        return self._walk(x, self._options(options, keywords))

    def latents(self, x: torch.Tensor) -> list[torch.Tensor]:
        """f(x) as its latent pieces, without the log-determinant (what an inverse or a reconstruction needs)."""
        return self._walk(x, None)[0]

    def _walk(self, x: torch.Tensor, options: LogdetOptions | None, attention_inputs: list | None = None):
        """The one pass through the network: ``(zs, logdet)``, log-dets estimated with ``options`` (``None``:
        none, logdet = 0). The features entering each attention block are appended to ``attention_inputs``."""
        reference = self.prior_mean[0]
        check_images(x, "x", reference.dtype, reference.device)
        check_finite(x, "x")
        expected = (self.config.in_channels, self.config.image_size, self.config.image_size)
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"this model takes images [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(x.shape)}"
            )
        h = self.squeeze(x)
        logdet = x.new_zeros(x.shape[0])
        zs = []

        def apply(block: nn.Module, h: torch.Tensor) -> torch.Tensor:
            nonlocal logdet
            if options is None:
                return block(h)
            h, value = block.forward_and_logdet(h, options)
            logdet = logdet + value
            return h

        for index, (scale, stride) in enumerate(zip(self.scales, self.config.strides)):
            if stride == 2:
                h = self.squeeze(h)
            for step in scale["steps"]:
                h = apply(step, h)
            if "attention" in scale:
                if attention_inputs is not None:
                    attention_inputs.append(h)
                h = apply(scale["attention"], h)
            if index < len(self.scales) - 1:
                half = h.shape[1] // 2
                zs.append(h[:, :half])
                h = h[:, half:]
        zs.append(h)
        return zs, logdet

    def prior_log_prob(self, zs: list[torch.Tensor]) -> torch.Tensor:
        total = zs[0].new_zeros(zs[0].shape[0])
        for z, mean, log_std in zip(zs, self.prior_mean, self.prior_log_std):
            standard = (z - mean) * torch.exp(-log_std)
            total = total + (-0.5 * standard.square() - log_std - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        return total

    def log_prob(self, x: torch.Tensor, options: LogdetOptions | None = None, **keywords) -> torch.Tensor:
        """log p(x) = log p(z) + Σ log|det| per sample [B] (density of the dequantised input in [−0.5, 0.5)^D), the
        log-dets estimated as in :meth:`forward`."""
        zs, logdet = self(x, self._options(options, keywords))
        return self.prior_log_prob(zs) + logdet

    def bits_per_dim(self, x: torch.Tensor, options: LogdetOptions | None = None, **keywords) -> torch.Tensor:
        """−log₂ p(x)/D + 8 per sample [B]: the discrete 8-bit image's bits per dimension (x = (pixel + u)/256 − 0.5),
        the log-dets estimated as in :meth:`forward`."""
        return -self.log_prob(x, self._options(options, keywords)) / (self.config.dims * math.log(2)) + 8.0

    # -- inversion -------------------------------------------------------------------------------
    def inverse(self, zs: list[torch.Tensor], options: SolverOptions | None = None, **keywords) -> torch.Tensor:
        """The x with f(x) = zs; every residual block is solved to its tolerance, raising if one does not converge.

        Arguments:
            zs: the latent pieces, one per scale ([B, *z_shape]).
            options: a :class:`invattn.solvers.SolverOptions` for every block; keyword arguments (``tol``, ``method``,
                …, see :meth:`InvertibleResidual.inverse`) build or amend it. An uncertified attention formulation
                (comparison only) is inverted with ``allow_uncertified=True`` unless the options say otherwise.
        Returns:
            x [B, C, H, W] in the model's dtype.
        Raises:
            ValueError: a wrong number of pieces; a ``tol`` below 4 unit roundoffs of the dtype (before any block is
                solved). The default ``tol`` follows the model's dtype (1e-5 relative residual in float32, 1e-10 in
                float64, 16 unit roundoffs in float16 and bfloat16).
            InversionError: a block did not converge, or its residual stalled at the rounding floor above ``tol``
                (once 50 evaluations show it falling too slowly to reach ``tol``, not after ``max_iter``).
        """
        options = SolverOptions.of(options, **keywords)
        if len(zs) != len(self.scales):
            raise ValueError(f"need {len(self.scales)} latent pieces, got {len(zs)}")
        uncertified = self.config.attention_variant != "certified" and options.allow_uncertified is None
        attention_options = replace(options, allow_uncertified=True) if uncertified else options
        h = zs[-1]
        for index in reversed(range(len(self.scales))):
            scale = self.scales[index]
            if index < len(self.scales) - 1:
                h = torch.cat([zs[index], h], dim=1)
            if "attention" in scale:
                h = scale["attention"].inverse(h, attention_options)
            h = scale["steps"].inverse(h, options)
            if self.config.strides[index] == 2:
                h = self.squeeze.inverse(h)
        return self.squeeze.inverse(h)

    @torch.no_grad()
    def prior_sample(
        self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """n draws z from the prior, one piece per scale ([n, *z_shape]), its standard deviation scaled by
        ``temperature``; the noise comes from ``generator`` (on the CPU, so a seed gives the same z on every device)."""
        check_positive_int(n, "n")
        zs = []
        for mean, log_std in zip(self.prior_mean, self.prior_log_std):
            noise = torch.randn((n, *mean.shape), generator=generator, dtype=mean.dtype).to(mean.device)
            zs.append(mean + temperature * log_std.exp() * noise)
        return zs

    @torch.no_grad()
    def sample(
        self,
        n: int,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        options: SolverOptions | None = None,
        **keywords,
    ) -> torch.Tensor:
        """n exact samples [n, C, H, W] in the model's dtype: z from :meth:`prior_sample`, then :meth:`inverse` to a
        tolerance (``options``, or keyword solver options such as ``tol``; the default suits the dtype)."""
        options = SolverOptions.of(options, **keywords)
        return self.inverse(self.prior_sample(n, temperature, generator), options)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, options: SolverOptions | None = None, **keywords
    ) -> tuple[torch.Tensor, float]:
        """(inverse(forward(x)), max_b ‖x̂_b − x_b‖/‖x_b‖): the whole model's inversion error, solved with ``options``
        (or keyword solver options, as :meth:`inverse`)."""
        options = SolverOptions.of(options, **keywords)
        x_hat = self.inverse(self.latents(x), options)
        error = float(relative_error(x_hat, x).max())
        return x_hat, error

    def lipschitz_bounds(self) -> list[float]:
        """The certified Lip(g) of every residual block's branch, in order (all < 1 for a certified model)."""
        bounds = []
        for scale in self.scales:
            bounds += [step.residual.branch_lipschitz_bound() for step in scale["steps"]]
            if "attention" in scale:
                bounds.append(scale["attention"].branch_lipschitz_bound())
        return bounds

    def attention_blocks(self) -> list[InvertibleResidual]:
        return [scale["attention"] for scale in self.scales if "attention" in scale]

    @torch.no_grad()
    def attention_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps that enter each attention block (in scale order) for images ``x``: what
        ``block.g.attention_map`` needs to show where the trained attention looks."""
        inputs: list[torch.Tensor] = []
        self._walk(x, None, attention_inputs=inputs)
        return inputs


def with_attention(config: FlowConfig, kind: str | None, scale: int = 0) -> FlowConfig:
    """``config`` with attention of ``kind`` (or none) after the blocks of ``scale`` and none elsewhere.

    Arguments:
        config: the :class:`FlowConfig` to change (not modified).
        kind: a kind of :data:`invattn.KINDS` (of the config's ``attention_variant``), or None for no attention.
        scale: the index of the scale that gets it (default 0).
    Returns:
        a new :class:`FlowConfig`.
    Raises:
        ValueError: a kind the config's variant does not have (checked by :class:`FlowConfig`).
        IndexError: a ``scale`` outside the config's scales.
    """
    kinds = [None] * len(config.blocks)
    kinds[scale] = kind
    return replace(config, attention=tuple(kinds))
