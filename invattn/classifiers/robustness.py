"""Certified robustness of the i-ResNet classifier (:func:`certified_radius`, Tsuzuku, Sato & Sugiyama,
"Lipschitz-margin training", NeurIPS 2018) and the attack that checks it (:func:`pgd_attack`)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .._validation import check_finite, check_images, check_model, check_positive_int
from ..norms import per_sample_norm
from .iresnet import IResNetClassifier
from .rounding import check_rounding_model, evaluation_error_bound

__all__ = ["certified_radius", "pgd_attack"]


@torch.no_grad()
def certified_radius(model: IResNetClassifier, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Certified ℓ₂ radii of the i-ResNet classifier's predictions: no δ with ‖δ‖₂ < radius changes the class of x + δ.

    radius = max(0, margin − √2·(E + E₆₄)) / (√2·L), margin = f_top(x) − f_second(x), L ≥ Lip(x ↦ logits).

    With L ≥ Lip(x ↦ logits) certified, each logit difference f_k − f_j is √2·L-Lipschitz (its gradient is
    (e_k − e_j)ᵀJ and ‖e_k − e_j‖ = √2), so the top logit stays on top while ‖δ‖ < margin/(√2·L), margin =
    f_top − f_second (Tsuzuku, Sato & Sugiyama, 2018, Prop. 1). L is certified for f, the network in exact arithmetic
    with the effective weights of the float64 model (a float64 copy of a float32 model, with its own certificates);
    the margins are computed by that float64 model at x, and E₆₄ ≥ ‖f̂₆₄(x) − f(x)‖₂ bounds that pass's rounding (the
    same recursion with u = 2⁻⁵³), so the exact margin is ≥ margin − √2·E₆₄.

    Which function the radius is for: ``model(x')`` as the user evaluates it, in the model's own dtype (float32 or
    float64), eval mode, on the CPU. Let f̂(x') = model(fl(x')) computed in that dtype and r₀ = max(0, margin)/(√2·L);
    :func:`~invattn.classifiers.rounding.evaluation_error_bound` proves E ≥ ‖f̂(x') − f(x')‖₂ for every x' with
    ‖x' − x‖ ≤ r₀ (the layer-by-layer recursion is its docstring), so for
    k ≠ top, f̂_top − f̂_k ≥ f_top − f_k − √2·E ≥ margin − √2·E₆₄ − √2·L‖x' − x‖ − √2·E (as |a| + |b| ≤ √2‖(a, b)‖),
    and the returned radius is max(0, margin − √2·(E + E₆₄))/(√2·L) ≤ r₀: inside it the model's prediction is the
    certified class (at x itself too, so a point whose prediction in the model's dtype differs gets 0). For a float64
    model E and E₆₄ are about 10⁻¹³ of the logits, for a float32 model E is about 10⁻⁴ of them (no guessed
    allowance: a crafted model whose logits cancel to nearly 0 gets the rounding it really has).

    Assumptions, refused otherwise with a ``ValueError`` that says why and what to do: the model is float32 or
    float64 and runs on the CPU (on CUDA, TF32 and FFT/Winograd convolutions break the rounding model), a float32
    model with no reduced-precision float32 mode, and only convolutional residual blocks (no attention block); the
    CPU convolution is a direct or GEMM-based one (PyTorch's oneDNN and im2col kernels), not Winograd.

    Arguments:
        model: an :class:`IResNetClassifier` with ``coeff`` set, float32 or float64, on the CPU.
        x: images [B, C, H, W] centred to [−0.5, 0.5) (as the model was trained), the model's dtype and device.
    Returns:
        (radius [B] in x's dtype, rounded toward zero; predicted class [B] int64, of the float64 model at x).
    Raises:
        ValueError: for a model without a certified bound (i-RevNet, the unconstrained ResNet), one outside the
            rounding model (above: the message names the remedy, e.g. ``certified_radius(model.double(),
            x.double())`` or moving to the CPU), weights whose norms overflow float64, or x of the wrong shape,
            device or with non-finite values.
        TypeError: for a model wrapped in ``DataParallel`` (pass ``.module``) or x not a floating-point tensor.

    >>> from invattn.classifiers import build_classifier, classifier_preset
    >>> torch.manual_seed(0) and None
    >>> model = build_classifier(classifier_preset("iresnet", "smoke")).eval()
    >>> x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) - 0.5
    >>> radius, predicted = certified_radius(model, x)
    >>> radius.shape, bool((radius >= 0).all()), bool((predicted == model(x).argmax(1)).all())
    (torch.Size([3]), True, True)
    """
    check_model(model, "model")
    check_images(x, "x")
    if not isinstance(model, IResNetClassifier) or model.config.coeff is None:
        raise ValueError(
            f"certified radii need a certified Lipschitz bound; this {type(model).__name__} has none "
            "(i-RevNet and the unconstrained ResNet are not Lipschitz-constrained)"
        )
    dtype = model.head.weight.dtype
    check_rounding_model(model)
    check_images(x, "x", dtype, model.head.weight.device)
    check_finite(x, "x")
    reference = model if dtype == torch.float64 else copy.deepcopy(model).double()
    was_training = reference.training
    reference.eval()
    try:
        radius, predicted = _radius_in_float64(model, reference, x)
    finally:
        reference.train(was_training)
    rounded = radius.to(x.dtype)
    rounded = torch.where(rounded.double() > radius, torch.nextafter(rounded, torch.zeros_like(rounded)), rounded)
    return rounded, predicted  # rounded toward zero: never above the proven radius


