"""Metrics on tiny masks whose answers are computed by hand."""
import numpy as np
import pytest

from scratch_utils import metrics

T = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]], bool)
P = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]], bool)  # TP 1, FP 1, FN 1, TN 6


def test_three_by_three_case():
    scores = metrics.pixel_scores(T, P)
    assert scores["iou"] == pytest.approx(1 / 3)
    assert scores["dice"] == pytest.approx(1 / 2)
    assert scores["precision"] == pytest.approx(1 / 2) and scores["recall"] == pytest.approx(1 / 2)
    assert scores["miou"] == pytest.approx((1 / 3 + 6 / 8) / 2)


def test_empty_masks_follow_the_stated_rule():
    empty = np.zeros((3, 3), bool)
    per_image = metrics.per_image_scores(np.stack([empty, empty, T]), np.stack([empty, T, T]))
    assert per_image["dice"].tolist() == [1.0, 0.0, 1.0]
    pooled = metrics.pixel_scores(np.stack([empty, T]), np.stack([empty, T]))
    assert pooled["dice"] == 1.0 and pooled["iou"] == 1.0
    nothing = metrics.pixel_scores(empty, empty)
    assert nothing["precision"] == 1.0 and nothing["recall"] == 1.0


def test_tolerance_f1_forgives_a_one_pixel_offset_only_within_tolerance():
    true = np.zeros((1, 9, 9), bool)
    true[0, 4, 1:8] = True
    shifted = np.roll(true, 1, axis=1)  # the scratch, one pixel lower
    assert metrics.pixel_scores(true, shifted)["dice"] == 0.0
    assert metrics.tolerance_scores(true, shifted, tolerance=2)["tolerance_f1"] == 1.0
    far = np.roll(true, 3, axis=1)
    assert metrics.tolerance_scores(true, far, tolerance=2)["tolerance_f1"] == 0.0


def test_dilate_uses_a_disk():
    point = np.zeros((1, 5, 5), bool)
    point[0, 2, 2] = True
    assert metrics.dilate(point, 1)[0].sum() == 5
    assert metrics.dilate(point, 2)[0].sum() == 13


def test_image_decisions_and_rates():
    probabilities = np.zeros((4, 3, 3))
    probabilities[0, 0, :2] = 0.9   # defective, 2 px: caught at min_area 2
    probabilities[1, 0, 0] = 0.9    # defective, 1 px: missed at min_area 2
    probabilities[2, 1, 1] = 0.6    # good, 1 px: no alarm at min_area 2
    called = metrics.image_decisions(probabilities, threshold=0.5, min_area=2)
    assert called.tolist() == [True, False, False, False]
    rates = metrics.detection_rates([True, True, False, False], called)
    assert rates["detection_rate"] == 0.5 and rates["false_alarm_rate"] == 0.0
    assert metrics.image_decisions(probabilities, 0.5, 1).tolist() == [True, True, True, False]


def test_image_decision_counts_one_region_not_scattered_specks():
    specks = np.zeros((1, 9, 9))
    specks[0, ::4, ::4] = 0.9                              # 9 isolated dust specks
    scratch = np.zeros((1, 9, 9))
    scratch[0, np.arange(5), np.arange(5)] = 0.9           # a 5-px diagonal hairline
    assert metrics.predicted_areas(specks, 0.5)[0] == 9
    assert metrics.largest_regions(specks, 0.5).tolist() == [1]
    assert metrics.largest_regions(scratch, 0.5).tolist() == [5]   # diagonal pixels connect
    called = metrics.image_decisions(np.concatenate([specks, scratch]), 0.5, min_area=4)
    assert called.tolist() == [False, True]
    assert metrics.largest_region(np.zeros((3, 3), bool)) == 0


def test_auroc():
    assert metrics.auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert metrics.auroc([1, 0], [0.5, 0.5]) == 0.5
    assert metrics.auroc([1, 1, 0], [0.2, 0.9, 0.5]) == 0.5


def test_pixel_accuracy_is_misleading_and_reported_beside_real_scores():
    true = np.zeros((10, 20, 20), bool)
    true[:5, 10, 5:15] = True  # 1.25% of pixels
    nothing = np.zeros_like(true, dtype=float)
    scores = metrics.evaluate_predictions(true, nothing)
    assert scores["pixel_accuracy"] > 0.98
    assert scores["dice"] == 0.0 and scores["recall"] == 0.0 and scores["detection_rate"] == 0.0


