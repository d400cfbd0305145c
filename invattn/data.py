"""Real images that need no download, the data sets the papers used, and the paper's pre-processing.

Offline (shipped inside installed packages):

* :func:`photograph`: a 600×512 RGB photograph (Grace Hopper) from matplotlib; :func:`sample_photographs`
  adds scikit-learn's two 427×640 photographs (a temple in China, a flower).
* :func:`photograph_crops`: many 32×32 (or any size) crops of those photographs, for experiments at CIFAR scale.
* :func:`photograph_patches`: a CIFAR-sized data set, 5488 32×32 patches of nine photographs (those three and six
  that scikit-image ships), the training and held-out patches cut from different photographs
  (:data:`PATCH_PHOTOGRAPHS`).
* :func:`full_scale_photograph`: a photograph at CelebA's aligned size, 218×178 (the paper's full scale).
* :func:`digits`: scikit-learn's 1797 real handwritten 8×8 digits, split two ways (always the same way each):
  :func:`digits_density_split` for the density models (the first :data:`DIGITS_HELD_OUT_FROM` = 1500 for training,
  the last 297 held out), :func:`digits_split` for the classifiers (a seeded random 80 % / 20 %, with labels).

Online data sets (torchvision; never downloaded implicitly): :func:`load_images` with ``"cifar10"``,
``"svhn"``, ``"mnist"``, ``"celeba"`` or ``"folder"``, and a :class:`DatasetNotFoundError` that says where
the files were looked for and how to get them. :func:`load_labelled`: images with their class labels
(``"digits"`` offline, ``"cifar10"``, ``"svhn"``, ``"mnist"``), for the classifiers.

:func:`dequantize`: x ↦ (255·x + U(0, 1))/256 − 0.5, the paper's input range [−0.5, 0.5).
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import check_positive_int

__all__ = [
    "photograph",
    "photograph_thumbnail",
    "sample_photographs",
    "photograph_crops",
    "PATCH_PHOTOGRAPHS",
    "PATCH_SCALES",
    "photograph_patches",
    "full_scale_photograph",
    "digits",
    "DIGITS_HELD_OUT_FROM",
    "digits_density_split",
    "digits_split",
    "load_images",
    "load_labelled",
    "LABELLED",
    "DATASETS",
    "DatasetNotFoundError",
    "dequantize",
]

DATASETS = ("photos", "patches", "cifar10", "svhn", "mnist", "celeba", "folder")


class DatasetNotFoundError(FileNotFoundError):
    """A requested data set is not on disk (nothing is downloaded without being asked)."""


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
    """The offline photograph (Grace Hopper, shipped with matplotlib) as a float tensor in [0, 1].

    Returns:
        the photograph [3, 600, 512], float32, values in [0, 1] (8-bit levels / 255).
    Raises:
        FileNotFoundError: when this matplotlib installation lacks its sample photograph grace_hopper.jpg.
    """
    return torch.from_numpy(_photograph_uint8()).permute(2, 0, 1).float().div_(255.0)


def photograph_thumbnail(size: int = 64) -> torch.Tensor:
    """The photograph's central 400×400 square (rows 40–439, columns 56–455: the face), resized with antialiasing.

    What the inversion demo (lesson 04 and the app) inverts.

    Arguments:
        size: the side of the result in pixels (default 64).
    Returns:
        the thumbnail [3, size, size], float32, in [0, 1].
    Raises:
        TypeError: when ``size`` is not an integer.
        ValueError: when ``size`` < 1.
        FileNotFoundError: when matplotlib's sample photograph is missing.
    """
    check_positive_int(size, "size")
    square = photograph()[None, :, 40:440, 56:456]
    return torch.nn.functional.interpolate(square, size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)


@lru_cache(maxsize=1)
def _sklearn_photographs_uint8() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.array(image) for image in load_sample_images().images)


def sample_photographs() -> list[torch.Tensor]:
    """The offline photographs: Grace Hopper (matplotlib), then scikit-learn's china and flower.

    Returns:
        a list of three float32 tensors [3, H, W] in [0, 1]: [3, 600, 512], then two [3, 427, 640].
    Raises:
        FileNotFoundError: when matplotlib's sample photograph is missing.
        ImportError: without scikit-learn.
    """
    photos = [photograph()]
    for image in _sklearn_photographs_uint8():
        photos.append(torch.from_numpy(image.copy()).permute(2, 0, 1).float().div_(255.0))
    return photos


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 real handwritten 8×8 digits, with their labels.

    Returns:
        (images [1797, 1, 8, 8] float32 in [0, 1] (16 grey levels: value / 16), labels [1797] int64 in 0..9).
    Raises:
        ImportError: without scikit-learn.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    images = torch.from_numpy(data.images).float().div_(16.0).unsqueeze(1)
    return images, torch.from_numpy(data.target)


# The density models' split of digits(): indices below it train (the digits preset's n_train is at most this),
# the 297 from it on (1500–1796) are held out, for the ablation's bits/dim, the demos and lesson 08.
DIGITS_HELD_OUT_FROM = 1500


def digits_density_split() -> tuple[torch.Tensor, torch.Tensor]:
    """The density models' fixed split of :func:`digits` by position: the first 1500 train, the last 297 are held out.

    train = digits[:H], held out = digits[H:], H = :data:`DIGITS_HELD_OUT_FROM` = 1500, in scikit-learn's order (the
    shipped density checkpoints were trained on the first 1500; ``python -m invattn.ablation`` scores the rest).
    Not :func:`digits_split`, the classifiers' random split: the two held-out sets differ.

    Returns:
        (training images [1500, 1, 8, 8], held-out images [297, 1, 8, 8]), in [0, 1] (16 grey levels), no labels.
    Raises:
        ImportError: without scikit-learn.
    """
    images = digits()[0]
    return images[:DIGITS_HELD_OUT_FROM], images[DIGITS_HELD_OUT_FROM:]


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False).clamp_(0.0, 1.0)


def photograph_crops(
    count: int, size: int = 32, seed: int = 0, min_side: int = 48, max_side: int = 256
) -> torch.Tensor:
    """``count`` square crops of the offline photographs, resized to ``size``×``size`` (experiments at CIFAR scale).

    Each crop comes from a random photograph of :func:`sample_photographs`, at a random position, with a random side
    of ``min_side``..``max_side`` pixels (capped by the photograph), resized with antialiasing. Deterministic for a
    given ``seed`` (its own generator; the global random state is untouched).

    Arguments:
        count: how many crops.
        size: their side after resizing, in pixels (default 32).
        seed: the seed of the crops' generator.
        min_side: the smallest crop side before resizing, in pixels.
        max_side: the largest crop side before resizing, in pixels.
    Returns:
        the crops [count, 3, size, size], float32, in [0, 1].
    Raises:
        TypeError: when ``count`` or ``size`` is not an integer.
        ValueError: when ``count`` or ``size`` < 1.

    >>> crops = photograph_crops(2, size=16, seed=0)
    >>> crops.shape, bool(crops.min() >= 0), bool(crops.max() <= 1)
    (torch.Size([2, 3, 16, 16]), True, True)
    """
    check_positive_int(count, "count")
    check_positive_int(size, "size")
    photos = sample_photographs()
    generator = torch.Generator().manual_seed(seed)
    crops = []
    for _ in range(count):
        image = photos[int(torch.randint(len(photos), (1,), generator=generator))]
        height, width = image.shape[1:]
        side = int(torch.randint(min_side, min(max_side, height, width) + 1, (1,), generator=generator))
        top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
        crops.append(_resize(image[None, :, top : top + side, left : left + side], (size, size)))
    return torch.cat(crops)


# photograph_patches' photographs per split, by file name: the training and the held-out patches come from different
# photographs (the stereo pair motorcycle_left/motorcycle_right shows one scene: both train). Left out of the
# scikit-image files: the grey ones, the synthetic ones (color, chessboard_RGB, phantom), the RGBA logos (horse,
# logo) and the scientific images (hubble_deep_field, ihc, retina), which are not scenes like CIFAR-10's.
PATCH_PHOTOGRAPHS: dict[str, tuple[str, ...]] = {
    "train": (
        "grace_hopper.jpg",
        "china.jpg",
        "flower.jpg",
        "astronaut.png",
        "coffee.png",
        "motorcycle_left.png",
        "motorcycle_right.png",
    ),
    "test": ("chelsea.png", "rocket.jpg"),
}
# the photographs' shorter side before cutting, in patch sides (32 pixels): from half the photograph per patch to
# an eighth of it
PATCH_SCALES = (2, 3, 4, 6, 8)
_PATCH = 32  # the side the patches are cut at; photograph_patches resizes them to its size
_PATCH_STRIDE = 16


def _skimage_photograph_uint8(name: str) -> np.ndarray:
    """A photograph scikit-image ships in ``skimage/data``, read from the installed files (never fetched)."""
    import importlib.util
    from pathlib import Path

    from PIL import Image

    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "scikit-image is not installed: photograph_patches reads the photographs it ships; install it "
            "(`make setup` does, or pip install scikit-image)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"scikit-image's bundled photograph {name} is missing from {path.parent}; reinstall scikit-image "
            "(`make setup` does) to get its offline sample images"
        )
    with Image.open(path) as image:
        if image.mode != "RGB":
            raise ValueError(f"{path} is a {image.mode} image, not an RGB photograph; reinstall scikit-image")
        return np.asarray(image).copy()


def _patch_photograph_uint8(name: str) -> np.ndarray:
    """One photograph of :data:`PATCH_PHOTOGRAPHS` as [H, W, 3] uint8, from the package that ships it."""
    if name == "grace_hopper.jpg":
        return _photograph_uint8()
    if name in ("china.jpg", "flower.jpg"):
        return _sklearn_photographs_uint8()[("china.jpg", "flower.jpg").index(name)]
    return _skimage_photograph_uint8(name)


def _cut_patches(photo: np.ndarray) -> torch.Tensor:
    """The 32×32 patches of one [H, W, 3] uint8 photograph: at each of :data:`PATCH_SCALES`, resized (antialiased) to
    that shorter side and rounded to 8 bits, a grid of stride 16 centred on it, row by row; [n, 3, 32, 32] uint8."""
    image = torch.from_numpy(photo).permute(2, 0, 1).float().div_(255.0)[None]
    height, width = image.shape[-2:]
    patches = []
    for factor in PATCH_SCALES:
        scale = factor * _PATCH / min(height, width)
        resized = _resize(image, (round(height * scale), round(width * scale)))
        levels = (resized * 255.0).round_().to(torch.uint8)[0]
        top, left = (((side - _PATCH) % _PATCH_STRIDE) // 2 for side in levels.shape[-2:])
        grid = levels[:, top:, left:].unfold(1, _PATCH, _PATCH_STRIDE).unfold(2, _PATCH, _PATCH_STRIDE)
        patches.append(grid.permute(1, 2, 0, 3, 4).reshape(-1, 3, _PATCH, _PATCH))
    return torch.cat(patches)


@lru_cache(maxsize=2)
def _patches_uint8(split: str) -> torch.Tensor:
    """Every patch of a split's photographs, in a fixed shuffled order (a permutation seeded with 0)."""
    patches = torch.cat([_cut_patches(_patch_photograph_uint8(name)) for name in PATCH_PHOTOGRAPHS[split]])
    return patches[torch.randperm(len(patches), generator=torch.Generator().manual_seed(0))]


