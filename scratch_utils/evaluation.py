"""Scores at the photo's own resolution, as a user's ground truth is (notebooks 03-05, ``train``).

Every score a user sees comes from here: ``metrics.json``, the per-epoch validation log, the
comparison table and the CLI's ``evaluate``.

A split is predicted once, whole photo by whole photo, at model resolution
(:func:`predict_split`, the same :func:`scratch_utils.predict.probability_map` as the app).
Each probability map is then resized to its photo's own size and compared with the mask
rasterised from the label polygons at source resolution
(:attr:`scratch_utils.dataset.Prepared.truths`), never with the resized training masks: those
are dilated so thin scratches survive resizing, and scoring against them flatters a model.

One sweep over the threshold grid gives, per photo and threshold, the true/false positive
pixels at photo resolution and the largest predicted region at model resolution by each
measure (length along its skeleton, and area: what the pass/fail call counts). The operating
point, the curves and the scores all come from it.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

from .files import atomic_write_bytes
from .metrics import (REGION_MEASURES, auroc, bootstrap_interval, called_defective, deciding_regions,
                      detection_rates, region_sizes, scores_from_counts, tolerance_counts,
                      tolerance_from_counts)
from .predict import probability_map, resize_probability
from .dataset import Prepared
from .runs import OperatingPoint, load_operating_point, load_run_config, load_run_model

# Low thresholds matter: an undertrained model's scratch probabilities can sit well below 0.5.
# The grid reaches 0.001 and 0.999 so that a point chosen at its edge is a real limit.
THRESHOLDS = ((0.001, 0.002, 0.005, 0.01, 0.02, 0.03)
              + tuple(float(t) for t in np.round(np.arange(0.05, 0.96, 0.05), 2))
              + (0.97, 0.98, 0.99, 0.995, 0.999))
TOLERANCE_PX = 2   # tolerance F1: a pixel within 2 px of the other mask counts as a hit


@dataclass
class SplitPredictions:
    """A split's photos, their probabilities at model resolution (the photo's box, no
    padding) and, after :func:`sweep`, per-threshold counts."""
    prepared: Prepared | None
    rows: list
    probabilities: list               # (box_h, box_w) float16 per photo
    thresholds: tuple = THRESHOLDS
    stats: dict = field(default_factory=dict)

    @property
    def is_defective(self) -> np.ndarray:
        return np.array([row["quality"] == "defective" for row in self.rows])

    @property
    def max_probabilities(self) -> np.ndarray:
        """Per photo: the largest predicted probability."""
        return np.array([float(p.max()) if p.size else 0.0 for p in self.probabilities])

    def truths(self):
        """The truth at photo resolution, by stem."""
        return self.prepared.truths


def predict_split(model, prepared, split: str = "test") -> SplitPredictions:
    """Whole-photo probabilities for every photo of a split of a prepared folder."""
    prepared = Prepared.of(prepared)
    rows = prepared.split(split)
    probabilities = []
    for row in rows:
        x0, y0, w, h = prepared.box(row)
        probability = probability_map(model, prepared.model_input(row))
        probabilities.append(probability[y0:y0 + h, x0:x0 + w].astype(np.float16))
    return SplitPredictions(prepared, rows, probabilities)


def _counts_at(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``values`` are >= each threshold (one sort instead of a pass each)."""
    ordered = np.sort(values, axis=None)
    return ordered.size - np.searchsorted(ordered, thresholds, side="left")


