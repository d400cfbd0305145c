"""invattn: invertible attention and invertible residual networks, certified and taught.

Floors (an import only points down): ``_validation``, ``_files`` → ``norms`` → ``lipschitz``, ``solvers``, ``logdet`` →
``branches``, ``blocks`` (the block contract :class:`InvertibleBlock`), ``coupling`` → ``attention`` → ``models``,
``classifiers``, ``data``, ``memory``, ``lesson``, ``plots`` → ``train``, ``widgets``, ``bench``.
"""

from .attention import KINDS, PAPER_KINDS, AttentionCoupling, make_attention
from .blocks import ActNorm, InvertibleBlock, InvertibleResidual, InvertibleSequential, Squeeze, logdet
from .coupling import AdditiveCoupling, AffineCoupling, InjectivePad
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
    "roulette_variance_is_finite",
    "RouletteVarianceWarning",
    "series_truncation_bound",
    "spectral_norm",
]
