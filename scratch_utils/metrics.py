"""Score formulas that mean something when defects cover a fraction of a percent of the pixels
(notebooks 03-05). Pure NumPy on counts and masks; :mod:`scratch_utils.evaluation` applies them
to a split's photos at their own resolution.

- pixel scores of the defect class from pixel counts: Dice, IoU, precision, recall, and the
  2-class mean IoU (defect and background) of the earlier U-Net course;
- tolerance F1 for thin defects: a predicted pixel within ``tolerance`` px of a true defect
  pixel counts as correct, and a true pixel within ``tolerance`` px of a prediction as found;
- part-level rates of the calls (:mod:`scratch_utils.decision` makes them): detection rate on
  defective parts, false-alarm rate on good parts, their exact intervals, a bootstrap over parts
  for pooled scores, and AUROC of a per-part score.

Empty cases: Dice and IoU of a photo whose true and predicted masks are both empty (a good part
called good) are 1; pooled scores only add pixels, so such photos add nothing to them.
Precision with no predicted pixel is 1 and recall with no true pixel is 1 (nothing was wrong,
nothing was missed).
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.morphology import disk

def safe_ratio(numerator, denominator, empty=1.0):
    """numerator / denominator, and ``empty`` where the denominator is 0 (see the module docstring)."""
    numerator, denominator = np.asarray(numerator, float), np.asarray(denominator, float)
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, empty)


def scores_from_counts(tp, fp, fn, tn=None) -> dict:
    """Dice, IoU, precision, recall (and, given ``tn``, 2-class mean IoU) from pixel counts,
    elementwise: the one place these formulas live."""
    tp, fp, fn = (np.asarray(v, float) for v in (tp, fp, fn))
    scores = {"dice": safe_ratio(2 * tp, 2 * tp + fp + fn), "iou": safe_ratio(tp, tp + fp + fn),
              "precision": safe_ratio(tp, tp + fp), "recall": safe_ratio(tp, tp + fn)}
    if tn is not None:
        scores["miou"] = (scores["iou"] + safe_ratio(np.asarray(tn, float), tn + fp + fn)) / 2
    return scores


def tolerance_counts(true, pred, tolerance: int = 2) -> dict:
    """Pixel counts behind the tolerance scores of one photo, to pool over photos of any size:
    predicted pixels near a true one (``hits``) and true pixels near a prediction (``found``)."""
    true, pred = np.asarray(true, bool), np.asarray(pred, bool)
    near_true = ndimage.binary_dilation(true, disk(tolerance)) if tolerance > 0 else true
    near_pred = ndimage.binary_dilation(pred, disk(tolerance)) if tolerance > 0 else pred
    return {"hits": int(np.sum(pred & near_true)), "predicted": int(np.sum(pred)),
            "found": int(np.sum(true & near_pred)), "true": int(np.sum(true))}


def tolerance_from_counts(counts: dict) -> dict:
    """Tolerance precision, recall and F1 from pooled :func:`tolerance_counts`."""
    precision = float(safe_ratio(counts["hits"], counts["predicted"]))
    recall = float(safe_ratio(counts["found"], counts["true"]))
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tolerance_precision": precision, "tolerance_recall": recall, "tolerance_f1": f1}


def detection_rates(is_defective, called_defective) -> dict:
    """Share of defective parts caught and share of good parts falsely flagged."""
    is_defective = np.asarray(is_defective, bool)
    called = np.asarray(called_defective, bool)
    return {"detection_rate": float(safe_ratio(np.sum(called & is_defective), np.sum(is_defective))),
            "false_alarm_rate": float(safe_ratio(np.sum(called & ~is_defective), np.sum(~is_defective),
                                                 empty=0.0)),
            "defective_parts": int(is_defective.sum()), "good_parts": int((~is_defective).sum())}


def exact_interval(hits: int, parts: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval of a rate of ``hits`` in ``parts``: it holds its level
    at any count, where a bootstrap over 35 parts is too narrow (34/35: exact 85%-99.9%)."""
    if parts == 0:
        return float("nan"), float("nan")
    from scipy.stats import binomtest
    found = binomtest(int(hits), int(parts)).proportion_ci(level, method="exact")
    return float(found.low), float(found.high)


def bootstrap_interval(statistic, groups, resamples: int = 2000, level: float = 0.95,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic(*indices)``, resampling parts (not
    pixels) within each group of ``groups`` (index arrays, e.g. defective and good parts, so
    each resample keeps the split's counts)."""
    rng = np.random.default_rng(seed)
    values = [statistic(*[rng.choice(g, size=len(g), replace=True) if len(g) else g for g in groups])
              for _ in range(resamples)]
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def auroc(labels, scores) -> float:
    """Area under the ROC curve (probability that a defective part outscores a good one;
    ``sklearn.metrics.roc_auc_score``), NaN when a split has only one kind of part."""
    from sklearn.metrics import roc_auc_score
    labels = np.asarray(labels, bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, float)))
