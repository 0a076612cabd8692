"""The ``tf.data`` input pipeline over a prepared folder (notebook 02).

``make_dataset(prepared, "train")`` yields ``(images, masks)`` batches: images float32 in
[0, 1] of shape (B, S, S, 3), masks float32 in {0, 1} of shape (B, S, S, 1). PNGs are
decoded in parallel and cached as uint8 (4x smaller than float); only the training
split is shuffled (with a seed) and augmented; validation and test never are.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import tensorflow as tf

from .augment import AugmentConfig, JointAugment
from .data import load_manifest

SPLITS = ("train", "val", "test")


def _load_pair(image_path, mask_path):
    image = tf.io.decode_png(tf.io.read_file(image_path), channels=3)
    mask = tf.io.decode_png(tf.io.read_file(mask_path), channels=1)
    return image, mask


def _to_unit(images, masks):
    return tf.cast(images, tf.float32) / 255.0, tf.cast(masks > 127, tf.float32)


def split_paths(prepared: str | os.PathLike, split: str) -> tuple[list[str], list[str]]:
    """Photo and mask paths of one split, in manifest order; a clear error when empty."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    prepared = Path(prepared)
    all_rows = load_manifest(prepared)
    rows = [r for r in all_rows if r["split"] == split]
    if not rows:
        counts = dict(Counter(r["split"] for r in all_rows))
        raise ValueError(f"the {split!r} split of {prepared} is empty (manifest.csv has {counts}); "
                         f"prepare more parts or change the split fractions")
    images = [str(prepared / "images" / f"{r['stem']}.png") for r in rows]
    masks = [str(prepared / "masks" / f"{r['stem']}.png") for r in rows]
    return images, masks


def _stream(images, masks, batch_size, augment, shuffle, seed, cache):
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    dataset = dataset.map(_load_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    dataset = dataset.map(_to_unit, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if augment:
        # One call at a time: the layers draw from a seeded generator, and a fixed order
        # of draws is what makes an augmented epoch reproducible. Each call is a whole batch.
        dataset = dataset.map(JointAugment(augment, seed=seed), num_parallel_calls=None)
    return dataset


def make_dataset(prepared: str | os.PathLike, split: str = "train", batch_size: int = 8,
                 augment: AugmentConfig | bool | None = None, shuffle: bool | None = None,
                 seed: int = 0, cache: bool = True, augment_streams: int = 2) -> tf.data.Dataset:
    """Batches of ``(images, masks)`` for one split of a prepared folder.

    ``augment``: an AugmentConfig, ``True`` for the seeds' default, ``None``/``False`` for
    none; only allowed on the training split. ``shuffle`` defaults to True for training.

    Augmentation is the costly step on a CPU, and seeded Keras layers are reproducible
    only when called in a fixed order. So the training parts are dealt (in a seeded
    order) into ``augment_streams`` fixed streams, a batch at a time, each with its own cache,
    shuffle and augmenter, running side by side; their batches alternate. An epoch is determined by
    ``(seed, augment_streams)``: keep the default of 2 to reproduce results across machines.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if augment is True:
        augment = AugmentConfig()
    if augment and split != "train":
        raise ValueError(f"the {split} split is never augmented: augmentation is for training only")
    shuffle = split == "train" if shuffle is None else shuffle
    images, masks = split_paths(prepared, split)

    streams = max(1, min(int(augment_streams), len(images) // batch_size)) if augment else 1
    if streams == 1:
        return _stream(images, masks, batch_size, augment, shuffle, seed, cache).prefetch(
            tf.data.AUTOTUNE)
    order = np.random.default_rng(seed).permutation(len(images)) if shuffle else np.arange(len(images))
    # Deal whole batches round-robin, so only the epoch's very last batch can be partial.
    chunks = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    parts = [np.concatenate(chunks[k::streams]) for k in range(streams)]
    branches = [_stream([images[i] for i in part], [masks[i] for i in part], batch_size, augment,
                        shuffle, seed + 1009 * k, cache).prefetch(2)
                for k, part in enumerate(parts)]
    # Round-robin over the streams; a stream that runs out early is skipped.
    choice = tf.data.Dataset.range(streams).repeat()
    dataset = tf.data.Dataset.choose_from_datasets(branches, choice, stop_on_empty_dataset=False)
    return dataset.prefetch(tf.data.AUTOTUNE)
