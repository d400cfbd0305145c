"""Offline images, the paper's dequantisation, and clear errors for data sets that are not there."""

import pytest
import torch

from invattn import data


@pytest.mark.compat
def test_offline_photographs_and_crops():
    photos = data.sample_photographs()
    assert len(photos) == 3 and all(p.shape[0] == 3 and 0 <= p.min() and p.max() <= 1 for p in photos)
    crops = data.photograph_crops(5, 32, seed=1)
    assert crops.shape == (5, 3, 32, 32)
    assert torch.equal(crops, data.photograph_crops(5, 32, seed=1))  # deterministic
    assert not torch.equal(crops, data.photograph_crops(5, 32, seed=2))
    assert crops.std() > 0.05  # real pictures, not flat fields
    assert data.full_scale_photograph().shape == (1, 3, 218, 178)


def test_digits_are_the_real_ones():
    images, labels = data.digits()
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == 0 and images.max() == 1 and set(labels.tolist()) == set(range(10))


def test_the_two_digits_splits():
    """The density split is by position (the first 1500 train, the last 297 held out); the classifiers' is a seeded
    random 80/20 split with labels; each is the same on every call."""
    images = data.digits()[0]
    train, held_out = data.digits_density_split()
    assert data.DIGITS_HELD_OUT_FROM == 1500 and train.shape == (1500, 1, 8, 8) and held_out.shape == (297, 1, 8, 8)
    assert torch.equal(train, images[:1500]) and torch.equal(held_out, images[1500:])
    train_x, train_y, test_x, test_y = data.digits_split()
    assert train_x.shape == (1437, 1, 8, 8) and test_x.shape == (360, 1, 8, 8) and len(train_y) == 1437
    order = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(test_x, images[order[:360]]) and torch.equal(train_x, images[order[360:]])
    assert all(torch.equal(a, b) for a, b in zip(data.digits_split(), (train_x, train_y, test_x, test_y)))
    assert data.digits_split(0.5, seed=1)[2].shape == (899, 1, 8, 8)
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="test_fraction"):
            data.digits_split(fraction)


def test_dequantize_matches_the_paper_range():
    x = torch.tensor([0.0, 1.0, 0.5])
    out = data.dequantize(x.expand(1000, 3), torch.Generator().manual_seed(0))
    assert out.min() >= -0.5 and out.max() < 0.5
    assert out[:, 0].max() < -0.5 + 1 / 256 and out[:, 1].min() >= 0.5 - 1 / 256


def test_photos_split_and_unknown_dataset():
    train = data.load_images("photos", split="train", count=4)
    test = data.load_images("photos", split="test", count=4)
    assert train.shape == (4, 3, 32, 32) and not torch.equal(train, test)
    with pytest.raises(ValueError, match="dataset must be one of"):
        data.load_images("imagenet")
    with pytest.raises(ValueError, match="split"):
        data.load_images("photos", split="validation")


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist", "celeba", "folder"])
def test_missing_dataset_says_how_to_get_it(name, tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="Nothing is downloaded") as error:
        data.load_images(name, root=str(tmp_path / "absent"))
    assert "dataset='photos'" in str(error.value)


@pytest.mark.compat
def test_folder_of_images_loads(tmp_path):
    from PIL import Image

    folder = tmp_path / "pictures" / "class_a"
    folder.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (40, 30), color=(40 * i, 100, 200)).save(folder / f"{i}.png")
    images = data.load_images("folder", root=str(tmp_path / "pictures"), count=2, size=16)
    assert images.shape == (2, 3, 16, 16)


# -- the offline CIFAR-sized data set: patches of photographs ---------------------------------------------------------
PATCH_COUNTS = {
    "grace_hopper.jpg": 493,
    "china.jpg": 664,
    "flower.jpg": 664,
    "astronaut.png": 429,
    "coffee.png": 664,
    "motorcycle_left.png": 623,
    "motorcycle_right.png": 623,
    "chelsea.png": 664,
    "rocket.jpg": 664,
}


