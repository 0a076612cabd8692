"""The training input (tiles) and joint augmentation: alignment, binarity, determinism, contract."""

import numpy as np
import pytest
from conftest import write_prepared_files
from PIL import Image

tf = pytest.importorskip("tensorflow")

from scratch_utils.augment import AugmentConfig, JointAugment  # noqa: E402
from scratch_utils.pipeline import make_tile_dataset  # noqa: E402
from scratch_utils.dataset import Prepared  # noqa: E402


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
    return write_prepared_files(root, rows)


def batches(prepared, n=3, **kwargs):
    settings = dict(tile_size=32, defect_share=0.5, batch_size=4, seed=0) | kwargs
    dataset = make_tile_dataset(prepared, **settings)
    return [(x.numpy(), y.numpy()) for x, y in dataset.take(n)]


GEOMETRIC = AugmentConfig(horizontal_flip=True, vertical_flip=True, shift=0.1, rotation=0.05,
                          zoom=0.15, hue=0.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_geometric_augmentation_keeps_photo_and_mask_aligned(tmp_path, seed):
    prepared = make_pattern_set(tmp_path)
    plain = np.concatenate([m for _, m in batches(prepared, seed=seed)])
    augmented = batches(prepared, augment=GEOMETRIC, seed=seed)
    masks = np.concatenate([m for _, m in augmented])
    images = np.concatenate([i for i, _ in augmented])
    assert (masks != plain).mean() > 0.05, "the augmentation must actually move things"
    assert np.array_equal(images[..., :1] > 0.5, masks > 0.5), "photo and mask drifted apart"
    assert np.array_equal(images[..., 1:2] > 0.5, masks < 0.5)


def test_masks_stay_binary_with_every_transform(tmp_path):
    prepared = make_pattern_set(tmp_path)
    for config in (AugmentConfig.strong(), AugmentConfig(interpolation="bilinear", rotation=0.05)):
        for images, masks in batches(prepared, augment=config):
            assert set(np.unique(masks)) <= {0.0, 1.0}
            assert 0.0 <= images.min() and images.max() <= 1.0


def test_colour_transforms_change_the_photo_only(tmp_path):
    prepared = make_pattern_set(tmp_path)
    colour = AugmentConfig(horizontal_flip=False, shift=0.0, hue=0.3, brightness=0.3, contrast=0.3)
    (plain_images, plain_masks), = batches(prepared, n=1)
    (images, masks), = batches(prepared, n=1, augment=colour)
    assert np.array_equal(plain_masks, masks)
    assert np.abs(plain_images - images).mean() > 0.01


def test_same_seed_same_augmented_tiles_other_seed_differs(tmp_path):
    prepared = make_pattern_set(tmp_path)
    a, b = batches(prepared, augment=AugmentConfig.strong(), seed=5), batches(prepared, augment=AugmentConfig.strong(), seed=5)
    c = batches(prepared, augment=AugmentConfig.strong(), seed=6)
    assert all(np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1]) for x, y in zip(a, b))
    assert not all(np.array_equal(x[1], y[1]) for x, y in zip(a, c))


def test_tiles_are_cut_from_the_training_split_only(tmp_path):
    prepared = make_pattern_set(tmp_path)
    train_stems = {row["stem"] for row in Prepared.open(prepared).split("train")}
    from scratch_utils.pipeline import sample_tiles
    assert {t["stem"] for t in sample_tiles(prepared, 64, tile_size=32, seed=0)} <= train_stems


def test_an_empty_or_unknown_split_is_a_clear_error(tmp_path):
    prepared = Prepared.open(make_pattern_set(tmp_path, n=6, splits=["train"] * 6))
    with pytest.raises(ValueError, match=r"the 'val' split of .* is empty"):
        prepared.split("val")
    with pytest.raises(ValueError, match="split must be one of"):
        prepared.split("validation")


def test_config_is_checked():
    with pytest.raises(ValueError, match="shift must be between 0 and 1"):
        JointAugment(AugmentConfig(shift=1.5))
    with pytest.raises(ValueError, match="interpolation"):
        JointAugment(AugmentConfig(interpolation="cubic"))
    assert JointAugment().describe() == ["RandomFlip", "RandomTranslation", "RandomHue"]


def test_zoom_stretches_height_and_width_apart_and_train_passes_it_on(tmp_path, monkeypatch):
    """``TrainConfig.zoom`` reaches the tiles' augmentation, and Keras' RandomZoom with both
    factors scales each axis by its own draw: a square defect comes out as rectangles of
    several aspects (the squash's stretch, as an augmentation)."""
    mask = np.zeros((8, 64, 64, 1), np.float32)
    mask[:, 24:40, 24:40] = 1.0
    images, masks = JointAugment(AugmentConfig(horizontal_flip=False, shift=0.0, hue=0.0, zoom=0.3), seed=3)(
        np.repeat(mask, 3, axis=-1), mask)
    masks = np.asarray(masks)[..., 0] > 0.5
    aspects = [np.any(m, axis=1).sum() / np.any(m, axis=0).sum() for m in masks]
    assert max(aspects) / min(aspects) > 1.15
    assert np.array_equal(np.asarray(images)[..., 0] > 0.5, masks)

    from scratch_utils import train as training
    from scratch_utils.profiles import TrainConfig
    seen = []
    monkeypatch.setattr(training, "make_tile_dataset", lambda *args, **kwargs: seen.append(args[4]))
    prepared = Prepared.open(make_pattern_set(tmp_path))
    for zoom in (0.0, 0.3):
        training.Fitting(prepared, tmp_path / "staging", TrainConfig(tile_size=32, zoom=zoom), verbose=0).tiles(0)
    assert [config.zoom for config in seen] == [0.0, 0.3]
    assert seen[0] == AugmentConfig.tiles()   # no zoom: the recipe's augmentation, unchanged
