"""Reference rows of the comparison (notebook 05): what a reader needs to judge the models by.

- **Flag every part**: the trivial rule. It catches every defective part and flags every good
  one, so a model's false alarms at 95% caught mean something only well below 100%.
- **Ridge filter**: a training-free line detector. The Sato filter of scikit-image responds
  to bright and dark lines (both polarities, scales for lines about 1-6 px wide at the
  working scale). Its response, mapped into [0, 1], goes through the same sweep, the same
  operating-point search on the validation split and the same scores as a model's
  probabilities; the test split is scored once at the point chosen on validation.
"""
from __future__ import annotations

import numpy as np

from .compare import split_scores
from .decision import choose_operating_point
from .evaluation import SplitPredictions, scores, sweep
from .parallel import parallel_map
from .dataset import Prepared

RIDGE_SIGMAS = (0.5, 1.0, 1.5, 2.0, 3.0)   # Gaussian scales: lines about 1 to 6 px wide
RIDGE_SCALE_PERCENTILE = 99.5              # the response mapped to 0.5 (set on validation photos)


def ridge_response(image: np.ndarray, sigmas=RIDGE_SIGMAS) -> np.ndarray:
    """Sato ridge response of a photo in [0, 1] (H x W or H x W x 3), the stronger of the dark-line
    and bright-line responses at each pixel: ``max(sato(black_ridges=True), sato(black_ridges=False))``
    of scikit-image, from one Hessian per scale (a dark line is where its larger eigenvalue is
    positive, a bright one where its smaller is negative), so half the work of two calls."""
    from skimage.feature import hessian_matrix, hessian_matrix_eigvals
    grey = np.asarray(image, np.float32)
    grey = grey.mean(axis=2) if grey.ndim == 3 else grey
    response = np.zeros_like(grey)
    for sigma in sigmas:
        larger, smaller = hessian_matrix_eigvals(hessian_matrix(grey, sigma, mode="reflect",
                                                                use_gaussian_derivatives=True))
        strength = np.maximum(np.maximum(larger, 0), np.maximum(-smaller, 0))
        response = np.maximum(response, sigma ** 2 * strength)
    return response.astype(np.float32)


def _ridge_task(task) -> np.ndarray:
    image, box = task
    x0, y0, w, h = box
    return ridge_response(image)[y0:y0 + h, x0:x0 + w]


def ridge_responses(prepared, split: str, progress: bool = True) -> tuple[list, list]:
    """(rows, responses cut to each photo's box) of a split, at the working geometry."""
    prepared = Prepared.of(prepared)
    rows = prepared.split(split)
    tasks = ((prepared.model_input(row), prepared.box(row)) for row in rows)
    responses = parallel_map(_ridge_task, tasks, desc=f"ridge filter on {split}", unit="photo",
                             progress=progress, chunksize=4)
    return rows, responses


def as_probabilities(responses: list, scale: float) -> list:
    """Responses r mapped to r / (r + scale): monotone, in [0, 1), 0.5 at ``scale``."""
    return [(r / (r + scale)).astype(np.float16) for r in responses]


def ridge_reference(prepared, progress: bool = True) -> dict:
    """The ridge filter chosen on validation and scored on test, like a model's run:
    ``{"point", "scale", "val", "test"}`` (scores at the photos' own resolution) and the swept
    ``test_predictions`` for the curves."""
    prepared = Prepared.of(prepared)
    val_rows, val_responses = ridge_responses(prepared, "val", progress)
    scale = float(np.percentile(np.concatenate([r.ravel() for r in val_responses]), RIDGE_SCALE_PERCENTILE))
    scale = max(scale, 1e-6)
    val = sweep(SplitPredictions(prepared, val_rows, as_probabilities(val_responses, scale)))
    point = choose_operating_point(val)
    test_rows, test_responses = ridge_responses(prepared, "test", progress)
    test = sweep(SplitPredictions(prepared, test_rows, as_probabilities(test_responses, scale)))
    return {"point": point, "scale": scale, "val": scores(val, point), "test": scores(test, point),
            "test_predictions": test}


def reference_row(name: str, description: str, val: dict, test: dict, point=None) -> dict:
    """A comparison row for a reference (no model, no training)."""
    row = {"name": name, "model": description, "loss": "", "epochs": 0, "encoder_weights": "",
           "input": "working scale", "parameters": 0, "train_seconds": 0.0, "train_tiles_per_s": None,
           "inference_ms_per_photo": None,
           "mask_threshold": point.mask_threshold if point else None,
           "decision_threshold": point.decision_threshold if point else None,
           "min_region": point.min_region if point else None,
           "region_measure": point.region_measure if point else "",
           "rule": point.rule if point else "", "decision": point.describe() if point else "every part, always",
           "target_met_on_val": bool(point.target_met) if point else False,
           "detection_target_met_on_val": bool(point.detection_target_met) if point else True, "warnings": 0}
    return {**row, **split_scores(val, test)}


def flag_every_part(test_rows: list[dict]) -> dict:
    """Scores of the rule that calls every part defective: 100% caught, 100% false alarms."""
    defective = sum(row["quality"] == "defective" for row in test_rows)
    good = len(test_rows) - defective
    return {"detection_rate": 1.0, "detection_rate_low": 1.0, "detection_rate_high": 1.0,
            "false_alarm_rate": 1.0 if good else 0.0, "false_alarm_rate_low": 1.0 if good else 0.0,
            "false_alarm_rate_high": 1.0 if good else 0.0, "auroc": 0.5}


def reference_rows(prepared, progress: bool = True) -> tuple[list[dict], dict]:
    """(the comparison's reference rows, the ridge filter's :func:`ridge_reference`)."""
    prepared = Prepared.of(prepared)
    ridge = ridge_reference(prepared, progress)
    rows = [reference_row("ridge_filter", "Sato ridge filter, no training", ridge["val"], ridge["test"],
                          ridge["point"]),
            reference_row("flag_every_part", "flag every part, no model", flag_every_part(prepared.split("val")),
                          flag_every_part(prepared.split("test")))]
    return rows, ridge
