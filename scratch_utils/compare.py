"""Model comparison: operating points chosen on validation data, curves, tables (notebook 05).

The plant's question is image-level: catch at least 95% of defective parts with as few
false alarms on good parts as possible. A part is called defective when at least
``min_area`` pixels reach the pixel ``threshold``; both are picked on the validation split,
then the test split is scored once at that operating point.
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write_json, atomic_write_text
from .metrics import detection_rates, evaluate_predictions, per_image_scores, predicted_areas

# Low thresholds matter: an undertrained model's scratch probabilities can sit well below 0.5.
THRESHOLDS = (0.01, 0.02, 0.03) + tuple(np.round(np.arange(0.05, 0.96, 0.05), 2))
MIN_AREAS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
TARGET_DETECTION = 0.95


@dataclass
class OperatingPoint:
    threshold: float
    min_area: int
    detection_rate: float          # on the split it was chosen on (validation)
    false_alarm_rate: float
    target_met: bool
    target: float = TARGET_DETECTION


def choose_operating_point(truths, probabilities, target: float = TARGET_DETECTION,
                           thresholds=THRESHOLDS, min_areas=MIN_AREAS) -> OperatingPoint:
    """Lowest false-alarm rate among the (threshold, min_area) pairs that catch ``target``
    of the defective parts; ties go to the higher threshold, then the larger area (the
    stricter rule). If none reaches the target, the pair with the highest detection rate."""
    truths = np.asarray(truths).astype(bool)
    is_defective = truths.reshape(len(truths), -1).any(axis=1)
    candidates = []
    for threshold in thresholds:
        areas = predicted_areas(probabilities, threshold)
        for min_area in min_areas:
            rates = detection_rates(is_defective, areas >= min_area)
            candidates.append((rates["detection_rate"], rates["false_alarm_rate"],
                               float(threshold), int(min_area)))
    meeting = [c for c in candidates if c[0] >= target]
    if meeting:
        detection, false_alarm, threshold, min_area = min(
            meeting, key=lambda c: (c[1], -c[2], -c[3]))
    else:
        detection, false_alarm, threshold, min_area = max(
            candidates, key=lambda c: (c[0], -c[1], c[2]))
    return OperatingPoint(threshold, min_area, detection, false_alarm, bool(meeting), target)


def detection_curve(truths, probabilities, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(false-alarm rates, detection rates) as ``min_area`` sweeps from 1 to the largest area."""
    truths = np.asarray(truths).astype(bool)
    is_defective = truths.reshape(len(truths), -1).any(axis=1)
    areas = predicted_areas(probabilities, threshold)
    levels = np.unique(np.concatenate([[1], areas[areas > 0], [areas.max() + 1]]))
    points = [detection_rates(is_defective, areas >= level) for level in levels]
    return (np.array([p["false_alarm_rate"] for p in points]),
            np.array([p["detection_rate"] for p in points]))


def precision_recall_curve(truths, probabilities, thresholds=np.linspace(0.02, 0.98, 49)):
    """Pixel-level (recall, precision) of the defect class as the threshold sweeps."""
    truths = np.asarray(truths).astype(bool).reshape(-1)
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    positives = truths.sum()
    recalls, precisions = [], []
    for threshold in thresholds:
        predicted = probabilities >= threshold
        tp = np.sum(predicted & truths)
        recalls.append(tp / positives if positives else 1.0)
        precisions.append(tp / predicted.sum() if predicted.sum() else 1.0)
    return np.array(recalls), np.array(precisions)


def score_at(truths, probabilities, point: OperatingPoint) -> dict:
    return evaluate_predictions(truths, probabilities, point.threshold, point.min_area)