def _radius_in_float64(
    model: IResNetClassifier, reference: IResNetClassifier, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(proven radius [B] float64, predicted class [B]) of :func:`certified_radius`, ``reference`` (the float64
    model) in eval mode."""
    try:
        bound = reference.logit_lipschitz_bound()
    except OverflowError:
        raise ValueError(
            "the model's weights are too large for a certified Lipschitz bound (their norms overflow "
            "float64): no certified radius can be given"
        ) from None
    logits = reference(x.double())
    top2 = logits.topk(2, dim=1)
    margin = top2.values[:, 0] - top2.values[:, 1]
    ball = torch.clamp(margin, min=0) / (math.sqrt(2) * bound)  # r₀ ≥ every radius returned below
    # certify what the user evaluates (the model in its own dtype) and the margin of exact arithmetic
    error, error64 = evaluation_error_bound(model, reference, x.double(), ball)
    radius = torch.clamp(margin - math.sqrt(2) * (error + error64), min=0) / (math.sqrt(2) * bound)
    radius = torch.where(torch.isfinite(radius), radius, torch.zeros_like(radius))  # an overflowing pass: none
    return radius, top2.indices[:, 0]


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    predicted: torch.Tensor,
    radius: torch.Tensor,
    steps: int = 40,
    step_fraction: float = 0.25,
) -> torch.Tensor:
    """Which predictions a projected-gradient attack changes inside ℓ₂ balls.

    Ascends the runner-up logit minus the predicted one over δ, steps of ``step_fraction``·radius along the
    normalised gradient, each projected back onto ‖δ‖ ≤ radius (per sample). A check of :func:`certified_radius`,
    never a proof: finding nothing inside the certified radius is what it must do.

    Arguments:
        model: any classifier, x ↦ logits [B, classes].
        x: inputs [B, ...] (as the model takes them).
        predicted: the classes to attack [B] int64.
        radius: the ℓ₂ radius per sample [B], in x's units.
        steps: attack steps (≥ 1).
        step_fraction: each step's length as a fraction of the radius.
    Returns:
        [B] bool: True where the attack found a δ with ‖δ‖ ≤ radius that changes the prediction.
    Raises:
        ValueError: for steps < 1.
    """
    check_positive_int(steps, "steps")
    classes = None
    delta = torch.zeros_like(x, requires_grad=True)
    shape = (-1,) + (1,) * (x.dim() - 1)
    for _ in range(steps):
        logits = model(x + delta)
        classes = classes if classes is not None else nn.functional.one_hot(predicted, logits.shape[1]).bool()
        runner_up = logits.masked_fill(classes, -math.inf).amax(1)
        gap = (runner_up - logits.gather(1, predicted[:, None])[:, 0]).sum()
        (grad,) = torch.autograd.grad(gap, delta)
        with torch.no_grad():
            norm = per_sample_norm(grad).clamp_min(1e-30)
            delta += step_fraction * radius.view(shape) * grad / norm.view(shape)
            length = per_sample_norm(delta).clamp_min(1e-30)
            delta *= torch.clamp(radius / length, max=1.0).view(shape)
    with torch.no_grad():
        return model(x + delta).argmax(1) != predicted
