"""The convolutional residual branch of the i-ResNet, with certified spectral norms or without.

One floor above :mod:`invattn.lipschitz`, below the density model (:mod:`invattn.models`) and the classifiers
(:mod:`invattn.classifiers`), which both build their residual branches here.
"""

from __future__ import annotations

from torch import nn

from ._validation import check_choice
from .lipschitz import LipSwish, spectral_norm

__all__ = ["conv_branch"]


def conv_branch(
    channels: int,
    width: int,
    size: int,
    coeff: float | None,
    activation: str = "elu",
    input_nonlinearity: bool = True,
) -> nn.Sequential:
    """g = [act →] conv3×3 (C→width) → act → conv1×1 (width→width) → act → conv3×3 (width→C), padding 1.

    With ``coeff`` every convolution is :func:`invattn.spectral_norm`-constrained to an operator norm ≤ coeff on
    size×size inputs, so Lip(g) ≤ coeff³ (activations 1-Lipschitz); with ``coeff=None`` the convolutions are
    unconstrained (an ordinary ResNet branch, no bound). Either way the layers are built in the same order, so a
    seed gives the same initial weights and the same ``state_dict`` keys (``"1.weight"``, … shifted by the optional
    first activation; a constrained layer stores ``parametrizations.weight.original``).

    Arguments:
        channels: C, input and output channels ([B, C, size, size] → [B, C, size, size]).
        width: hidden channels.
        size: the input's side H = W (the certified norm of a 3×3 convolution holds at that size only).
        coeff: the bound per convolution in (0, 1), or None for unconstrained convolutions.
        activation: "elu" (i-ResNet) or "lipswish" (Residual Flows).
        input_nonlinearity: start with an activation (every block but the model's first).
    Returns:
        the branch, an ``nn.Sequential``.
    Raises:
        ValueError: an unknown activation or a coeff outside (0, 1).
    """
    check_choice(activation, "activation", ("elu", "lipswish"))
    act = (lambda: nn.ELU()) if activation == "elu" else (lambda: LipSwish())  # noqa: E731

    def conv(layer: nn.Conv2d, input_size: tuple[int, int] | None = None) -> nn.Module:
        return layer if coeff is None else spectral_norm(layer, coeff, input_size=input_size)

    layers = [act()] if input_nonlinearity else []
    layers += [
        conv(nn.Conv2d(channels, width, 3, padding=1), (size, size)),
        act(),
        conv(nn.Conv2d(width, width, 1)),
        act(),
        conv(nn.Conv2d(width, channels, 3, padding=1), (size, size)),
    ]
    return nn.Sequential(*layers)
