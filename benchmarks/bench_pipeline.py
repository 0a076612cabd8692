"""Benchmark: the tile pipeline training reads against a Python loader of the same tiles.

On the default prepared set, in the same run and on the same tiles (the plan of
``scratch_utils.pipeline.tile_plan``): (a) ``make_tile_dataset``, the ``tf.data`` input that
``train`` uses (parallel PNG decoding, crops, joint augmentation), with and without
augmentation; (b) a ``keras.utils.PyDataset`` that opens each photo and mask with PIL per tile
and crops it, sequentially (the earlier car-paint project's approach, minus its bugs), with the
same augmentation or none. Reports batches/s and the ratios; writes
``benchmarks/results/pipeline.json``.

    python benchmarks/bench_pipeline.py [--batch-size 4] [--batches 80]
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from scratch_utils.augment import AugmentConfig, JointAugment  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.pipeline import make_tile_dataset, sample_tiles  # noqa: E402
from scratch_utils.dataset import ensure_prepared  # noqa: E402
from scratch_utils.profiles import get_profile  # noqa: E402

HERE = Path(__file__).resolve().parent


class PILTiles(keras.utils.PyDataset):
    """The same tiles, opened and cropped with PIL one at a time."""

    def __init__(self, prepared, tiles: list[dict], tile_size: int, batch_size: int, augment=None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.prepared, self.tiles, self.size, self.batch_size = prepared, tiles, tile_size, batch_size
        self.augment = augment

    def __len__(self):
        return len(self.tiles) // self.batch_size

    def crop(self, tile: dict):
        box = (tile["x0"], tile["y0"], tile["x0"] + self.size, tile["y0"] + self.size)
        image = Image.open(self.prepared.image_path(tile["stem"])).convert("RGB").crop(box)
        mask = Image.open(self.prepared.mask_path(tile["stem"])).convert("L").crop(box)
        return np.asarray(image, np.float32) / 255.0, (np.asarray(mask) > 127).astype(np.float32)[..., None]

    def __getitem__(self, index):
        pairs = [self.crop(t) for t in self.tiles[index * self.batch_size:(index + 1) * self.batch_size]]
        images, masks = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        if self.augment:
            images, masks = (np.asarray(t) for t in self.augment(images, masks))
        return images, masks


def batches_per_second(batches, n: int) -> float:
    iterator = iter(batches)
    next(iterator)   # start-up and tracing, outside the timing
    started = time.perf_counter()
    for _ in range(n):
        next(iterator)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--batches", type=int, default=80)
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()
    profile = get_profile(args.profile)
    prepared = ensure_prepared(profile, progress=False)
    size, share, n = profile.tile_size, profile.defect_share, args.batches
    tiles = sample_tiles(prepared, (n + 1) * args.batch_size, tile_size=size, defect_share=share, seed=0)
    augment = AugmentConfig.tiles()

    def ours(config):
        return make_tile_dataset(prepared, size, share, args.batch_size, config, seed=0)

    rates = {"tile_dataset_augmented": batches_per_second(ours(augment), n),
             "tile_dataset_plain": batches_per_second(ours(None), n),
             "pil_tiles_augmented": batches_per_second(
                 PILTiles(prepared, tiles, size, args.batch_size, JointAugment(augment, seed=0)), n),
             "pil_tiles_plain": batches_per_second(PILTiles(prepared, tiles, size, args.batch_size), n)}
    result = {
        "benchmark": "pipeline", "profile": profile.name, "tile_size": size, "batch_size": args.batch_size,
        "batches_timed": n, "batches_per_s": {k: round(v, 1) for k, v in rates.items()},
        "speedup_augmented": round(rates["tile_dataset_augmented"] / rates["pil_tiles_augmented"], 2),
        "speedup_plain": round(rates["tile_dataset_plain"] / rates["pil_tiles_plain"], 2),
        "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    for name, rate in rates.items():
        print(f"  {name:24s} {rate:8.1f} batches/s of {args.batch_size} tiles of {size} px")
    print(f"speed-up of tf.data: {result['speedup_augmented']:.1f}x augmenting, "
          f"{result['speedup_plain']:.1f}x without augmentation")
    out = HERE / "results" / "pipeline.json"
    atomic_write_json(out, result)
    print(f"wrote {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
