import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("SCRATCH_PROFILE", "smoke")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def tree_digest(root: Path) -> dict:
    """Path -> (sha1, mtime_ns) of every file under root: 'byte-for-byte unchanged' checks."""
    return {p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(),
                                              p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_aihub_label(path: Path, file_name, width, height, annotations, bom=True):
    payload = {"images": [{"file_name": file_name, "height": height, "width": width,
                           "date_captured": "2026-01-01 00:00:00"}],
               "annotations": annotations}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, ensure_ascii=False), encoding="utf-8-sig" if bom else "utf-8")


def defect(polygon, quality="불량품"):
    return {"bbox": [0, 0, 1, 1], "area": 1, "segmentation": polygon,
            "attributes": {"quality": quality}}


def write_photo(path: Path, width=320, height=180, colour=(120, 40, 40), mode="RGB", fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    pixels = (np.asarray(colour)[None, None, :] + rng.integers(-10, 10, (height, width, 3)))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, format=fmt)
    return path


@pytest.fixture
def aihub_source(tmp_path) -> Path:
    """A tiny AIHub tree in the seed's parallel layout: 6 defective, 4 good parts."""
    root = tmp_path / "source"
    for k in range(10):
        name = f"part_{k:02d}.jpg"
        write_photo(root / "data" / "door" / "scratch" / name, colour=(40 + 15 * k, 60, 90))
        annotations = ([defect([20 + k, 20, 120, 30, 120, 40, 20 + k, 34])] if k < 6 else
                       [defect([0, 0, 319, 0, 319, 179, 0, 179], quality="양품")])
        write_aihub_label(root / "label" / "door" / "scratch" / f"part_{k:02d}.json",
                          name, 320, 180, annotations, bom=k % 2 == 0)
    return root


def write_prepared_files(root: Path, rows: list[dict], scale: float = 1.0) -> Path:
    """The manifest and summary of a hand-made prepared folder (its images/ and masks/ written
    by the caller), so that :class:`scratch_utils.dataset.Prepared` opens it."""
    import csv

    from scratch_utils.preparation import MANIFEST_FIELDS
    with (root / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    (root / "preparation.json").write_text(json.dumps({"source": str(root), "settings": {"scale": scale}}))
    return root


# Not the default recipe: one short epoch of one tile per photo, validated after it.
TINY = dict(epochs=1, base_filters=4, depth=2, batch_size=8, tile_size=32, tiles_per_epoch=0, validate_every=1,
            defect_share=0.5, learning_rate=1e-3)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """A tiny prepared set: 24 synthetic parts of 160x96 at half scale (80x48)."""
    from scratch_utils.preparation import prepare
    from scratch_utils.synthetic import generate
    root = tmp_path_factory.mktemp("tiny")
    generate(root / "source", count=24, seed=1, width=160, height=96, workers=1, progress=False)
    prepare(root / "source", root / "prepared", scale=0.5, progress=False)
    return root / "prepared"


@pytest.fixture(scope="session")
def scaled(prepared):
    return prepared


@pytest.fixture(scope="session")
def run(prepared, tmp_path_factory):
    """A tiny U-Net run folder (one epoch): fast, for the machinery, not for accuracy."""
    from scratch_utils.train import TrainConfig, train
    return train(prepared, tmp_path_factory.mktemp("runs") / "unet", TrainConfig(**TINY), verbose=0)
