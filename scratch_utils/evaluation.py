"""Scores at the photo's own resolution, as a user's ground truth is (notebooks 03-05, ``train``).

A split is predicted once, whole photo by whole photo, at model resolution
(:func:`predict_split`, the same :func:`scratch_utils.predict.probability_map` as the app).
Each probability map is then resized to its photo's own size and compared with the mask
rasterised from the label polygons at source resolution (``coco.json``), never with the
resized training masks: those are dilated so thin scratches survive resizing, and scoring
against them flatters a model.

One sweep over the threshold grid gives, per photo and threshold, the true/false positive
pixels at photo resolution and the largest predicted region at model resolution (what the
image decision counts). The operating point, the curves and the scores all come from it.
Two thresholds come out of validation: the **mask threshold** (best pixel Dice: the mask a
user sees and every pixel score) and the **decision rule** (threshold and minimum region for
the pass/fail call at >= 95% of defective parts caught).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from .preparation import load_manifest, prepared_geometry
from .metrics import (auroc, called_defective, detection_rates, largest_region, scores_from_counts,
                      tolerance_counts, tolerance_from_counts)
from .predict import probability_map, resize_probability

# Low thresholds matter: an undertrained model's scratch probabilities can sit well below 0.5.
THRESHOLDS = (0.01, 0.02, 0.03) + tuple(float(t) for t in np.round(np.arange(0.05, 0.96, 0.05), 2))


class TruthMasks:
    """Masks at source resolution from a prepared folder's ``coco.json`` (polygons, or RLE
    for mask-folder sources), by stem."""

    def __init__(self, prepared: str | Path):
        coco = json.loads((Path(prepared) / "coco.json").read_text(encoding="utf-8"))
        self.images = {image["stem"]: image for image in coco["images"]}
        self.annotations: dict[int, list] = {}
        for ann in coco["annotations"]:
            self.annotations.setdefault(ann["image_id"], []).append(ann["segmentation"])

    def __call__(self, stem: str) -> np.ndarray:
        image = self.images[stem]
        height, width = image["height"], image["width"]
        rles = []
        for segmentation in self.annotations.get(image["id"], []):
            if isinstance(segmentation, dict):
                rles.append(segmentation)
            else:
                rles.append(mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width)))
        if not rles:
            return np.zeros((height, width), dtype=bool)
        return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


@dataclass
class SplitPredictions:
    """A split's photos, their probabilities at model resolution (the photo's box, no
    padding) and, after :func:`sweep`, per-threshold counts."""
    prepared: Path
    rows: list
    probabilities: list               # (box_h, box_w) float16 per photo
    thresholds: tuple = THRESHOLDS
    stats: dict = field(default_factory=dict)

    @property
    def is_defective(self) -> np.ndarray:
        return np.array([row["quality"] == "defective" for row in self.rows])

    @property
    def image_scores(self) -> np.ndarray:
        """Per photo: the largest predicted probability (ranks parts for AUROC)."""
        return np.array([float(p.max()) if p.size else 0.0 for p in self.probabilities])


def prepared_inputs(prepared: Path, rows: list[dict]):
    """Yield (model input in [0, 1], box) per row: the prepared photos are pixel for pixel
    what :class:`scratch_utils.predict.Predictor` feeds the model."""
    geometry = prepared_geometry(prepared)
    for row in rows:
        layout = geometry.layout(row["width"], row["height"])
        with Image.open(prepared / "images" / f"{row['stem']}.png") as handle:
            image = np.asarray(handle.convert("RGB"), dtype=np.float32) / 255.0
        yield image, (layout.x0, layout.y0, layout.box_w, layout.box_h)


def predict_split(model, prepared: str | Path, split: str = "test") -> SplitPredictions:
    """Whole-photo probabilities for every photo of a split of a prepared folder."""
    prepared = Path(prepared)
    rows = load_manifest(prepared, split)
    if not rows:
        raise ValueError(f"the {split!r} split of {prepared} is empty")
    probabilities = []
    for image, (x0, y0, w, h) in prepared_inputs(prepared, rows):
        probability = probability_map(model, image)
        probabilities.append(probability[y0:y0 + h, x0:x0 + w].astype(np.float16))
    return SplitPredictions(prepared, rows, probabilities)


def _counts_at(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``values`` are >= each threshold (one sort instead of a pass each)."""
    ordered = np.sort(values, axis=None)
    return ordered.size - np.searchsorted(ordered, thresholds, side="left")