def photograph_patches(split: str = "train", size: int = 32) -> torch.Tensor:
    """A CIFAR-sized offline data set: 32×32 RGB patches of nine photographs, training and held-out photographs apart.

    The photographs ship inside installed packages (:data:`PATCH_PHOTOGRAPHS`): matplotlib's grace_hopper.jpg,
    scikit-learn's china.jpg and flower.jpg, and scikit-image's astronaut.png, coffee.png, motorcycle_left.png,
    motorcycle_right.png (one scene, a stereo pair) train; scikit-image's chelsea.png (a cat) and rocket.jpg are held
    out. Each photograph is resized (antialiased) so that its shorter side is 64, 96, 128, 192 and 256 pixels
    (:data:`PATCH_SCALES` × 32: a patch shows from half the photograph to an eighth of its side, objects and their
    parts rather than flat texture) and cut on a grid of stride 16 (patches overlap by half) centred on it.

    Patches per photograph: grace_hopper 493, china 664, flower 664, astronaut 429, coffee 664, motorcycle_left 623,
    motorcycle_right 623 (train: 4160); chelsea 664, rocket 664 (test: 1328, 24 % of the 5488). They come in a fixed
    shuffled order (a permutation seeded with 0 on its own generator: the global random state is untouched), so the
    first ``n`` mix every photograph and scale. Values are 8-bit levels k/255, as CIFAR-10's, for :func:`dequantize`.
    Cached: the photographs are read and cut once per split.

    Arguments:
        split: ``"train"`` (4160 patches) or ``"test"`` (1328, the held-out photographs).
        size: the patches' side in pixels (default 32, CIFAR-10's): they are cut at 32×32, then resized (antialiased)
            and rounded to 8 bits again; the same patches at every size.
    Returns:
        the patches [4160 or 1328, 3, size, size], float32, values k/255 in [0, 1].
    Raises:
        ValueError: when ``split`` is not ``"train"`` or ``"test"``.
        TypeError: when ``size`` is not an integer; ValueError when ``size`` < 1.
        ImportError: without scikit-image or scikit-learn.
        FileNotFoundError: when a photograph is missing from its package (the message names the package to
            reinstall).
        ValueError: when a bundled photograph is not an RGB image (a changed package).

    >>> patches = photograph_patches("test")
    >>> patches.shape, patches.dtype, bool(torch.equal((patches * 255).round() / 255, patches))
    (torch.Size([1328, 3, 32, 32]), torch.float32, True)
    """
    if not isinstance(split, str) or split not in PATCH_PHOTOGRAPHS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    check_positive_int(size, "size")
    patches = _patches_uint8(split).float().div_(255.0)
    if size != _PATCH:
        patches = (_resize(patches, (size, size)) * 255.0).round_().div_(255.0)
    return patches