def test_keras_losses_agree_with_hand_values():
    keras = pytest.importorskip("keras")
    from scratch_utils.losses import BCEDice, get_loss
    y_true = np.array([[[[1.0]], [[0.0]]]], "float32")        # shape (1, 2, 1, 1)
    y_pred = np.array([[[[0.8]], [[0.4]]]], "float32")
    dice = float(get_loss("dice")(y_true, y_pred))
    assert dice == pytest.approx(1 - 2 * 0.8 / (1 + 1.2), abs=1e-4)
    bce = -(np.log(0.8) + np.log(0.6)) / 2
    assert float(BCEDice()(y_true, y_pred)) == pytest.approx(bce + dice, abs=1e-3)
    restored = keras.losses.deserialize(keras.losses.serialize(BCEDice(dice_weight=2.0)))
    assert restored.dice_weight == 2.0


def split_predictions(truths, probabilities, thresholds=None):
    """SplitPredictions over in-memory arrays (model and photo resolution the same)."""
    from scratch_utils.evaluation import THRESHOLDS, SplitPredictions, sweep
    rows = [{"stem": str(k), "quality": "defective" if t.any() else "good"}
            for k, t in enumerate(truths)]
    predictions = SplitPredictions(None, rows, [np.asarray(p, np.float32) for p in probabilities],
                                   tuple(thresholds or THRESHOLDS))
    return sweep(predictions, truths=lambda stem: np.asarray(truths[int(stem)], bool))


def test_operating_point_meets_the_target_with_fewest_false_alarms():
    from scratch_utils.compare import choose_operating_point
    truths = np.zeros((6, 4, 4), bool)
    truths[:3, 0, 0] = True                       # parts 0-2 defective, 3-5 good
    probabilities = np.zeros((6, 4, 4))
    probabilities[0, 0, :3] = 0.9                 # strong 3-px response
    probabilities[1, 0, :2] = 0.6                 # weaker 2-px response
    probabilities[2, 0, 0] = 0.3                  # faint 1-px response
    probabilities[3, 1, 1] = 0.7                  # a good part with a 1-px false alarm
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    point = choose_operating_point(predictions, target=0.95, min_areas=(1, 2, 3))
    # Catching all three needs threshold 0.25 and area 1, which also flags part 3.
    assert (point.threshold, point.min_area, point.target_met) == (0.25, 1, True)
    assert point.detection_rate == 1.0 and point.false_alarm_rate == pytest.approx(1 / 3)
    relaxed = choose_operating_point(predictions, target=0.6, min_areas=(1, 2, 3))
    assert relaxed.false_alarm_rate == 0.0 and relaxed.detection_rate >= 0.6
    impossible = choose_operating_point(split_predictions(truths, np.zeros_like(probabilities)),
                                        target=0.95)
    assert not impossible.target_met


def test_mask_threshold_is_chosen_for_dice_apart_from_the_decision_rule():
    from scratch_utils.compare import choose_operating_point
    from scratch_utils.evaluation import scores
    truths = np.zeros((3, 4, 4), bool)
    truths[0, 0, :] = True                        # a 4-px scratch
    truths[1, 0, 0] = True                        # a faint 1-px defect
    probabilities = np.zeros((3, 4, 4))           # part 2 is good and quiet
    probabilities[0, 0, :] = 0.9
    probabilities[0, 1, :] = 0.3                  # a halo beside the scratch
    probabilities[1, 0, 0] = 0.3
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    point = choose_operating_point(predictions, target=0.95, min_areas=(1, 2))
    # Catching the faint part needs 0.25; the mask is best (Dice 8/9) at 0.5, without the halo.
    assert (point.threshold, point.min_area, point.mask_threshold) == (0.25, 1, 0.5)
    truths_by_stem = lambda stem: truths[int(stem)]  # noqa: E731
    result = scores(predictions, point.threshold, point.min_area, point.mask_threshold,
                    truths=truths_by_stem)
    assert result["dice"] == pytest.approx(8 / 9) and result["detection_rate"] == 1.0
    assert result["dice_defective_parts"] == pytest.approx(0.5)   # the scratch 1.0, the faint part 0.0
    one_threshold = scores(predictions, 0.25, 1, truths=truths_by_stem)
    assert one_threshold["dice"] == pytest.approx(10 / 14)


