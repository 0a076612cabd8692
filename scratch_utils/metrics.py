"""Metrics that mean something when defects cover 1% of the pixels (notebooks 03-05).

Pure NumPy functions on boolean masks of shape (N, H, W) (or (N, H, W, 1)):

- pixel scores of the defect class: Dice, IoU, precision, recall, pooled over the dataset
  (sums of TP/FP/FN over all images) and per image (then averaged);
- 2-class mean IoU (defect and background), comparable with the earlier U-Net course's 0.660;
- tolerance F1 for thin defects: a predicted pixel within ``tolerance`` px of a true defect
  pixel counts as correct, and a true pixel within ``tolerance`` px of a prediction as found;
- the image-level decision the plant acts on: a part is defective when one connected
  region of pixels above ``threshold`` covers at least ``min_area`` pixels (a scratch is one
  region; dust specks scattered over a good part do not add up); detection rate on
  defective parts, false-alarm rate on good parts, and AUROC of a per-image score.

Rule for images whose true and predicted masks are both empty (a good part called good):
per-image Dice and IoU are 1 (a perfect answer); dataset-level scores only pool pixels,
so such images add nothing to them. Precision with no predicted pixel is reported as 1
and recall with no true pixel as 1 (nothing was wrong / nothing was missed).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

EIGHT_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def _bool(masks) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 4 and masks.shape[-1] == 1:
        masks = masks[..., 0]
    if masks.ndim == 2:
        masks = masks[None]
    return masks.astype(bool)


def safe_ratio(numerator, denominator, empty=1.0):
    """numerator / denominator, and ``empty`` where the denominator is 0 (see the module docstring)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, empty)


def confusion(true, pred, axis=None):
    """(tp, fp, fn, tn) pixel counts, pooled (``sklearn.metrics.confusion_matrix``) or per
    image (``axis="image"``)."""
    true, pred = _bool(true), _bool(pred)
    if axis != "image":
        from sklearn.metrics import confusion_matrix
        tn, fp, fn, tp = confusion_matrix(true.ravel(), pred.ravel(), labels=[False, True]).ravel()
        return tp, fp, fn, tn
    axes = (1, 2)
    tp = np.sum(true & pred, axis=axes)
    fp = np.sum(~true & pred, axis=axes)
    fn = np.sum(true & ~pred, axis=axes)
    tn = np.sum(~true & ~pred, axis=axes)
    return tp, fp, fn, tn


def scores_from_counts(tp, fp, fn, tn=None) -> dict:
    """Dice, IoU, precision, recall (and, given ``tn``, 2-class mean IoU) from pixel counts,
    elementwise: the one place these formulas live (the threshold sweeps and the
    per-image scores use it too)."""
    tp, fp, fn = (np.asarray(v, float) for v in (tp, fp, fn))
    scores = {"dice": safe_ratio(2 * tp, 2 * tp + fp + fn), "iou": safe_ratio(tp, tp + fp + fn),
              "precision": safe_ratio(tp, tp + fp), "recall": safe_ratio(tp, tp + fn)}
    if tn is not None:
        scores["miou"] = (scores["iou"] + safe_ratio(np.asarray(tn, float), tn + fp + fn)) / 2
    return scores


def pixel_scores(true, pred) -> dict:
    """Dataset-level (pooled) Dice, IoU, precision, recall and 2-class mean IoU."""
    return {key: float(value) for key, value in scores_from_counts(*confusion(true, pred)).items()}


def per_image_scores(true, pred) -> dict:
    """Per-image Dice and IoU arrays (both empty -> 1, see the module docstring)."""
    scores = scores_from_counts(*confusion(true, pred, axis="image")[:3])
    return {"dice": scores["dice"], "iou": scores["iou"]}


def dilate(masks, radius: int) -> np.ndarray:
    """Binary dilation of (N, H, W) masks by a disk of ``radius`` pixels."""
    masks = _bool(masks)
    if radius <= 0:
        return masks.copy()
    n, h, w = masks.shape
    padded = np.pad(masks, ((0, 0), (radius, radius), (radius, radius)))
    out = np.zeros_like(masks)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx <= radius * radius:
                out |= padded[:, radius + dy:radius + dy + h, radius + dx:radius + dx + w]
    return out


