"""The course's data: a prepared folder opened once (:class:`Prepared`), and the data every
notebook starts from (:func:`ensure_prepared`: your photos, or the synthetic set, prepared).

``prepare`` writes a prepared folder (:mod:`scratch_utils.preparation`); :class:`Prepared` reads
it: the manifest rows and their splits, the working geometry, the source folder, the prepared
photos and masks, and the truth at each photo's own resolution (``coco.json``). Functions that
take a prepared folder accept a path or a ``Prepared`` and open a path once, at their entrance.
"""
from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .geometry import Geometry
from .names import SPLITS
from .preparation import INCOMPLETE, MANIFEST, SUMMARY, prepare



def read_manifest(folder: Path) -> list[dict]:
    """Rows of ``manifest.csv`` with their numbers parsed."""
    path = Path(folder) / MANIFEST
    if (Path(folder) / INCOMPLETE).is_file():
        raise FileNotFoundError(f"{folder} is not fully prepared: a `prepare` into it stopped before it "
                                f"finished (or is running); run `python -m scratch_utils prepare` again to finish it")
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a prepared folder (no {MANIFEST}): "
                                f"run `python -m scratch_utils prepare` first")
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        row["width"], row["height"] = int(row["width"]), int(row["height"])
        row["defect_share"] = float(row["defect_share"])
        row["n_defects"] = int(row["n_defects"])
    return rows


class TruthMasks:
    """Defect masks at each photo's own resolution from ``coco.json`` (polygons, or RLE for
    mask-folder sources), by stem: what every score is computed against."""

    def __init__(self, coco_path: Path):
        coco = json.loads(Path(coco_path).read_text(encoding="utf-8"))
        self.images = {image["stem"]: image for image in coco["images"]}
        self.annotations: dict[int, list] = {}
        for ann in coco["annotations"]:
            self.annotations.setdefault(ann["image_id"], []).append(ann["segmentation"])

    def _rles(self, stem: str) -> tuple[list, int, int]:
        """One RLE per labelled defect of a photo, and the photo's height and width."""
        image = self.images[stem]
        height, width = image["height"], image["width"]
        return ([segmentation if isinstance(segmentation, dict)
                 else mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
                 for segmentation in self.annotations.get(image["id"], [])], height, width)

    def __call__(self, stem: str) -> np.ndarray:
        rles, height, width = self._rles(stem)
        if not rles:
            return np.zeros((height, width), dtype=bool)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)

    def defects(self, stem: str) -> list[np.ndarray]:
        """Each labelled defect of a photo as its own mask (the empty ones left out)."""
        masks = [mask_utils.decode(rle).astype(bool) for rle in self._rles(stem)[0]]
        return [mask for mask in masks if mask.any()]

    def polygons(self, stem: str) -> list:
        """The label polygons of a photo (flat lists at source resolution; none for RLEs)."""
        image = self.images[stem]
        return [poly for segmentation in self.annotations.get(image["id"], [])
                if isinstance(segmentation, list) for poly in segmentation]