def sweep(predictions: SplitPredictions, truths=None, regions: bool = True) -> SplitPredictions:
    """Fill ``predictions.stats``: per photo (rows) and threshold (columns) the true and
    false positive pixels and defect pixels at photo resolution, and (``regions``) the largest
    connected predicted region at model resolution by each measure (``length``, ``area``)."""
    truths = truths or predictions.truths()
    thresholds = np.asarray(predictions.thresholds, dtype=np.float32)
    n, k = len(predictions.rows), len(thresholds)
    tp, fp = np.zeros((n, k), np.int64), np.zeros((n, k), np.int64)
    sizes = {measure: np.zeros((n, k), np.int64) for measure in REGION_MEASURES}
    positives, pixels = np.zeros(n, np.int64), np.zeros(n, np.int64)
    for index, (row, probability) in enumerate(zip(predictions.rows, predictions.probabilities)):
        probability = probability.astype(np.float32)
        if regions:
            top = probability.max() if probability.size else 0.0
            for column, t in enumerate(thresholds):
                if t <= top:
                    for measure, size in region_sizes(probability >= t).items():
                        sizes[measure][index, column] = size
        truth = truths(row["stem"])
        full = resize_probability(probability, truth.shape[::-1])
        tp[index] = _counts_at(full[truth], thresholds)
        fp[index] = _counts_at(full[~truth], thresholds)
        positives[index], pixels[index] = truth.sum(), truth.size
    predictions.stats = {"tp": tp, "fp": fp, "positives": positives, "pixels": pixels,
                         **(sizes if regions else {})}
    return predictions


def pixel_curve(predictions: SplitPredictions) -> dict:
    """Pooled pixel scores at every threshold of the grid, at photo resolution."""
    s = predictions.stats
    tp, fp = s["tp"].sum(axis=0), s["fp"].sum(axis=0)
    fn = s["positives"].sum() - tp
    tn = s["pixels"].sum() - tp - fp - fn
    return {"thresholds": np.asarray(predictions.thresholds), **scores_from_counts(tp, fp, fn, tn)}


def pixel_scores(predictions: SplitPredictions, threshold: float, truths=None) -> dict:
    """Pooled Dice, IoU, mIoU, precision and recall of the masks at one threshold, at photo
    resolution (the per-epoch validation log)."""
    at_one = sweep(replace(predictions, thresholds=(float(threshold),), stats={}), truths, regions=False)
    return {key: float(value[0]) for key, value in pixel_curve(at_one).items() if key != "thresholds"}


def threshold_index(predictions: SplitPredictions, threshold: float) -> int:
    """Column of ``threshold`` in the grid (the grid is extended when it is not there)."""
    for k, value in enumerate(predictions.thresholds):
        if abs(value - threshold) < 1e-6:
            return k
    predictions.thresholds = tuple(sorted([*predictions.thresholds, float(threshold)]))
    sweep(predictions, regions="length" in predictions.stats)
    return threshold_index(predictions, threshold)


def image_scores(predictions: SplitPredictions, mask_threshold: float) -> dict:
    """Per photo: Dice, IoU, precision and recall of its mask at ``mask_threshold``, at the
    photo's own resolution (from the sweep's counts)."""
    k = threshold_index(predictions, mask_threshold)
    s = predictions.stats
    tp, fp = s["tp"][:, k], s["fp"][:, k]
    return scores_from_counts(tp, fp, s["positives"] - tp)


def decisions(predictions: SplitPredictions, point: OperatingPoint) -> tuple[np.ndarray, np.ndarray]:
    """(largest region per photo at the decision threshold by the point's measure, called defective)."""
    regions = predictions.stats[point.region_measure][:, threshold_index(predictions, point.decision_threshold)]
    return regions, called_defective(regions, point.min_region)


def part_scores(predictions: SplitPredictions, point: OperatingPoint) -> np.ndarray:
    """Per photo, the score AUROC ranks parts by: the highest threshold of the grid at which
    the photo still shows a region reaching the point's ``min_region`` by its measure (0 when
    none does), so the ranking follows the decision the plant uses."""
    reached = predictions.stats[point.region_measure] >= max(1, int(point.min_region))
    thresholds = np.asarray(predictions.thresholds, dtype=float)
    return np.where(reached, thresholds[None, :], 0.0).max(axis=1)