def full_scale_photograph(height: int = 218, width: int = 178) -> torch.Tensor:
    """The photograph centre-cropped to the aspect ratio height:width and resized (default: CelebA's aligned 218×178).

    Arguments:
        height: the result's height in pixels (default 218, the paper's full scale).
        width: the result's width in pixels (default 178).
    Returns:
        the photograph [1, 3, height, width], float32, in [0, 1].
    Raises:
        FileNotFoundError: when matplotlib's sample photograph is missing.
    """
    image = photograph()
    full_h, full_w = image.shape[1:]
    crop_w = min(full_w, round(full_h * width / height))
    crop_h = min(full_h, round(crop_w * height / width))
    top, left = (full_h - crop_h) // 2, (full_w - crop_w) // 2
    return _resize(image[None, :, top : top + crop_h, left : left + crop_w], (height, width))


def dequantize(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The paper's pre-processing of [0, 1] images: (round(255·x) + u)/256 − 0.5 with u ~ U(0, 1), in [−0.5, 0.5).

    The images are first rounded to their 8-bit levels, then uniform noise fills each level's bin, so that a
    continuous density on the result gives the discrete images' likelihood (bits/dim).

    Arguments:
        images: images of any shape (e.g. [B, C, H, W]) with values in [0, 1], on any device.
        generator: the CPU generator of the noise (None: torch's global one); the noise is drawn on the CPU in
            ``images``' dtype, then moved to its device.
    Returns:
        the dequantized images, same shape, dtype and device as ``images``, in [−0.5, 0.5).

    >>> x = dequantize(torch.rand(2, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    >>> x.shape, bool(x.min() >= -0.5), bool(x.max() < 0.5)
    (torch.Size([2, 3, 4, 4]), True, True)
    """
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype).to(images.device)
    return (torch.round(images * 255.0) + noise) / 256.0 - 0.5


_HOW_TO_GET = {
    "cifar10": "torchvision.datasets.CIFAR10(root, download=True) on a machine with internet, then copy "
    "the folder cifar-10-batches-py here",
    "svhn": "torchvision.datasets.SVHN(root, split='train'/'test', download=True) on a machine with internet "
    "(files train_32x32.mat, test_32x32.mat)",
    "mnist": "torchvision.datasets.MNIST(root, download=True) on a machine with internet (folder MNIST/raw)",
    "celeba": "the aligned CelebA images (img_align_celeba.zip from the CelebA site), unzipped to "
    "ROOT/celeba/img_align_celeba/*.jpg",
    "folder": "any folder of images (sub-folders allowed), as torchvision.datasets.ImageFolder reads it",
}


def _not_found(name: str, root: str, detail: str = "", offline: str = "photos") -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"data set {name!r} is not under {root!r}{': ' + detail if detail else ''}. Nothing is downloaded "
        f"implicitly (this may be an offline machine). To get it: {_HOW_TO_GET[name]}. Or use "
        f"dataset={offline!r}, the offline default."
    )


def digits_split(
    test_fraction: float = 0.2, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The classifiers' split of :func:`digits` with labels: a seeded random permutation, its first M held out.

    order = ``torch.randperm(1797)`` from a generator seeded with ``seed``; test = order[:M], train = order[M:],
    M = ⌈test_fraction·1797⌉ (360 by default; lesson 09 and :func:`load_labelled` use the defaults). Not
    :func:`digits_density_split`, the density models' split by position: the two held-out sets differ.

    Arguments:
        test_fraction: the held-out share, in (0, 1).
        seed: the permutation's seed.
    Returns:
        (train images [N, 1, 8, 8], train labels [N], test images [M, 1, 8, 8], test labels [M]), N = 1797 − M,
        images in [0, 1].
    Raises:
        ValueError: when ``test_fraction`` is not in (0, 1).
    """
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    images, labels = digits()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    n_test = math.ceil(test_fraction * len(images))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


def _take(
    dataset, count: int | None, size: int, center_crop: int | None = None, channels: int = 3, with_labels: bool = False
):
    from torchvision.transforms import functional as TF

    total = len(dataset) if count is None else min(count, len(dataset))
    images, labels = [], []
    for index in range(total):
        picture, label = dataset[index]
        labels.append(int(label))
        tensor = TF.to_tensor(picture)
        if tensor.shape[0] != channels:  # a grey picture in a colour data set
            tensor = tensor[:1].expand(channels, -1, -1)
        if center_crop is not None:
            tensor = TF.center_crop(tensor, [center_crop, center_crop])
        if size and tuple(tensor.shape[-2:]) != (size, size):
            tensor = _resize(tensor[None], (size, size))[0]
        images.append(tensor)
    if with_labels:
        return torch.stack(images), torch.tensor(labels)
    return torch.stack(images)


LABELLED = ("digits", "cifar10", "svhn", "mnist")


def load_labelled(
    name: str, root: str = "data", split: str = "train", count: int | None = None, size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with their class labels from a classification data set (one of :data:`LABELLED`), for the classifiers.

    ``"digits"`` is offline (:func:`digits_split`: 80 % train, 20 % test, 8×8, resized to ``size`` if given);
    the others are read from ``root`` with torchvision and never downloaded.

    Arguments:
        name: ``"digits"``, ``"cifar10"``, ``"svhn"`` or ``"mnist"``.
        root: the folder torchvision reads (not used by ``"digits"``).
        split: ``"train"`` or ``"test"``.
        count: take the first N images (None: all).
        size: resize to size×size (None: keep the data set's size).
    Returns:
        (images [N, C, H, W] float32 in [0, 1], labels [N] int64); C = 1 for digits and mnist, 3 otherwise.
    Raises:
        ValueError: when ``name`` is not in :data:`LABELLED` or ``split`` is not ``"train"``/``"test"``.
        DatasetNotFoundError: when the data set is not under ``root``; the message says how to get it.
    """
    if name not in LABELLED:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, LABELLED))} for classification; got {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name == "digits":
        train_x, train_y, test_x, test_y = digits_split()
        images, labels = (train_x, train_y) if split == "train" else (test_x, test_y)
        if size and size != 8:
            images = _resize(images, (size, size))
        return images[:count], labels[:count]
    import torchvision.datasets as datasets

    train = split == "train"
    try:
        if name == "cifar10":
            return _take(datasets.CIFAR10(root, train=train, download=False), count, size, with_labels=True)
        if name == "svhn":
            return _take(datasets.SVHN(root, split=split, download=False), count, size, with_labels=True)
        return _take(datasets.MNIST(root, train=train, download=False), count, size, channels=1, with_labels=True)
    except RuntimeError as error:
        raise _not_found(name, root, str(error).split(".")[0], offline="digits") from None


def load_images(
    name: str, root: str = "data", split: str = "train", count: int | None = 1000, size: int | None = 32, seed: int = 0
) -> torch.Tensor:
    """Images from ``name`` (one of :data:`DATASETS`), for the density models.

    ``"photos"`` is offline (crops of :func:`sample_photographs`; the split only changes the seed), and so is
    ``"patches"`` (:func:`photograph_patches`: the split picks the photographs; its order is fixed, ``seed`` unused).
    The others read ``root`` with torchvision and never download. CelebA follows the paper: centre crop 178×178,
    then resize (``size=None`` keeps the full 218×178 aligned image); its first sorted files train, its last ones test.

    Arguments:
        name: ``"photos"``, ``"patches"``, ``"cifar10"``, ``"svhn"``, ``"mnist"``, ``"celeba"`` or ``"folder"`` (an
            ImageFolder).
        root: the folder the data set is read from (not used by ``"photos"`` and ``"patches"``).
        split: ``"train"`` or ``"test"``.
        count: take the first images (None: all; ``"photos"`` then makes 1000 crops).
        size: resize to size×size (None: keep the data set's size; ``"photos"`` and ``"patches"`` then use 32).
        seed: the seed of the ``"photos"`` crops (the test split adds 10 000).
    Returns:
        images [count, C, size, size], float32, in [0, 1]; C = 1 for mnist, 3 otherwise.
    Raises:
        ValueError: when ``name`` is not in :data:`DATASETS`, ``split`` is not ``"train"``/``"test"``, or ``count``
            or ``size`` is below 1.
        TypeError: when ``count`` or ``size`` is neither None nor an integer.
        DatasetNotFoundError: when the data set is not under ``root``; the message says where it was looked for and
            how to get it.
    """
    if not isinstance(name, str) or name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(map(repr, DATASETS))}; got {name!r}")
    if not isinstance(split, str) or split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    for option, value in (("count", count), ("size", size)):
        if value is not None:
            check_positive_int(value, option)
    if name == "photos":
        return photograph_crops(count or 1000, size or 32, seed=seed + (0 if split == "train" else 10_000))
    if name == "patches":
        return photograph_patches(split, size or 32)[:count]
    import os

    import torchvision.datasets as datasets

    train = split == "train"
    try:
        if name == "cifar10":
            return _take(datasets.CIFAR10(root, train=train, download=False), count, size)
        if name == "svhn":
            return _take(datasets.SVHN(root, split=split, download=False), count, size)
        if name == "mnist":
            return _take(datasets.MNIST(root, train=train, download=False), count, size, channels=1)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        raise _not_found(name, root, str(error).split(".")[0]) from None
    if name == "celeba":
        folder = next(
            (
                f
                for f in (os.path.join(root, "celeba", "img_align_celeba"), os.path.join(root, "img_align_celeba"))
                if os.path.isdir(f)
            ),
            None,
        )
        if folder is None:
            raise _not_found(name, root, "no img_align_celeba folder")
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith((".jpg", ".png")))
        if not files:
            raise _not_found(name, root, f"{folder} holds no images")
        # the paper: first images for training, last ones for testing (sorted here, so the split is reproducible)
        chosen = files[: count or len(files)] if train else files[-(count or len(files)) :]
        from PIL import Image

        pictures = [(Image.open(os.path.join(folder, f)).convert("RGB"), 0) for f in chosen]
        return _take(pictures, None, size or 0, center_crop=178 if size else None)
    if not os.path.isdir(root):
        raise _not_found(name, root)
    return _take(datasets.ImageFolder(root), count, size)