def sweep(predictions: SplitPredictions, truths: TruthMasks | None = None) -> SplitPredictions:
    """Fill ``predictions.stats``: per photo (rows) and threshold (columns) the true and
    false positive pixels and defect pixels at photo resolution, and the largest connected
    predicted region at model resolution (``region``)."""
    truths = truths or TruthMasks(predictions.prepared)
    thresholds = np.asarray(predictions.thresholds, dtype=np.float32)
    n, k = len(predictions.rows), len(thresholds)
    tp, fp, region = (np.zeros((n, k), np.int64) for _ in range(3))
    positives, pixels = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for index, (row, probability) in enumerate(zip(predictions.rows, predictions.probabilities)):
        probability = probability.astype(np.float32)
        top = probability.max() if probability.size else 0.0
        region[index] = [largest_region(probability >= t) if t <= top else 0 for t in thresholds]
        truth = truths(row["stem"])
        full = resize_probability(probability, truth.shape[::-1])
        tp[index] = _counts_at(full[truth], thresholds)
        fp[index] = _counts_at(full[~truth], thresholds)
        positives[index], pixels[index] = truth.sum(), truth.size
    predictions.stats = {"tp": tp, "fp": fp, "region": region, "positives": positives, "pixels": pixels}
    return predictions


def pixel_curve(predictions: SplitPredictions) -> dict:
    """Pooled pixel scores at every threshold of the grid, at photo resolution."""
    s = predictions.stats
    tp, fp = s["tp"].sum(axis=0), s["fp"].sum(axis=0)
    fn = s["positives"].sum() - tp
    tn = s["pixels"].sum() - tp - fp - fn
    return {"thresholds": np.asarray(predictions.thresholds), **scores_from_counts(tp, fp, fn, tn)}


def threshold_index(predictions: SplitPredictions, threshold: float) -> int:
    """Column of ``threshold`` in the grid (the grid is extended when it is not there)."""
    grid = list(predictions.thresholds)
    for k, value in enumerate(grid):
        if abs(value - threshold) < 1e-6:
            return k
    predictions.thresholds = tuple(sorted(grid + [float(threshold)]))
    sweep(predictions)
    return threshold_index(predictions, threshold)


def image_scores(predictions: SplitPredictions, mask_threshold: float) -> dict:
    """Per photo: Dice, IoU, precision and recall of its mask at ``mask_threshold``, at the
    photo's own resolution (from the sweep's counts)."""
    k = threshold_index(predictions, mask_threshold)
    s = predictions.stats
    tp, fp = s["tp"][:, k], s["fp"][:, k]
    return scores_from_counts(tp, fp, s["positives"] - tp)


def per_image(predictions: SplitPredictions, point) -> list[dict]:
    """One row per photo at an operating point: its manifest facts, mask scores at the photo's
    own resolution, largest predicted region and the pass/fail call (notebook 05's failures)."""
    pixel = image_scores(predictions, point.mask_threshold)
    regions = predictions.stats["region"][:, threshold_index(predictions, point.threshold)]
    called = called_defective(regions, point.min_area)
    return [{"stem": row["stem"], "quality": row["quality"], "dice": float(pixel["dice"][k]),
             "iou": float(pixel["iou"][k]), "largest_region_px": int(regions[k]),
             "called_defective": bool(called[k])} for k, row in enumerate(predictions.rows)]