def located(predictions: SplitPredictions, point: OperatingPoint, truths=None,
            tolerance: int = TOLERANCE_PX) -> np.ndarray:
    """Per photo: whether a region that made the call overlaps the true defect (within
    ``tolerance`` px at the photo's own resolution); False for photos not called."""
    truths = truths or predictions.truths()
    _, called = decisions(predictions, point)
    found = np.zeros(len(predictions.rows), bool)
    for index in np.where(called)[0]:
        probability = predictions.probabilities[index].astype(np.float32)
        regions = deciding_regions(probability >= point.decision_threshold, point.region_measure, point.min_region)
        truth = truths(predictions.rows[index]["stem"])
        if truth.any():
            at_photo = resize_probability(regions.astype(np.float32), truth.shape[::-1]) >= 0.5
            found[index] = bool(np.any(at_photo & ndimage.binary_dilation(truth, disk(tolerance))))
    return found


def intervals(predictions: SplitPredictions, point: OperatingPoint, found: np.ndarray) -> dict:
    """95% bootstrap intervals over parts (defective and good parts resampled apart) of the
    detection and false-alarm rates, the located detection rate and the pooled Dice."""
    _, called = decisions(predictions, point)
    k = threshold_index(predictions, point.mask_threshold)
    s = predictions.stats
    tp, fp, positives = s["tp"][:, k], s["fp"][:, k], s["positives"]
    defective, good = np.where(predictions.is_defective)[0], np.where(~predictions.is_defective)[0]

    def dice(d, g):
        parts = np.concatenate([d, g])
        return float(scores_from_counts(tp[parts].sum(), fp[parts].sum(), (positives - tp)[parts].sum())["dice"])

    statistics = {"detection_rate": lambda d, g: called[d].mean() if len(d) else np.nan,
                  "located_detection_rate": lambda d, g: found[d].mean() if len(d) else np.nan,
                  "false_alarm_rate": lambda d, g: called[g].mean() if len(g) else np.nan,
                  "dice": dice}
    result = {}
    for key, statistic in statistics.items():
        low, high = bootstrap_interval(statistic, (defective, good))
        result[f"{key}_low"], result[f"{key}_high"] = low, high
    return result


def per_image(predictions: SplitPredictions, point: OperatingPoint) -> list[dict]:
    """One row per photo at an operating point: mask scores at the photo's own resolution,
    the largest predicted region and the pass/fail call (notebook 05's failures)."""
    pixel = image_scores(predictions, point.mask_threshold)
    regions, called = decisions(predictions, point)
    return [{"stem": row["stem"], "quality": row["quality"], "dice": float(pixel["dice"][k]),
             "iou": float(pixel["iou"][k]), "largest_region": int(regions[k]),
             "called_defective": bool(called[k])} for k, row in enumerate(predictions.rows)]


def tolerance_scores(predictions: SplitPredictions, mask_threshold: float, truths=None,
                     tolerance: int = TOLERANCE_PX) -> dict:
    """Tolerance precision, recall and F1 of the masks, pooled over the photos."""
    truths = truths or predictions.truths()
    pooled = {"hits": 0, "predicted": 0, "found": 0, "true": 0}
    for row, probability in zip(predictions.rows, predictions.probabilities):
        truth = truths(row["stem"])
        predicted = resize_probability(probability.astype(np.float32), truth.shape[::-1]) >= mask_threshold
        for key, value in tolerance_counts(truth, predicted, tolerance).items():
            pooled[key] += value
    return tolerance_from_counts(pooled)


