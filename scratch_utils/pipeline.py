"""The ``tf.data`` training input over a prepared folder: tiles of the photos at their working
resolution, augmented (notebook 02, ``train``).

:func:`make_tile_dataset` yields ``(images, masks)`` batches: images float32 in [0, 1] of shape
(B, S, S, 3), masks float32 in {0, 1} of shape (B, S, S, 1). Validation and test photos are
never tiled nor augmented: they are predicted whole (:mod:`scratch_utils.evaluation`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf

from .augment import AugmentConfig, JointAugment
from .dataset import Prepared


def _to_unit(images, masks):
    return tf.cast(images, tf.float32) / 255.0, tf.cast(masks > 127, tf.float32)


def defect_points(mask_paths: list[str], max_points: int = 2048, seed: int = 0):
    """Sizes of the prepared masks and up to ``max_points`` defect pixels of each, for the
    tile sampler: ``(heights, widths, points (N, 2) as (y, x), offsets, counts)``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    heights, widths, points, counts = [], [], [], []
    for path in mask_paths:
        with Image.open(path) as handle:
            mask = np.asarray(handle) > 127
        heights.append(mask.shape[0])
        widths.append(mask.shape[1])
        ys, xs = np.nonzero(mask)
        if len(ys) > max_points:
            keep = np.sort(rng.choice(len(ys), max_points, replace=False))
            ys, xs = ys[keep], xs[keep]
        points.append(np.stack([ys, xs], axis=1).astype(np.int32))
        counts.append(len(ys))
    counts = np.asarray(counts, np.int32)
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int32)
    all_points = np.concatenate(points) if counts.sum() else np.zeros((1, 2), np.int32)
    return (np.asarray(heights, np.int32), np.asarray(widths, np.int32), all_points, offsets,
            counts)


class HardNegatives:
    """Places on good training photos where the model fires, for a share of the training tiles:
    ``(photo index in the split, y, x)`` in a variable the tile plan reads as it draws, so a
    callback (:class:`scratch_utils.train.HardNegativeMiner`) refreshes them while training runs."""

    CAPACITY = 256

    def __init__(self):
        self.places = tf.Variable(tf.zeros([self.CAPACITY, 3], tf.int64), trainable=False, name="hard_places")
        self.count = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="hard_count")

    def update(self, places: np.ndarray) -> None:
        places = np.asarray(places, np.int64).reshape(-1, 3)[:self.CAPACITY]
        padded = np.zeros((self.CAPACITY, 3), np.int64)
        padded[:len(places)] = places
        self.places.assign(padded)
        self.count.assign(len(places))


