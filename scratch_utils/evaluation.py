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

from .dataset import Prepared
from .decision import (
    REGION_MEASURES,
    OperatingPoint,
    calls,
    false_alarms_at,
    feature_model,
    head_input,
    head_scores,
    measured_regions,
)
from .files import atomic_write_bytes
from .metrics import (
    auroc,
    bootstrap_interval,
    detection_rates,
    exact_interval,
    scores_from_counts,
    tolerance_counts,
    tolerance_from_counts,
)
from .parallel import parallel_map
from .predict import model_outputs, resize_probability
from .runs import load_operating_point, load_part_head, load_run_config, load_run_model

# Low thresholds matter: an undertrained model's scratch probabilities can sit well below 0.5.
# The grid reaches 0.001 and 0.999 so that a point chosen at its edge is a real limit.
THRESHOLDS = ((0.001, 0.002, 0.005, 0.01, 0.02, 0.03)
              + tuple(float(t) for t in np.round(np.arange(0.05, 0.96, 0.05), 2))
              + (0.97, 0.98, 0.99, 0.995, 0.999))
TOLERANCE_PX = 2   # a pixel within 2 px of the other mask counts as a hit; a call within 2 px is located


@dataclass
class SplitPredictions:
    """A split's photos, their probabilities at model resolution (the photo's box, no
    padding), the part head's scores when the run has one and, after :func:`sweep`,
    per-threshold counts."""
    prepared: Prepared | None
    rows: list
    probabilities: list               # (box_h, box_w) float16 per photo
    thresholds: tuple = THRESHOLDS
    stats: dict = field(default_factory=dict)
    part_scores: np.ndarray | None = None

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

    def column(self, threshold: float) -> int:
        """Column of ``threshold`` in the grid (the grid is extended when it is not there)."""
        for k, value in enumerate(self.thresholds):
            if abs(value - threshold) < 1e-6:
                return k
        self.thresholds = tuple(sorted([*self.thresholds, float(threshold)]))
        sweep(self, regions="length" in self.stats)
        return self.column(threshold)


def predict_split(model, prepared, split: str = "test", head=None) -> SplitPredictions:
    """Whole-photo probabilities for every photo of a split of a prepared folder, and with a
    part ``head`` its scores (one pass of the model gives both)."""
    prepared = Prepared.of(prepared)
    rows = prepared.split(split)
    network = feature_model(model) if head is not None else model
    probabilities, inputs = [], []
    for row in rows:
        x0, y0, w, h = prepared.box(row)
        outputs = model_outputs(network, prepared.model_input(row))
        probabilities.append(outputs[0][y0:y0 + h, x0:x0 + w].astype(np.float16))
        if head is not None:
            inputs.append(head_input(outputs[0][y0:y0 + h, x0:x0 + w], outputs[1][y0:y0 + h, x0:x0 + w]))
    scores = head_scores(head, inputs) if head is not None else None
    return SplitPredictions(prepared, rows, probabilities, part_scores=scores)