def scores(predictions: SplitPredictions, point: OperatingPoint, truths=None) -> dict:
    """Every score of the course for one split at an operating point, at photo resolution:
    pixel scores of the mask, per image and pooled; tolerance F1; the part-level call, where
    it was made, and 95% bootstrap intervals over parts."""
    if "length" not in predictions.stats:
        sweep(predictions, truths)
    k = threshold_index(predictions, point.mask_threshold)
    curve = pixel_curve(predictions)
    per_photo = image_scores(predictions, point.mask_threshold)
    defective = predictions.is_defective
    _, called = decisions(predictions, point)
    found = located(predictions, point, truths)
    return {
        **{key: float(curve[key][k]) for key in ("dice", "iou", "miou", "precision", "recall")},
        "dice_per_image": float(per_photo["dice"].mean()), "iou_per_image": float(per_photo["iou"].mean()),
        # Per defective part: pooled scores weigh large scuffs most, this weighs every part once.
        "dice_defective_parts": float(per_photo["dice"][defective].mean()) if defective.any() else float("nan"),
        **tolerance_scores(predictions, point.mask_threshold, truths),
        **detection_rates(defective, called),
        # Caught where the defect is: the region that made the call overlaps the true defect.
        "located_detection_rate": float(found[defective].mean()) if defective.any() else float("nan"),
        **intervals(predictions, point, found),
        "auroc": auroc(defective, part_scores(predictions, point)),
        "auroc_max_probability": auroc(defective, predictions.max_probabilities),
        "mask_threshold": float(point.mask_threshold), "decision_threshold": float(point.decision_threshold),
        "min_region": int(point.min_region), "region_measure": point.region_measure,
        "images": len(predictions.rows), "scored_at": "photo resolution",
    }


def save_predictions(predictions: SplitPredictions, path: str | Path) -> None:
    """Keep a split's probabilities (float16) beside the model that made them."""
    buffer = io.BytesIO()
    np.savez(buffer, **{row["stem"]: p for row, p in zip(predictions.rows, predictions.probabilities)})
    atomic_write_bytes(path, buffer.getvalue())


def run_predictions(run: str | Path, split: str, prepared=None) -> SplitPredictions:
    """A run's predictions for a split, swept: from ``predictions/<split>.npz`` when ``train``
    left them there for this model, else predicted now (and kept)."""
    run = Path(run)
    prepared = Prepared.of(prepared or load_run_config(run)["prepared"])
    rows = prepared.split(split)
    cache = run / "predictions" / f"{split}.npz"
    if cache.is_file() and cache.stat().st_mtime >= (run / "model.keras").stat().st_mtime:
        with np.load(cache) as stored:
            if all(row["stem"] in stored for row in rows):
                return sweep(SplitPredictions(prepared, rows, [stored[row["stem"]] for row in rows]))
    predictions = predict_split(load_run_model(run), prepared, split)
    save_predictions(predictions, cache)
    return sweep(predictions)


def evaluate_run(run, prepared=None, split: str = "test", **overrides) -> dict:
    """Scores of a run on a split at its operating point; ``overrides`` (``mask_threshold``,
    ``decision_threshold``, ``min_region``) replace the values they name."""
    point = load_operating_point(run).with_overrides(**overrides)
    return scores(run_predictions(run, split, prepared), point)


def inference_ms(model, prepared, repeats: int = 3) -> float:
    """Milliseconds to predict one whole validation photo at the working geometry (median)."""
    prepared = Prepared.of(prepared)
    image = prepared.model_input(prepared.split("val")[0])
    probability_map(model, image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        probability_map(model, image)
        times.append(time.perf_counter() - started)
    return round(float(np.median(times)) * 1000, 1)


def gallery(prepared, predictors: dict, rows: list[dict]):
    """The figure notebooks 03-05 show: for each part, each model's mask from
    :class:`~scratch_utils.predict.Predictor` (the app's code path) on the whole photo and in a
    zoom, with the truth at the photo's own resolution and the regions that made the call."""
    from .figures import show_photo_predictions
    prepared = Prepared.of(prepared)
    photos, truth_masks, results = [], [], {name: [] for name in predictors}
    for row in rows:
        path = prepared.source_photo(row)
        for name, predictor in predictors.items():
            photo, model_photo = predictor.open(path)
            results[name].append(predictor.predict_photo(photo, model_photo))
        photos.append(photo)
        truth_masks.append(prepared.truths(row["stem"]))
    titles = [f"{row['stem']} ({row['quality']})" for row in rows]
    return show_photo_predictions(photos, truth_masks, results, titles)


def pick_parts(rows: list[dict], defective: int = 3, good: int = 1) -> list[dict]:
    """The first few defective and good parts of a split, for galleries."""
    return ([r for r in rows if r["quality"] == "defective"][:defective]
            + [r for r in rows if r["quality"] == "good"][:good])
