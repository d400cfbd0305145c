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