def _counts_at(values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``values`` are >= each threshold (one pass of binning, no sort)."""
    bins = np.searchsorted(thresholds, values.ravel(), side="right")   # thresholds each value reaches
    reached = np.bincount(bins, minlength=len(thresholds) + 1)
    return np.cumsum(reached[::-1])[::-1][1:]


def _near(truth: np.ndarray, shape: tuple, tolerance: int = TOLERANCE_PX) -> np.ndarray:
    """Model-resolution pixels within ``tolerance`` photo pixels of the true defect."""
    if not truth.any():
        return np.zeros(shape, bool)
    from PIL import Image
    dilated = ndimage.binary_dilation(truth, disk(tolerance)).astype(np.uint8) * 255
    return np.asarray(Image.fromarray(dilated).resize(shape[::-1], Image.Resampling.BOX)) > 0


def _region_stats(probability: np.ndarray, near: np.ndarray, thresholds) -> dict:
    """Per threshold and measure: the largest region, and the largest region within reach of the
    true defect (a call by it is located); only the mask's bounding box is labelled."""
    out = {f"{prefix}{m}": np.zeros(len(thresholds), np.int64) for m in REGION_MEASURES for prefix in ("", "near_")}
    top = float(probability.max()) if probability.size else 0.0
    for column, t in enumerate(thresholds):
        if t > top:
            break
        mask = probability >= t
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
        labels, sizes = measured_regions(mask[box])
        touching = np.zeros(labels.max() + 1, bool)
        touching[np.unique(labels[near[box]])] = True
        touching[0] = False
        for measure, size in sizes.items():
            out[measure][column] = size.max()
            out[f"near_{measure}"][column] = size[touching].max() if touching.any() else 0
    return out


def photo_stats(task) -> dict:
    """One photo's row of the sweep (see :func:`sweep`): ``(probability, truth, thresholds, regions)``."""
    probability, truth, thresholds, regions = task
    probability = probability.astype(np.float32)
    found = {}
    if regions:
        near = _near(truth, probability.shape)
        found.update(_region_stats(probability, near, thresholds))
        found["peak_near"] = bool(near.flat[int(np.argmax(probability))]) if probability.size else False
    full = resize_probability(probability, truth.shape[::-1])
    found.update(tp=_counts_at(full[truth], thresholds), fp=_counts_at(full[~truth], thresholds),
                 positives=int(truth.sum()), pixels=int(truth.size))
    return found


def sweep(predictions: SplitPredictions, truths=None, regions: bool = True) -> SplitPredictions:
    """Fill ``predictions.stats``: per photo (rows) and threshold (columns) the true and false
    positive pixels and defect pixels at photo resolution; and (``regions``) at model resolution
    the largest connected predicted region by each measure (``length``, ``area``), the largest
    within 2 px of the true defect (``near_length``, ``near_area``), and whether the photo's most
    probable pixel is (``peak_near``). With regions, the photos are measured on every core."""
    truths = truths or predictions.truths()
    thresholds = np.asarray(predictions.thresholds, dtype=np.float32)
    tasks = ((probability, truths(row["stem"]), thresholds, regions)
             for row, probability in zip(predictions.rows, predictions.probabilities))
    # Labelling and skeletons are NumPy work (TensorFlow is idle here): a pool pays off; the
    # per-epoch pixel scores (no regions) run during training and stay in this process.
    rows = parallel_map(photo_stats, tasks, progress=False, chunksize=8) if regions else [photo_stats(t) for t in tasks]
    keys = ["tp", "fp"] + ([f"{prefix}{m}" for m in REGION_MEASURES for prefix in ("", "near_")] if regions else [])
    stats = {key: np.array([row[key] for row in rows], np.int64).reshape(len(rows), len(thresholds)) for key in keys}
    stats.update(positives=np.array([row["positives"] for row in rows], np.int64),
                 pixels=np.array([row["pixels"] for row in rows], np.int64))
    if regions:
        stats["peak_near"] = np.array([row["peak_near"] for row in rows], bool)
    predictions.stats = stats
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


def image_scores(predictions: SplitPredictions, mask_threshold: float) -> dict:
    """Per photo: Dice, IoU, precision and recall of its mask at ``mask_threshold``, at the
    photo's own resolution (from the sweep's counts)."""
    k = predictions.column(mask_threshold)
    s = predictions.stats
    tp, fp = s["tp"][:, k], s["fp"][:, k]
    return scores_from_counts(tp, fp, s["positives"] - tp)


def intervals(predictions: SplitPredictions, point: OperatingPoint) -> dict:
    """95% intervals: exact (Clopper-Pearson) for the rates over parts (caught, caught where the
    defect is, false alarms); a bootstrap over parts for the pooled Dice (defective and good
    parts resampled apart)."""
    decided = calls(predictions, point)
    defective, good = predictions.is_defective, ~predictions.is_defective
    result = {}
    for key, hits, parts in (("detection_rate", decided["called"], defective),
                             ("located_detection_rate", decided["located"], defective),
                             ("false_alarm_rate", decided["called"], good)):
        result[f"{key}_low"], result[f"{key}_high"] = exact_interval(int(hits[parts].sum()), int(parts.sum()))
    k = predictions.column(point.mask_threshold)
    s = predictions.stats
    tp, fp, positives = s["tp"][:, k], s["fp"][:, k], s["positives"]

    def dice(d, g):
        parts = np.concatenate([d, g])
        return float(scores_from_counts(tp[parts].sum(), fp[parts].sum(), (positives - tp)[parts].sum())["dice"])

    result["dice_low"], result["dice_high"] = bootstrap_interval(dice, (np.flatnonzero(defective), np.flatnonzero(good)))
    return result


def per_image(predictions: SplitPredictions, point: OperatingPoint) -> list[dict]:
    """One row per photo at an operating point: mask scores at the photo's own resolution,
    the decision's measure (largest region, or the head's score) and the call, and whether
    it was made where the defect is (notebook 05's failures)."""
    pixel = image_scores(predictions, point.mask_threshold)
    decided = calls(predictions, point)
    return [{"stem": row["stem"], "quality": row["quality"], "dice": float(pixel["dice"][k]),
             "iou": float(pixel["iou"][k]), "decided_by": float(decided["size"][k]),
             "called_defective": bool(decided["called"][k]), "located": bool(decided["located"][k])}
            for k, row in enumerate(predictions.rows)]


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
    it was made, and 95% intervals."""
    if "length" not in predictions.stats:
        sweep(predictions, truths)
    k = predictions.column(point.mask_threshold)
    curve = pixel_curve(predictions)
    per_photo = image_scores(predictions, point.mask_threshold)
    defective = predictions.is_defective
    decided = calls(predictions, point)
    return {
        **{key: float(curve[key][k]) for key in ("dice", "iou", "miou", "precision", "recall")},
        "dice_per_image": float(per_photo["dice"].mean()), "iou_per_image": float(per_photo["iou"].mean()),
        # Per defective part: pooled scores weigh large scuffs most, this weighs every part once.
        "dice_defective_parts": float(per_photo["dice"][defective].mean()) if defective.any() else float("nan"),
        **tolerance_scores(predictions, point.mask_threshold, truths),
        **detection_rates(defective, decided["called"]),
        # Caught where the defect is: the call points within 2 px of the true defect.
        "located_detection_rate": float(decided["located"][defective].mean()) if defective.any() else float("nan"),
        **intervals(predictions, point),
        "auroc": auroc(defective, decided["score"]),
        # The plant's curve at its target: the fewest false alarms of any decision of this rule
        # that catches 95% where the defect is (read off this split: a bound, not a result).
        "false_alarms_at_95": false_alarms_at(predictions, point.rule),
        "false_alarms_at_95_any": false_alarms_at(predictions, point.rule, located=False),   # counting every call
        "auroc_max_probability": auroc(defective, predictions.max_probabilities),
        "mask_threshold": float(point.mask_threshold), "decision_threshold": float(point.decision_threshold),
        "min_region": int(point.min_region), "region_measure": point.region_measure, "rule": point.rule,
        "images": len(predictions.rows), "scored_at": "photo resolution",
    }


PART_SCORES = "__part_scores__"   # the part head's scores, stored beside the probabilities
STATS = "__stats__"               # the sweep's counts, so a reader need not sweep again


def save_predictions(predictions: SplitPredictions, path: str | Path) -> None:
    """Keep a split's probabilities (float16), the part head's scores and the sweep's counts
    (when it was swept with regions) beside the model."""
    buffer = io.BytesIO()
    arrays = {row["stem"]: p for row, p in zip(predictions.rows, predictions.probabilities)}
    if predictions.part_scores is not None:
        arrays[PART_SCORES] = np.asarray(predictions.part_scores, np.float32)
    if "length" in predictions.stats:
        arrays[f"{STATS}thresholds"] = np.asarray(predictions.thresholds, np.float64)
        arrays.update({f"{STATS}{key}": value for key, value in predictions.stats.items()})
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def load_predictions(path: Path, prepared: Prepared, rows: list) -> SplitPredictions | None:
    """What :func:`save_predictions` kept for ``rows`` (None when a photo is missing); the sweep's
    counts come back too when they were kept for these photos and this grid."""
    with np.load(path) as stored:
        if not all(row["stem"] in stored for row in rows):
            return None
        scores = stored[PART_SCORES] if PART_SCORES in stored and len(stored[PART_SCORES]) == len(rows) else None
        predictions = SplitPredictions(prepared, rows, [stored[row["stem"]] for row in rows], part_scores=scores)
        kept = [name for name in stored.files if name.startswith(STATS)]
        if (f"{STATS}thresholds" in kept and tuple(stored[f"{STATS}thresholds"]) == tuple(predictions.thresholds)
                and len(stored[f"{STATS}tp"]) == len(rows)):
            predictions.stats = {name[len(STATS):]: stored[name] for name in kept if name != f"{STATS}thresholds"}
        return predictions


def run_predictions(run: str | Path, split: str, prepared=None) -> SplitPredictions:
    """A run's predictions for a split, swept: from ``predictions/<split>.npz`` when ``train``
    left them there for this model (with the sweep's counts), else predicted now (and kept)."""
    run = Path(run)
    prepared = Prepared.of(prepared or load_run_config(run)["prepared"])
    rows = prepared.split(split)
    cache = run / "predictions" / f"{split}.npz"
    if cache.is_file() and cache.stat().st_mtime >= (run / "model.keras").stat().st_mtime:
        kept = load_predictions(cache, prepared, rows)
        if kept is not None:
            return kept if "length" in kept.stats else sweep(kept)
    predictions = sweep(predict_split(load_run_model(run), prepared, split, load_part_head(run)))
    save_predictions(predictions, cache)
    return predictions


def evaluate_run(run, prepared=None, split: str = "test", **overrides) -> dict:
    """Scores of a run on a split at its operating point; ``overrides`` (``mask_threshold``,
    ``decision_threshold``, ``min_region``) replace the values they name."""
    point = load_operating_point(run).with_overrides(**overrides)
    return scores(run_predictions(run, split, prepared), point)


def inference_ms(model, prepared, repeats: int = 3) -> float:
    """Milliseconds to predict one whole validation photo at the working geometry (median)."""
    prepared = Prepared.of(prepared)
    image = prepared.model_input(prepared.split("val")[0])
    model_outputs(model, image)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model_outputs(model, image)
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
            opened = predictor.open(path)
            results[name].append(predictor.predict_photo(opened))
        photos.append(opened.photo())
        truth_masks.append(prepared.truths(row["stem"]))
    titles = [f"{row['stem']} ({row['quality']})" for row in rows]
    return show_photo_predictions(photos, truth_masks, results, titles)


def pick_parts(rows: list[dict], defective: int = 3, good: int = 1, offset: int = 0) -> list[dict]:
    """A few defective and good parts of a split, for galleries: the first ones after skipping
    ``offset`` of each kind (so two galleries of one split can show other parts)."""
    return ([r for r in rows if r["quality"] == "defective"][offset:offset + defective]
            + [r for r in rows if r["quality"] == "good"][offset:offset + good])