def scores(predictions: SplitPredictions, threshold: float, min_area: int,
           mask_threshold: float | None = None, tolerance: int = 2, truths=None) -> dict:
    """Every score of the course for one split, at photo resolution: pixel scores of the mask
    at ``mask_threshold`` (default: ``threshold``), the pass/fail call from one region of at
    least ``min_area`` pixels at ``threshold``."""
    truths = truths or TruthMasks(predictions.prepared)
    if not predictions.stats:
        sweep(predictions, truths)
    mask_threshold = threshold if mask_threshold is None else mask_threshold
    k = threshold_index(predictions, mask_threshold)
    decide = threshold_index(predictions, threshold)
    s = predictions.stats
    curve = pixel_curve(predictions)
    per_image = image_scores(predictions, mask_threshold)
    called = called_defective(s["region"][:, decide], min_area)
    pooled = {"hits": 0, "predicted": 0, "found": 0, "true": 0}
    for row, probability in zip(predictions.rows, predictions.probabilities):
        truth = truths(row["stem"])
        predicted = resize_probability(probability.astype(np.float32), truth.shape[::-1]) >= mask_threshold
        for key, value in tolerance_counts(truth, predicted, tolerance).items():
            pooled[key] += value
    return {
        **{key: float(curve[key][k]) for key in ("dice", "iou", "miou", "precision", "recall")},
        "dice_per_image": float(per_image["dice"].mean()), "iou_per_image": float(per_image["iou"].mean()),
        # Per defective part: pooled scores weigh large scuffs most, this weighs every part once.
        "dice_defective_parts": float(per_image["dice"][predictions.is_defective].mean())
        if predictions.is_defective.any() else float("nan"),
        **tolerance_from_counts(pooled),
        **detection_rates(predictions.is_defective, called),
        "auroc": auroc(predictions.is_defective, predictions.image_scores),
        "mask_threshold": float(mask_threshold), "threshold": float(threshold),
        "min_area": int(min_area), "images": len(predictions.rows), "scored_at": "photo resolution",
    }


def source_photo(prepared: str | Path, row: dict) -> Path:
    """Where a prepared part's original photo is (``report.json`` knows the source folder)."""
    report = json.loads((Path(prepared) / "report.json").read_text(encoding="utf-8"))
    return Path(report["source"]) / row["source_image"]


def gallery(prepared: str | Path, predictors: dict, rows: list[dict]):
    """The figure notebooks 03-05 show: for each part, its photo with the truth at the photo's
    own resolution and each model's mask from :class:`~scratch_utils.predict.Predictor` (the
    app's code path)."""
    from .report import show_photo_predictions
    truths = TruthMasks(prepared)
    photos, truth_masks, masks = [], [], {name: [] for name in predictors}
    for row in rows:
        path = source_photo(prepared, row)
        for name, predictor in predictors.items():
            photo, model_photo = predictor.open(path)
            masks[name].append(predictor.predict_photo(photo, model_photo)["mask"])
        photos.append(photo)
        truth_masks.append(truths(row["stem"]))
    titles = [f"{row['stem']} ({row['quality']})" for row in rows]
    return show_photo_predictions(photos, truth_masks, masks, titles)


def pick_parts(rows: list[dict], defective: int = 3, good: int = 1) -> list[dict]:
    """The first few defective and good parts of a split, for galleries."""
    return ([r for r in rows if r["quality"] == "defective"][:defective]
            + [r for r in rows if r["quality"] == "good"][:good])


def save_predictions(predictions: SplitPredictions, path: str | Path) -> None:
    """Keep a split's probabilities (float16) beside the model that made them."""
    from .files import atomic_write_bytes
    import io
    buffer = io.BytesIO()
    np.savez(buffer, **{row["stem"]: p for row, p in zip(predictions.rows, predictions.probabilities)})
    atomic_write_bytes(path, buffer.getvalue())


def run_predictions(run: str | Path, split: str, prepared: str | Path | None = None) -> SplitPredictions:
    """A run's predictions for a split, swept: from ``predictions/<split>.npz`` when ``train``
    left them there for this model, else predicted now (and kept)."""
    from .predict import load_run_config, load_run_model
    run = Path(run)
    prepared = Path(prepared or load_run_config(run)["prepared"])
    rows = load_manifest(prepared, split)
    cache = run / "predictions" / f"{split}.npz"
    if cache.is_file() and cache.stat().st_mtime >= (run / "model.keras").stat().st_mtime:
        with np.load(cache) as stored:
            if all(row["stem"] in stored for row in rows):
                return sweep(SplitPredictions(prepared, rows, [stored[row["stem"]] for row in rows]))
    predictions = predict_split(load_run_model(run), prepared, split)
    save_predictions(predictions, cache)
    return sweep(predictions)