class Prepared:
    """One prepared folder: ``rows`` (the manifest), ``geometry``, ``source`` and per-split
    access; made by :meth:`open` (or :meth:`of`, which passes a ``Prepared`` through)."""

    def __init__(self, folder: Path, rows: list[dict], summary: dict):
        self.folder, self.rows, self.summary = Path(folder), rows, summary
        self.geometry = Geometry.from_dict(summary["settings"])
        self.source = Path(summary["source"])
        self._truths: TruthMasks | None = None

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Prepared":
        folder = Path(folder)
        rows = read_manifest(folder)
        summary_path = folder / SUMMARY
        if not summary_path.is_file():
            raise FileNotFoundError(f"{summary_path} not found: prepare {folder} again")
        return cls(folder, rows, json.loads(summary_path.read_text(encoding="utf-8")))

    @classmethod
    def of(cls, prepared: "Prepared | str | os.PathLike") -> "Prepared":
        return prepared if isinstance(prepared, Prepared) else cls.open(prepared)

    def __fspath__(self) -> str:
        return str(self.folder)

    def __repr__(self) -> str:
        return f"Prepared({self.folder.name!r}: {len(self.rows)} parts, {self.geometry.describe()})"

    def split(self, name: str) -> list[dict]:
        """The rows of one split, in manifest order; a clear error for an unknown or empty one."""
        if name not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {name!r}")
        rows = [row for row in self.rows if row["split"] == name]
        if not rows:
            counts = dict(Counter(row["split"] for row in self.rows))
            raise ValueError(f"the {name!r} split of {self.folder} is empty (manifest has {counts}); "
                             f"prepare more parts or change the split fractions")
        return rows

    def image_path(self, stem: str) -> Path:
        return self.folder / "images" / f"{stem}.png"

    def mask_path(self, stem: str) -> Path:
        return self.folder / "masks" / f"{stem}.png"

    def source_photo(self, row: dict) -> Path:
        """Where a part's original photo is."""
        return self.source / row["source_image"]

    def box(self, row: dict) -> tuple[int, int, int, int]:
        """``(x0, y0, w, h)``: where the photo lies in its model input (all of it, but in a
        letterboxed square)."""
        layout = self.geometry.layout(row["width"], row["height"])
        return layout.x0, layout.y0, layout.box_w, layout.box_h

    def model_input(self, row: dict) -> np.ndarray:
        """The model input in [0, 1]: the prepared photo is pixel for pixel what
        :class:`scratch_utils.predict.Predictor` feeds the model."""
        with Image.open(self.image_path(row["stem"])) as handle:
            return np.asarray(handle.convert("RGB"), dtype=np.float32) / 255.0

    def prepared_mask(self, row: dict) -> np.ndarray:
        """The prepared (working-geometry) mask of a part, cut to its photo's box (bool)."""
        x0, y0, w, h = self.box(row)
        with Image.open(self.mask_path(row["stem"])) as handle:
            return (np.asarray(handle.convert("L")) > 127)[y0:y0 + h, x0:x0 + w]

    @property
    def truths(self) -> TruthMasks:
        """Masks at each photo's own resolution (read from ``coco.json`` on first use)."""
        if self._truths is None:
            self._truths = TruthMasks(self.folder / "coco.json")
        return self._truths


# ------------------------------------------------ the course's dataset: yours, or the synthetic one


def prepared_folder(profile, source: str | os.PathLike | None = None, square: int | None = None) -> Path:
    """Where a profile's prepared set lives: ``data/<profile>/prepared-scaled`` (or
    ``prepared-square128``) for the synthetic set, ``prepared-<folder name>-...`` for yours."""
    from .profiles import get_profile, profile_dir
    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    tag = f"square{square}" if square else "scaled"
    if source is None:
        return profile_dir(profile) / f"prepared-{tag}"
    return profile_dir(profile) / f"prepared-{Path(source).expanduser().name}-{tag}"


def synthetic_source(profile, progress: bool = True) -> Path:
    """The profile's synthetic AIHub-format set (``synthetic-visible``: no defect drawn fainter than
    :data:`~scratch_utils.synthetic.VISIBLE_LEVELS` from its paint), generated where missing: ``train/``, ``val/`` and
    ``test/`` folders of parts generated apart (their own seeds and shares of good parts), so
    ``prepare`` keeps those splits and no validation or test part was ever a training part."""
    from . import synthetic
    from .profiles import get_profile, profile_dir
    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    # Its own folder name: a set drawn before defects were kept visible stays as it was, unused.
    source = profile_dir(profile) / ("synthetic-visible" if profile.visible_defects else "synthetic")
    width, height = profile.photo_size
    for split, spec in profile.synthetic.items():
        synthetic.generate(source / split, count=spec.count, seed=spec.seed, width=width, height=height,
                           good_fraction=spec.good_fraction, progress=progress, visible=profile.visible_defects)
    return source


def ensure_prepared(profile=None, source: str | os.PathLike | None = None,
                    fmt: str = "auto", progress: bool = True, square: int | None = None) -> "Prepared":
    """The prepared folder every notebook starts from, made if missing or out of date.

    With ``source=None`` the profile's synthetic set is generated first
    (:func:`synthetic_source`); with a folder of your own it is prepared instead, by the same
    code. The geometry is the automatic working scale, or with ``square=128`` the 128-px squash
    (the baseline). Returns the folder (:func:`prepared_folder`), opened.
    """
    from .profiles import get_profile
    profile = get_profile(profile) if not hasattr(profile, "name") else profile
    out = prepared_folder(profile, source, square)
    source = synthetic_source(profile, progress) if source is None else Path(source).expanduser()
    prepare(source, out, fmt=fmt, size=square, progress=progress)
    return Prepared.open(out)
