"""invattn: invertible attention and invertible residual networks, certified and taught.

Floors, lowest first (an import only points down; ``tests/test_layering.py`` holds them as data and checks every
import against them; ``invattn`` is this package's face): ``_validation``, ``_notebooks`` → ``_files`` → ``norms`` →
``lipschitz``, ``solvers`` → ``logdet`` → ``blocks``, ``branches`` → ``coupling`` → ``attention`` → ``models``,
``data``, ``memory``, ``plots``, ``progress`` → ``classifiers``, ``distributions`` → ``train``, ``toy2d``,
``lesson``, ``diagrams`` → ``ablation`` → ``pretrained`` → ``demos`` → ``invattn``, ``bench``, ``kernel``,
``run_notebooks``, ``compat``, ``colab`` → ``book``, ``course``.

The block contract is :class:`InvertibleBlock` (``invattn.blocks``); :mod:`invattn.distributions` puts any block into
``torch.distributions``.
"""

from .attention import KINDS, PAPER_KINDS, AttentionCoupling, make_attention
from .blocks import ActNorm, InvertibleBlock, InvertibleResidual, InvertibleSequential, Squeeze, logdet
from .coupling import AdditiveCoupling, AffineCoupling, InjectivePad
from .distributions import BlockTransform, ResidualFlowDistribution
from .lipschitz import (
    LipSwish,
    SpectralNorm,
    estimate_lipschitz,
    lipschitz_bound,
    operator_norm,
    power_iteration_norm,
    spectral_norm,
)
from .logdet import LogdetOptions, RouletteVarianceWarning, roulette_variance_is_finite, series_truncation_bound
from .solvers import InverseInfo, InversionError, InversionWarning, SolverOptions

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "PAPER_KINDS",
    "make_attention",
    "ActNorm",
    "AdditiveCoupling",
    "AffineCoupling",
    "AttentionCoupling",
    "BlockTransform",
    "InjectivePad",
    "InvertibleBlock",
    "InverseInfo",
    "InversionError",
    "InversionWarning",
    "InvertibleResidual",
    "InvertibleSequential",
    "LipSwish",
    "LogdetOptions",
    "SolverOptions",
    "SpectralNorm",
    "Squeeze",
    "estimate_lipschitz",
    "lipschitz_bound",
    "logdet",
    "operator_norm",
    "power_iteration_norm",
    "ResidualFlowDistribution",
    "roulette_variance_is_finite",
    "RouletteVarianceWarning",
    "series_truncation_bound",
    "spectral_norm",
]
