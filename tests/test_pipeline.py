"""The tf.data pipeline and joint augmentation: alignment, binarity, determinism, contract."""
import csv

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from scratch_utils.augment import AugmentConfig, JointAugment  # noqa: E402
from scratch_utils.preparation import MANIFEST_FIELDS  # noqa: E402
from scratch_utils.pipeline import make_dataset  # noqa: E402


def make_pattern_set(root, n=12, size=32, splits=None, seed=0):
    """A prepared folder whose photos *are* their masks: red = mask, green = 1 - mask.

    After any geometric transform the red channel must still equal the mask.
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    splits = splits or ["train"] * (n - 4) + ["val"] * 2 + ["test"] * 2
    rows = []
    for k, split in enumerate(splits):
        blocks = rng.random((size // 4, size // 4)) > 0.6
        mask = np.kron(blocks, np.ones((4, 4))).astype(np.uint8)
        mask[rng.integers(size), :] = 1  # a 1-pixel scratch across the part
        image = np.stack([mask * 255, (1 - mask) * 255, np.full_like(mask, 77)], axis=-1)
        stem = f"p{k:03d}"
        Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{stem}.png")
        Image.fromarray(mask * 255).save(root / "masks" / f"{stem}.png")
        rows.append({"stem": stem, "source_image": f"{stem}.jpg", "label_file": f"{stem}.json",
                     "quality": "defective", "width": size, "height": size,
                     "defect_share": float(mask.mean()), "n_defects": 1, "split": split})
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    return root


def first_epoch(dataset):
    return [(images.numpy(), masks.numpy()) for images, masks in dataset]


GEOMETRIC = AugmentConfig(horizontal_flip=True, vertical_flip=True, shift=0.1, rotation=0.05,
                          zoom=0.15, hue=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_augmentation_keeps_photo_and_mask_aligned(tmp_path, seed):
    prepared = make_pattern_set(tmp_path)
    plain = np.concatenate([m for _, m in first_epoch(
        make_dataset(prepared, "train", batch_size=4, shuffle=False))])
    augmented = first_epoch(make_dataset(prepared, "train", batch_size=4, augment=GEOMETRIC,
                                         shuffle=False, seed=seed))
    masks = np.concatenate([m for _, m in augmented])
    images = np.concatenate([i for i, _ in augmented])
    assert (masks != plain).mean() > 0.05, "the augmentation must actually move things"
    assert np.array_equal(images[..., :1] > 0.5, masks > 0.5), "photo and mask drifted apart"
    assert np.array_equal(images[..., 1:2] > 0.5, masks < 0.5)


def test_masks_stay_binary_with_every_transform(tmp_path):
    prepared = make_pattern_set(tmp_path)
    for config in (AugmentConfig.strong(), AugmentConfig(interpolation="bilinear", rotation=0.05)):
        for images, masks in make_dataset(prepared, "train", batch_size=4, augment=config):
            assert set(np.unique(masks.numpy())) <= {0.0, 1.0}
            assert 0.0 <= images.numpy().min() and images.numpy().max() <= 1.0


def test_colour_transforms_change_the_photo_only(tmp_path):
    prepared = make_pattern_set(tmp_path)
    colour = AugmentConfig(horizontal_flip=False, shift=0.0, hue=0.3, brightness=0.3, contrast=0.3)
    plain = first_epoch(make_dataset(prepared, "train", batch_size=8, shuffle=False))
    jittered = first_epoch(make_dataset(prepared, "train", batch_size=8, augment=colour,
                                        shuffle=False))
    assert np.array_equal(plain[0][1], jittered[0][1])
    assert np.abs(plain[0][0] - jittered[0][0]).mean() > 0.01


def test_same_seed_same_epoch_other_seed_differs(tmp_path):
    prepared = make_pattern_set(tmp_path)
    config = AugmentConfig.strong()
    a = first_epoch(make_dataset(prepared, "train", batch_size=3, augment=config, seed=5))
    b = first_epoch(make_dataset(prepared, "train", batch_size=3, augment=config, seed=5))
    c = first_epoch(make_dataset(prepared, "train", batch_size=3, augment=config, seed=6))
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_shapes_dtypes_and_the_last_partial_batch(tmp_path):
    prepared = make_pattern_set(tmp_path, n=14)  # 10 training parts
    batches = first_epoch(make_dataset(prepared, "train", batch_size=4, augment=True))
    assert [len(i) for i, _ in batches] == [4, 4, 2], "the last batch is smaller, never dropped"
    images, masks = batches[0]
    assert images.shape == (4, 32, 32, 3) and masks.shape == (4, 32, 32, 1)
    assert images.dtype == np.float32 and masks.dtype == np.float32


@pytest.mark.parametrize("split", ["val", "test"])
def test_val_and_test_are_exactly_the_prepared_files(tmp_path, split):
    prepared = make_pattern_set(tmp_path)
    (images, masks), = first_epoch(make_dataset(prepared, split, batch_size=8))
    stems = ["p008", "p009"] if split == "val" else ["p010", "p011"]
    for k, stem in enumerate(stems):
        expected = np.asarray(Image.open(prepared / "images" / f"{stem}.png")) / 255.0
        assert np.allclose(images[k], expected)
        assert np.array_equal(masks[k, ..., 0],
                              np.asarray(Image.open(prepared / "masks" / f"{stem}.png")) > 0)
    with pytest.raises(ValueError, match="never augmented"):
        make_dataset(prepared, split, augment=True)


def test_an_empty_split_is_a_clear_error(tmp_path):
    prepared = make_pattern_set(tmp_path, n=6, splits=["train"] * 6)
    with pytest.raises(ValueError, match=r"the 'val' split of .* is empty"):
        make_dataset(prepared, "val")
    with pytest.raises(ValueError, match="split must be one of"):
        make_dataset(prepared, "validation")


def test_config_is_checked():
    with pytest.raises(ValueError, match="shift must be between 0 and 1"):
        JointAugment(AugmentConfig(shift=1.5))
    with pytest.raises(ValueError, match="interpolation"):
        JointAugment(AugmentConfig(interpolation="cubic"))
    assert JointAugment().describe() == ["RandomFlip", "RandomTranslation", "RandomHue"]


def test_parallel_streams_deliver_every_part_once_per_epoch(tmp_path):
    """Dealing batches into augmentation streams must not lose or repeat a part."""
    prepared = make_pattern_set(tmp_path, n=27)  # 23 training parts: 5 batches of 5, the last of 3
    flip_only = AugmentConfig(horizontal_flip=True, vertical_flip=True, shift=0.0, hue=0.0)
    plain = np.concatenate([m for _, m in first_epoch(make_dataset(prepared, "train", batch_size=5))])
    for streams in (1, 2, 3):
        batches = first_epoch(make_dataset(prepared, "train", batch_size=5, augment=flip_only,
                                           augment_streams=streams))
        assert [len(m) for _, m in batches] == [5, 5, 5, 5, 3]
        masks = np.concatenate([m for _, m in batches])
        # Flips keep each mask's pixel count: the multisets must match exactly.
        assert sorted(masks.sum(axis=(1, 2, 3))) == sorted(plain.sum(axis=(1, 2, 3)))