def worst_cases(truths, probabilities, rows: list[dict], point: OperatingPoint, n: int = 4):
    """Indices of the worst test parts: missed or poorly segmented defects, then false alarms."""
    truths = np.asarray(truths).astype(bool)
    predicted = np.asarray(probabilities) >= point.threshold
    dice = per_image_scores(truths, predicted)["dice"]
    called = predicted_areas(probabilities, point.threshold) >= point.min_area
    defective = np.array([r["quality"] == "defective" for r in rows])
    ranked = [int(k) for k in np.argsort(dice) if defective[k]]
    false_alarms = [int(k) for k in np.where(called & ~defective)[0]]
    picks = ranked[: max(1, n - min(len(false_alarms), n // 2))]
    return (picks + false_alarms)[:n]


SCORES = ["dice", "iou", "miou", "tolerance_f1", "precision", "recall", "detection_rate",
          "false_alarm_rate", "auroc"]


def comparison_row(name: str, config: dict, point: OperatingPoint, val: dict, test: dict,
                   inference_ms: float) -> dict:
    extra = config.get("extra", {})
    row = {"name": name, "model": config["model"], "loss": config["loss"], "epochs": config["epochs"],
           "encoder_weights": config.get("encoder_weights") or "",
           "parameters": extra.get("parameters"), "train_seconds": extra.get("train_seconds"),
           "train_images_per_s": extra.get("train_images_per_s"),
           "inference_ms_per_image": inference_ms, "threshold": point.threshold,
           "min_area": point.min_area, "target_met_on_val": point.target_met}
    for split, scores in (("val", val), ("test", test)):
        for key in SCORES:
            row[f"{split}_{key}"] = scores[key]
    return row


def write_results(rows: list[dict], folder: Path) -> tuple[Path, Path]:
    """``comparison.csv`` and ``comparison.json`` (numbers rounded to 4 places)."""
    folder = Path(folder)

    def clean(value):
        if isinstance(value, float):
            return round(value, 4) if math.isfinite(value) else None
        return value

    rows = [{k: clean(v) for k, v in row.items()} for row in rows]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    csv_path, json_path = folder / "comparison.csv", folder / "comparison.json"
    atomic_write_text(csv_path, table.getvalue())
    atomic_write_json(json_path, {"target_detection_rate": TARGET_DETECTION, "models": rows})
    return csv_path, json_path


def read_results(folder: Path) -> list[dict]:
    return json.loads((Path(folder) / "comparison.json").read_text())["models"]



README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def markdown_table(rows: list[dict]) -> str:
    """The README's results table: costs, then test scores at the validation-chosen point."""
    header = ("| model | loss | encoder | epochs | params | train min | infer ms/img | threshold / min area "
              "| val: caught / false alarms | Dice | IoU | mIoU | tol. F1 | precision | recall | caught "
              "| false alarms | AUROC |")
    lines = [header, "|" + "---|" * 18]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['loss']} | {r['encoder_weights'] or '-'} | {r['epochs']} | "
            f"{r['parameters'] / 1e6:.1f} M | {r['train_seconds'] / 60:.1f} | "
            f"{r['inference_ms_per_image']:.1f} | {r['threshold']:.2f} / {r['min_area']} | "
            f"{r['val_detection_rate']:.0%} / {r['val_false_alarm_rate']:.0%}"
            f"{'' if r['target_met_on_val'] else ' (target missed)'} | "
            + " | ".join(f"{r['test_' + k]:.3f}" for k in ("dice", "iou", "miou", "tolerance_f1",
                                                            "precision", "recall"))
            + f" | {r['test_detection_rate']:.0%} | {r['test_false_alarm_rate']:.0%} | "
            f"{r['test_auroc']:.3f} |")
    return "\n".join(lines)


def update_readme(readme: Path, rows: list[dict]) -> bool:
    """Replace the text between the results markers of the README; False if no markers."""
    readme = Path(readme)
    text = readme.read_text(encoding="utf-8")
    if README_START not in text or README_END not in text:
        return False
    before, rest = text.split(README_START, 1)
    _, after = rest.split(README_END, 1)
    atomic_write_text(readme, f"{before}{README_START}\n{markdown_table(rows)}\n{README_END}{after}")
    return True