def tile_plan(prepared, tile_size: int = 128, defect_share: float = 0.5,
              seed: int = 0, split: str = "train", first_tile: int = 0,
              hard_negatives: HardNegatives | None = None, hard_share: float = 0.0) -> tf.data.Dataset:
    """Where each tile comes from: an endless dataset of ``(photo path, mask path, corner
    (y, x), centred)``, tile ``k`` depending only on ``(seed, k)`` (and, for the
    ``hard_share`` of hard-negative tiles, on the places mined so far). See
    :func:`make_tile_dataset`."""
    if not 0 <= defect_share <= 1 or not 0 <= hard_share <= 1 - defect_share + 1e-9:
        raise ValueError(f"defect_share ({defect_share}) and hard_share ({hard_share}) must be shares "
                         f"between 0 and 1 that add up to at most 1")
    if tile_size < 16 or tile_size % 16:
        raise ValueError(f"tile_size must be a multiple of 16 (the models' stride), got {tile_size}")
    prepared = Prepared.of(prepared)
    stems = [row["stem"] for row in prepared.split(split)]
    images = [str(prepared.image_path(stem)) for stem in stems]
    masks = [str(prepared.mask_path(stem)) for stem in stems]
    heights, widths, points, offsets, counts = defect_points(masks, seed=seed)
    n, tile = len(images), int(tile_size)
    defective = np.flatnonzero(counts > 0).astype(np.int64)
    if not len(defective):
        defect_share = 0.0  # nothing to centre on: every tile is uniform
        defective = np.zeros(1, np.int64)
    table = {name: tf.constant(value) for name, value in (
        ("images", images), ("masks", masks), ("heights", np.maximum(heights, tile)),
        ("widths", np.maximum(widths, tile)), ("points", points), ("offsets", offsets),
        ("counts", counts), ("defective", defective))}

    def locate(k):
        epoch, position = k // n, k % n
        order = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
        u = tf.random.stateless_uniform([4], seed=tf.stack([tf.constant(seed + 7919, tf.int64), k]))
        centred = u[0] < defect_share
        # A centred tile takes a random defective photo; the others take the epoch's next photo.
        pick = tf.minimum(tf.cast(u[1] * len(defective), tf.int64), len(defective) - 1)
        i = tf.where(centred, table["defective"][pick], order[position])
        size = tf.stack([table["heights"][i], table["widths"][i]])
        count = table["counts"][i]
        j = table["offsets"][i] + tf.minimum(tf.cast(tf.math.floormod(u[1] * len(defective), 1.0)
                                                     * tf.cast(count, tf.float32), tf.int32),
                                             tf.maximum(count - 1, 0))
        j = tf.minimum(j, len(points) - 1)  # tf.where below evaluates both branches
        jitter = tf.cast((u[2:4] - 0.5) * (tile / 2), tf.int32)  # up to a quarter tile off
        around = table["points"][j] - tile // 2 + jitter
        uniform = tf.cast(u[2:4] * tf.cast(size - tile + 1, tf.float32), tf.int32)
        corner = tf.where(centred, around, uniform)
        if hard_negatives is not None:    # a mined place on a good photo, give or take a quarter tile
            count = hard_negatives.count
            hard = (~centred) & (u[0] < defect_share + hard_share) & (count > 0)
            place = hard_negatives.places[tf.minimum(tf.cast(u[1] * tf.cast(count, tf.float32), tf.int64),
                                                     tf.maximum(count - 1, 0))]
            i = tf.where(hard, place[0], i)
            size = tf.stack([table["heights"][i], table["widths"][i]])
            corner = tf.where(hard, tf.cast(place[1:], tf.int32) - tile // 2 + jitter, corner)
        corner = tf.clip_by_value(corner, 0, size - tile)
        return table["images"][i], table["masks"][i], corner, centred

    return tf.data.Dataset.counter(first_tile).map(locate)


PADDINGS = ("reflect", "zeros")


def reflect_indices(size, length):
    """Indices ``0 .. length-1`` folded into an axis of ``size``: how ``np.pad(mode="reflect")``
    extends it (the padding :func:`scratch_utils.predict.reflect_pad` gives whole photos)."""
    period = tf.maximum(2 * (size - 1), 1)
    folded = tf.math.floormod(tf.range(length), period)
    return tf.where(folded < size, folded, period - folded)


def make_tile_dataset(prepared, tile_size: int = 128,
                      defect_share: float = 0.5, batch_size: int = 8,
                      augment: AugmentConfig | bool | None = None, seed: int = 0,
                      split: str = "train", first_tile: int = 0, padding: str = "reflect",
                      hard_negatives: HardNegatives | None = None, hard_share: float = 0.0) -> tf.data.Dataset:
    """An endless stream of ``(images, masks)`` batches of ``tile_size`` crops (notebook 02).

    Photos keep their working resolution (a hairline scratch stays visible); the model
    learns on crops and, being fully convolutional, predicts whole photos later.
    Defects cover well under 1% of a photo, so uniform crops almost never show one:
    ``defect_share`` of the tiles are centred (give or take a quarter tile) on a defect
    pixel of a randomly drawn defective photo; ``hard_share`` are centred on a place of a good
    photo where the model fires (``hard_negatives``, refreshed while training: seams and edges
    that look like scratches); the others are uniform crops of the photos in turn, each epoch in
    a new order (``n`` tiles make an epoch of ``n`` photos).

    Tile ``k`` depends only on ``(seed, k)`` (stateless random numbers), so the stream is
    the same on every run and machine, and ``first_tile`` resumes it mid-way. The
    augmentation (``True``: :meth:`AugmentConfig.tiles`) runs after batching, in order,
    from a seeded generator.

    A photo smaller than a tile is extended at its bottom and right by reflection
    (``padding="reflect"``), as prediction pads whole photos, so the model never trains on
    borders it will not see; ``"zeros"`` (black borders) is kept for the ablation benchmark.
    """
    if augment is True:
        augment = AugmentConfig.tiles()
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
    tile = int(tile_size)

    def crop(image_path, mask_path, corner, centred):
        image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
        mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
        pair = tf.concat([image, mask], axis=-1)[corner[0]:corner[0] + tile, corner[1]:corner[1] + tile]
        if padding == "reflect":   # no-ops for a full-size crop
            pair = tf.gather(pair, reflect_indices(tf.shape(pair)[0], tile), axis=0)
            pair = tf.gather(pair, reflect_indices(tf.shape(pair)[1], tile), axis=1)
        else:
            pad = tile - tf.shape(pair)[:2]
            pair = tf.pad(pair, [[0, pad[0]], [0, pad[1]], [0, 0]])
        pair.set_shape([tile, tile, 4])
        return pair[..., :3], pair[..., 3:]

    dataset = tile_plan(prepared, tile, defect_share, seed, split, first_tile, hard_negatives, hard_share)
    dataset = dataset.map(crop, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=True).map(
        _to_unit, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        dataset = dataset.map(JointAugment(augment, seed=seed + first_tile), num_parallel_calls=None)
    return dataset.prefetch(tf.data.AUTOTUNE)


def sample_tiles(prepared, count: int, **plan) -> list[dict]:
    """The first ``count`` tiles of :func:`tile_plan`, as dicts (stem, y0, x0, centred):
    to look at in notebook 02 and to test the sampler without decoding photos."""
    return [{"stem": Path(image.decode()).stem, "y0": int(corner[0]), "x0": int(corner[1]),
             "centred": bool(centred)}
            for image, _, corner, centred in tile_plan(prepared, **plan).take(count).as_numpy_iterator()]
