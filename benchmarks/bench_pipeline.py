"""Benchmark: the tf.data pipeline against seed 000's Python data generator.

One epoch of the training split of the default prepared set, batch 8, in the same
run: (a) ``scratch_utils.pipeline.make_dataset`` with the seeds' augmentation, first
(cold: decodes every PNG) and second (warm: cached) epoch; (b) a ``keras.utils.PyDataset``
that opens each file with PIL per item, no parallelism, no augmentation (seed 000's
approach, minus its bugs). Reports batches/s and the ratio; writes
``benchmarks/results/pipeline.json``.

    python benchmarks/bench_pipeline.py [--batch-size 8]
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

from scratch_utils.augment import JointAugment  # noqa: E402
from scratch_utils.preparation import load_manifest  # noqa: E402
from scratch_utils.profiles import ensure_prepared  # noqa: E402
from scratch_utils.files import atomic_write_json  # noqa: E402
from scratch_utils.pipeline import make_dataset  # noqa: E402

HERE = Path(__file__).resolve().parent


class SeedStyleSequence(keras.utils.PyDataset):
    """Seed 000's loader, done right: PIL per item, sequential, fixed batch size."""

    def __init__(self, prepared: Path, stems: list[str], batch_size: int, augment=None):
        super().__init__(workers=1, use_multiprocessing=False)
        self.prepared, self.stems, self.batch_size = prepared, stems, batch_size
        self.augment = augment

    def __len__(self):
        return -(-len(self.stems) // self.batch_size)

    def __getitem__(self, index):
        stems = self.stems[index * self.batch_size:(index + 1) * self.batch_size]
        images = np.stack([np.asarray(Image.open(self.prepared / "images" / f"{s}.png")
                                      .convert("RGB"), dtype=np.float32) / 255.0 for s in stems])
        masks = np.stack([(np.asarray(Image.open(self.prepared / "masks" / f"{s}.png")
                                      .convert("L")) > 127).astype(np.float32)[..., None]
                          for s in stems])
        if self.augment:
            images, masks = (np.asarray(t) for t in self.augment(images, masks))
        return images, masks


def time_epoch(batches) -> tuple[int, float]:
    started, count = time.perf_counter(), 0
    for images, masks in batches:
        count += 1
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--profile", default="default")
    args = parser.parse_args()

    prepared = ensure_prepared(args.profile, progress=False)
    stems = [r["stem"] for r in load_manifest(prepared, "train")]
    # Warm the page cache for both contenders alike.
    for stem in stems:
        (prepared / "images" / f"{stem}.png").read_bytes()
        (prepared / "masks" / f"{stem}.png").read_bytes()

    dataset = make_dataset(prepared, "train", batch_size=args.batch_size, augment=True)
    n, cold = time_epoch(dataset)
    _, warm = time_epoch(dataset)
    plain = make_dataset(prepared, "train", batch_size=args.batch_size, augment=False)
    time_epoch(plain)
    _, plain_warm = time_epoch(plain)
    sequence = SeedStyleSequence(prepared, stems, args.batch_size)
    m, seed_style = time_epoch(sequence[i] for i in range(len(sequence)))
    assert n == m
    augmented_sequence = SeedStyleSequence(prepared, stems, args.batch_size, JointAugment(seed=0))
    augmented_sequence[0]  # build the layers outside the timing, as tf.data's tracing is
    _, seed_style_augmented = time_epoch(augmented_sequence[i] for i in range(n))

    rates = {"tfdata_augmented_cold": n / cold, "tfdata_augmented_warm": n / warm,
             "tfdata_plain_warm": n / plain_warm, "pydataset_pil": n / seed_style,
             "pydataset_pil_augmented": n / seed_style_augmented}
    result = {
        "benchmark": "pipeline", "prepared": str(prepared), "train_parts": len(stems),
        "batch_size": args.batch_size, "batches_per_epoch": n,
        "batches_per_s": {k: round(v, 1) for k, v in rates.items()},
        "speedup_cold": round(rates["tfdata_augmented_cold"] / rates["pydataset_pil"], 2),
        "speedup_warm": round(rates["tfdata_augmented_warm"] / rates["pydataset_pil"], 2),
        "speedup_like_for_like_augmented_cold": round(
            rates["tfdata_augmented_cold"] / rates["pydataset_pil_augmented"], 2),
        "speedup_like_for_like_plain": round(rates["tfdata_plain_warm"] / rates["pydataset_pil"], 2),
        "target_speedup": 3.0, "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "tensorflow": tf.__version__, "keras": keras.__version__,
    }
    print(f"{len(stems)} training parts, batch {args.batch_size}, {n} batches per epoch")
    for name, rate in rates.items():
        print(f"  {name:24s} {rate:8.1f} batches/s")
    print(f"speed-up, both augmenting (first epoch): {result['speedup_like_for_like_augmented_cold']:.1f}x")
    print(f"speed-up, neither augmenting (cached):   {result['speedup_like_for_like_plain']:.1f}x")
    print(f"augmented tf.data vs a PyDataset that does not augment: {result['speedup_cold']:.1f}x "
          f"first epoch, {result['speedup_warm']:.1f}x cached (target >= 3x)")
    out = HERE / "results" / "pipeline.json"
    atomic_write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
