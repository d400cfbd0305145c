"""Real images that need no download, and the paper's pixel pre-processing.

* :func:`photograph`: a real 600×512 RGB photograph (Grace Hopper) that ships inside matplotlib.
* :func:`photograph_crops`: many 32×32 (or any size) real-image crops of it, for experiments at CIFAR scale.
* :func:`full_scale_photograph`: the photograph at CelebA's aligned size, 218×178 (the paper's full scale).
* :func:`dequantize`: x ↦ (255·x + U(0, 1))/256 − 0.5, the paper's input range [−0.5, 0.5).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import check_positive_int

__all__ = ["photograph", "photograph_crops", "full_scale_photograph", "dequantize"]


@lru_cache(maxsize=1)
def _photograph_uint8() -> np.ndarray:
    import matplotlib.cbook as cbook
    import matplotlib.image as mpimg

    try:
        with cbook.get_sample_data("grace_hopper.jpg") as handle:
            return mpimg.imread(handle, format="jpg").copy()
    except (OSError, ValueError) as error:  # a stripped matplotlib install
        raise FileNotFoundError(
            "matplotlib's sample photograph grace_hopper.jpg is missing from this installation; "
            "reinstall matplotlib (`make setup` does) to get the offline sample images"
        ) from error


def photograph() -> torch.Tensor:
    """The photograph as a float tensor [3, 600, 512] with values in [0, 1]."""
    return torch.from_numpy(_photograph_uint8()).permute(2, 0, 1).float().div_(255.0)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)


def photograph_crops(count: int, size: int = 32, seed: int = 0, min_side: int = 48, max_side: int = 256) -> torch.Tensor:
    """``count`` square crops of random position and side (``min_side``..``max_side`` pixels), resized to
    ``size``×``size``: [count, 3, size, size] in [0, 1]. Deterministic for a given ``seed``."""
    check_positive_int(count, "count")
    check_positive_int(size, "size")
    image = photograph()
    height, width = image.shape[1:]
    generator = torch.Generator().manual_seed(seed)
    sides = torch.randint(min_side, min(max_side, height, width) + 1, (count,), generator=generator)
    crops = []
    for side in sides.tolist():
        top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
        crops.append(_resize(image[None, :, top : top + side, left : left + side], (size, size)))
    return torch.cat(crops)


def full_scale_photograph(height: int = 218, width: int = 178) -> torch.Tensor:
    """The photograph centre-cropped to the aspect ratio height:width and resized: [1, 3, height, width]."""
    image = photograph()
    full_h, full_w = image.shape[1:]
    crop_w = min(full_w, round(full_h * width / height))
    crop_h = min(full_h, round(crop_w * height / width))
    top, left = (full_h - crop_h) // 2, (full_w - crop_w) // 2
    return _resize(image[None, :, top : top + crop_h, left : left + crop_w], (height, width))


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's pre-processing of [0, 1] images: (255·x + u)/256 − 0.5 with u ~ U(0, 1), in [−0.5, 0.5)."""
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (torch.round(images * 255.0) + noise) / 256.0 - 0.5