def tolerance_counts(true, pred, tolerance: int = 2) -> dict:
    """Pixel counts behind :func:`tolerance_scores`, to pool over photos of any size:
    predicted pixels near a true one (``hits``) and true pixels near a prediction (``found``)."""
    true, pred = _bool(true), _bool(pred)
    return {"hits": int(np.sum(pred & dilate(true, tolerance))), "predicted": int(np.sum(pred)),
            "found": int(np.sum(true & dilate(pred, tolerance))), "true": int(np.sum(true))}


def tolerance_from_counts(counts: dict) -> dict:
    precision = float(safe_ratio(counts["hits"], counts["predicted"]))
    recall = float(safe_ratio(counts["found"], counts["true"]))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tolerance_precision": precision, "tolerance_recall": recall, "tolerance_f1": f1}


def tolerance_scores(true, pred, tolerance: int = 2) -> dict:
    """Precision, recall and F1 where a pixel within ``tolerance`` px counts as a hit."""
    return tolerance_from_counts(tolerance_counts(true, pred, tolerance))


def predicted_areas(probabilities, threshold: float = 0.5) -> np.ndarray:
    """Pixels per image at or above ``threshold``."""
    return np.sum(_probabilities(probabilities) >= threshold, axis=(1, 2))


def _probabilities(probabilities) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float32)
    if probabilities.ndim == 4 and probabilities.shape[-1] == 1:
        probabilities = probabilities[..., 0]
    return probabilities


def largest_region(mask) -> int:
    """Pixels in the largest 8-connected region of a 2-D mask (0 when it is empty)."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0
    labels, count = ndimage.label(mask, structure=EIGHT_NEIGHBOURS)
    return int(np.bincount(labels.ravel())[1:].max())


def largest_regions(probabilities, threshold: float = 0.5) -> np.ndarray:
    """Per image, the largest connected region of pixels at or above ``threshold``."""
    return np.array([largest_region(p >= threshold) for p in _probabilities(probabilities)], np.int64)


def called_defective(largest_region_px, min_area: int) -> np.ndarray:
    """The pass/fail rule from the largest region(s) found: defective at ``min_area`` pixels."""
    return np.asarray(largest_region_px) >= max(1, int(min_area))


def image_decisions(probabilities, threshold: float = 0.5, min_area: int = 1) -> np.ndarray:
    """True where a part is called defective: one connected region of at least ``min_area``
    pixels >= threshold."""
    return called_defective(largest_regions(probabilities, threshold), min_area)


def detection_rates(is_defective, called_defective) -> dict:
    """Share of defective parts caught and share of good parts falsely flagged."""
    is_defective = np.asarray(is_defective, bool)
    called = np.asarray(called_defective, bool)
    return {"detection_rate": float(safe_ratio(np.sum(called & is_defective), np.sum(is_defective))),
            "false_alarm_rate": float(safe_ratio(np.sum(called & ~is_defective), np.sum(~is_defective),
                                             empty=0.0)),
            "defective_parts": int(is_defective.sum()), "good_parts": int((~is_defective).sum())}


def auroc(labels, scores) -> float:
    """Area under the ROC curve (probability that a defective part outscores a good one;
    ``sklearn.metrics.roc_auc_score``), NaN when a split has only one kind of part."""
    from sklearn.metrics import roc_auc_score
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, float)))


def image_score(probabilities) -> np.ndarray:
    """Per-image defect score: the largest predicted probability."""
    return _probabilities(probabilities).max(axis=(1, 2))


def evaluate_predictions(true_masks, probabilities, threshold: float = 0.5, min_area: int = 1,
                         tolerance: int = 2) -> dict:
    """Every score of the course for one split, at one operating point."""
    true = _bool(true_masks)
    pred = _probabilities(probabilities) >= threshold
    per_image = per_image_scores(true, pred)
    is_defective = true.any(axis=(1, 2))
    called = image_decisions(probabilities, threshold, min_area)
    return {
        **pixel_scores(true, pred),
        "dice_per_image": float(per_image["dice"].mean()),
        "iou_per_image": float(per_image["iou"].mean()),
        **tolerance_scores(true, pred, tolerance),
        **detection_rates(is_defective, called),
        "auroc": auroc(is_defective, image_score(probabilities)),
        "pixel_accuracy": float((true == pred).mean()),
        "threshold": float(threshold), "min_area": int(min_area), "images": int(len(true)),
    }