def test_threshold_sweep_counts_pixels_like_a_direct_comparison():
    from scratch_utils.evaluation import pixel_curve
    rng = np.random.default_rng(1)
    truths = rng.random((5, 9, 7)) > 0.8
    probabilities = np.clip(truths * 0.5 + rng.random((5, 9, 7)) * 0.6, 0, 1)
    predictions = split_predictions(truths, probabilities)
    curve = pixel_curve(predictions)
    for k, threshold in enumerate(predictions.thresholds):
        direct = metrics.pixel_scores(truths, probabilities.astype(np.float32) >= np.float32(threshold))
        for key in ("dice", "iou", "miou", "precision", "recall"):
            assert curve[key][k] == pytest.approx(direct[key]), (threshold, key)


def test_detection_curve_is_the_best_of_the_searched_grid_and_the_chosen_point_lies_under_it():
    from scratch_utils.compare import choose_operating_point, detection_curve
    from scratch_utils.metrics import detection_rates
    truths = np.zeros((6, 8, 8), bool)
    truths[:3, 0, :4] = True
    rng = np.random.default_rng(0)
    probabilities = rng.random((6, 8, 8)) * 0.4
    probabilities[0, 0, :4] = 0.9                 # clear scratch
    probabilities[1, 0, :2] = 0.6                 # weaker, shorter
    probabilities[4, 3, 3:6] = 0.7                # a good part with a 3-px false alarm
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    false_alarms, detections = detection_curve(predictions, min_areas=(1, 2, 3, 4))
    assert false_alarms[0] == 0 and false_alarms[-1] == 1 and detections[-1] == 1
    assert np.all(np.diff(false_alarms) > 0) and np.all(np.diff(detections) >= 0)
    for k in range(3):                            # every pair of the grid lies on or under the curve
        for level in (1, 2, 3, 4):
            rates = detection_rates(predictions.is_defective, predictions.stats["region"][:, k] >= level)
            on_curve = detections[np.searchsorted(false_alarms, rates["false_alarm_rate"])]
            assert rates["detection_rate"] <= on_curve
    point = choose_operating_point(predictions, target=0.6, min_areas=(1, 2, 3, 4))
    assert point.detection_rate <= detections[np.searchsorted(false_alarms, point.false_alarm_rate)]


def test_readme_table_is_replaced_between_markers(tmp_path):
    from scratch_utils.compare import markdown_table, update_readme
    row = {"name": "unet", "loss": "bce_dice", "encoder_weights": "", "epochs": 10, "parameters": 2.2e6,
           "input": "scale 0.5, 128 px tiles",
           "train_seconds": 240.0, "inference_ms_per_photo": 12.5, "mask_threshold": 0.7, "threshold": 0.4, "min_area": 3,
           "val_detection_rate": 0.9, "val_false_alarm_rate": 0.25, "target_met_on_val": False}
    row.update({f"test_{k}": 0.5 for k in ("dice", "iou", "miou", "tolerance_f1", "precision",
                                            "recall", "detection_rate", "false_alarm_rate", "auroc")})
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\noutro\n")
    assert update_readme(readme, [row])
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("intro") and text.rstrip().endswith("outro")
    table = markdown_table([row])
    assert ("| unet | bce_dice | - | scale 0.5, 128 px tiles | 10 | 2.20 M | 4.0 | 12 | 0.70 | 0.40 / 3 px "
            "| 90% / 25% (target missed) |") in table
    row["target_met_on_val"] = True
    assert "| 90% / 25% |" in markdown_table([row])


def test_mask_captions_say_dice_on_a_defect_and_masked_pixels_on_a_good_part():
    from scratch_utils.report import mask_caption
    empty = np.zeros((3, 3), bool)
    assert mask_caption(T, P) == "Dice 0.50"
    assert mask_caption(empty, empty) == "empty mask"
    assert mask_caption(empty, P) == "2 px masked on a good part"   # not "Dice 0.00"