def test_photograph_patches_are_8_bit_32x32_from_disjoint_photographs():
    data._patches_uint8.cache_clear()
    state = torch.random.get_rng_state()
    train, test = data.photograph_patches("train"), data.photograph_patches("test")
    assert torch.equal(torch.random.get_rng_state(), state)  # its own generator: the global random state is untouched
    assert train.shape == (4160, 3, 32, 32) and test.shape == (1328, 3, 32, 32)
    assert train.dtype == test.dtype == torch.float32
    for patches in (train, test):
        assert patches.min() >= 0 and patches.max() <= 1
        assert torch.equal((patches * 255).round() / 255, patches)  # 8-bit levels k/255, as CIFAR-10's
        assert patches.std(dim=(1, 2, 3)).median() > 0.08  # pictures, not flat fields
    assert 0.15 <= len(test) / (len(train) + len(test)) <= 0.25
    # training and held-out patches come from different photographs: no held-out patch is a training one
    photographs = data.PATCH_PHOTOGRAPHS
    assert not set(photographs["train"]) & set(photographs["test"])
    assert {"motorcycle_left.png", "motorcycle_right.png"} <= set(photographs["train"])  # one scene, one split
    seen = {bytes(p) for p in (train * 255).round().to(torch.uint8).numpy()}
    assert not any(bytes(p) in seen for p in (test * 255).round().to(torch.uint8).numpy())
    # deterministic, and what a caller does to the result does not reach the cache
    train[:] = 0
    again = data.photograph_patches("train")
    assert torch.equal(again, data.photograph_patches("train")) and again.abs().sum() > 0
    assert torch.equal(test, data.photograph_patches("test")) and torch.equal(data.photograph_patches(), again)


def test_photograph_patches_counts_are_the_documented_ones():
    counts = {name: len(data._cut_patches(data._patch_photograph_uint8(name))) for name in PATCH_COUNTS}
    assert counts == PATCH_COUNTS
    doc = data.photograph_patches.__doc__
    for name, count in counts.items():
        assert f"{name.split('.')[0]} {count}" in doc
    for split, total in (("train", 4160), ("test", 1328)):
        assert sum(counts[name] for name in data.PATCH_PHOTOGRAPHS[split]) == total and f"{total}" in doc
    assert data.PATCH_SCALES == (2, 3, 4, 6, 8)


def test_photograph_patches_sizes_loading_and_errors():
    small = data.photograph_patches("test", size=16)
    assert small.shape == (1328, 3, 16, 16) and torch.equal((small * 255).round() / 255, small)
    assert torch.equal(data.load_images("patches", split="test", count=10), data.photograph_patches("test")[:10])
    assert data.load_images("patches", count=None, size=None).shape == (4160, 3, 32, 32)
    assert "patches" in data.DATASETS
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.photograph_patches("validation")
    with pytest.raises(ValueError, match="size"):
        data.photograph_patches("train", size=0)
    with pytest.raises(TypeError, match="size"):
        data.photograph_patches("train", size="32")


def test_a_missing_scikit_image_photograph_names_the_package(tmp_path, monkeypatch):
    import importlib.machinery
    import importlib.util

    from PIL import Image

    find_spec = importlib.util.find_spec
    location = {"skimage": str(tmp_path)}

    def fake(name, *args):  # scikit-image installed at tmp_path (without its photographs), or not at all
        if name != "skimage":
            return find_spec(name, *args)
        if location["skimage"] is None:
            return None
        spec = importlib.machinery.ModuleSpec("skimage", None, is_package=True)
        spec.submodule_search_locations = [location["skimage"]]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", fake)
    data._patches_uint8.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="reinstall scikit-image"):
            data.photograph_patches("test")
        (tmp_path / "data").mkdir()
        Image.new("RGBA", (40, 30)).save(tmp_path / "data" / "chelsea.png")
        with pytest.raises(ValueError, match="not an RGB photograph"):
            data.photograph_patches("test")
        location["skimage"] = None
        with pytest.raises(ImportError, match="scikit-image is not installed"):
            data.photograph_patches("test")
    finally:
        data._patches_uint8.cache_clear()


@pytest.mark.parametrize(
    "options, error, message",
    [
        (dict(count=-5), ValueError, "count must be an integer >= 1"),
        (dict(count=0), ValueError, "count must be an integer >= 1"),
        (dict(size=0), ValueError, "size must be an integer >= 1"),
        (dict(count=2.5), TypeError, "count must be an integer"),
        (dict(split=["train"]), ValueError, "split must be 'train' or 'test'"),
    ],
)
def test_load_images_refuses_counts_and_sizes_below_one(options, error, message):
    for name in ("patches", "photos"):
        with pytest.raises(error, match=message):
            data.load_images(name, **{"split": "test", **options})


def test_a_split_that_is_not_a_string_is_named():
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        data.photograph_patches(["train"])
