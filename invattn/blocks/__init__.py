"""Invertible building blocks: the contract they keep, the residual block x + g(x), ActNorm, Squeeze and their chain.

Every block derives from :class:`InvertibleBlock` (``forward``, ``inverse``, ``forward_and_logdet``, ``logdet``; the
contract is stated there); ``inverse(forward(x)) = x`` up to the solver's tolerance (residual blocks) or exactly
(ActNorm, Squeeze).
"""

from .base import InvertibleBlock, InvertibleSequential, logdet
from .residual import InvertibleResidual
from .simple import ActNorm, Squeeze

__all__ = ["InvertibleBlock", "InvertibleResidual", "ActNorm", "Squeeze", "InvertibleSequential", "logdet"]
