"""Scores on tiny masks whose answers are computed by hand, through the functions the course
runs (:mod:`scratch_utils.evaluation` at photo resolution, the formulas of :mod:`scratch_utils.metrics`)."""
import numpy as np
import pytest

from scratch_utils import decision, metrics
from scratch_utils.evaluation import THRESHOLDS, SplitPredictions, pixel_scores, scores, sweep, tolerance_scores
from scratch_utils.decision import OperatingPoint

T = np.array([[1, 1, 0], [0, 0, 0], [0, 0, 0]], bool)
P = np.array([[0, 1, 1], [0, 0, 0], [0, 0, 0]], bool)  # TP 1, FP 1, FN 1, TN 6


def split_predictions(truths, probabilities, thresholds=None):
    """SplitPredictions over in-memory arrays (model and photo resolution the same), swept."""
    predictions = SplitPredictions(None, rows_of(truths), [np.asarray(p, np.float32) for p in probabilities],
                                   tuple(thresholds or THRESHOLDS))
    return sweep(predictions, truths=truth_of(truths))


def rows_of(truths):
    return [{"stem": str(k), "quality": "defective" if np.any(t) else "good"} for k, t in enumerate(truths)]


def truth_of(truths):
    return lambda stem: np.asarray(truths[int(stem)], bool)


def masks_as_probabilities(truths, masks):
    """Masks given as probabilities 0 / 1, unswept (pixel_scores sweeps its own threshold)."""
    return SplitPredictions(None, rows_of(truths), [np.asarray(m, np.float32) for m in masks])


def at(threshold, min_region=1):
    return OperatingPoint(mask_threshold=threshold, decision_threshold=threshold, min_region=min_region)


def test_three_by_three_case():
    result = pixel_scores(masks_as_probabilities([T], [P]), 0.5, truth_of([T]))
    assert result["iou"] == pytest.approx(1 / 3)
    assert result["dice"] == pytest.approx(1 / 2)
    assert result["precision"] == pytest.approx(1 / 2) and result["recall"] == pytest.approx(1 / 2)
    assert result["miou"] == pytest.approx((1 / 3 + 6 / 8) / 2)


def test_empty_masks_follow_the_stated_rule():
    empty = np.zeros((3, 3), bool)
    truths = [empty, empty, T]
    result = scores(split_predictions(truths, [empty, T, T]), at(0.5), truth_of(truths))
    assert result["dice_per_image"] == pytest.approx((1.0 + 0.0 + 1.0) / 3)   # good & empty counts 1
    pooled = pixel_scores(masks_as_probabilities([empty, T], [empty, T]), 0.5, truth_of([empty, T]))
    assert pooled["dice"] == 1.0 and pooled["iou"] == 1.0
    nothing = pixel_scores(masks_as_probabilities([empty], [empty]), 0.5, truth_of([empty]))
    assert nothing["precision"] == 1.0 and nothing["recall"] == 1.0


def test_tolerance_f1_forgives_a_one_pixel_offset_only_within_tolerance():
    true = np.zeros((9, 9), bool)
    true[4, 1:8] = True
    shifted = np.roll(true, 1, axis=0)  # the scratch, one pixel lower
    far = np.roll(true, 3, axis=0)
    predictions = masks_as_probabilities([true, true], [shifted, far])
    assert pixel_scores(masks_as_probabilities([true], [shifted]), 0.5, truth_of([true]))["dice"] == 0.0
    one = SplitPredictions(None, rows_of([true]), [shifted.astype(np.float32)])
    assert tolerance_scores(one, 0.5, truth_of([true]), tolerance=2)["tolerance_f1"] == 1.0
    other = SplitPredictions(None, rows_of([true]), [far.astype(np.float32)])
    assert tolerance_scores(other, 0.5, truth_of([true]), tolerance=2)["tolerance_f1"] == 0.0
    both = tolerance_scores(predictions, 0.5, truth_of([true, true]), tolerance=2)
    assert both["tolerance_precision"] == pytest.approx(0.5) and both["tolerance_recall"] == pytest.approx(0.5)


def test_tolerance_uses_a_disk():
    assert metrics.disk(1).sum() == 5 and metrics.disk(2).sum() == 13
    point = np.zeros((5, 5), bool)
    point[2, 2] = True
    diagonal = np.zeros((5, 5), bool)
    diagonal[3, 3] = True                       # sqrt(2) px away: within 2, not within 1
    assert metrics.tolerance_counts(point, diagonal, 1)["hits"] == 0
    assert metrics.tolerance_counts(point, diagonal, 2)["hits"] == 1


def test_part_calls_and_rates():
    truths = [np.eye(3, dtype=bool)] * 2 + [np.zeros((3, 3), bool)] * 2
    probabilities = np.zeros((4, 3, 3))
    probabilities[0, 0, :2] = 0.9   # defective, 2 px: caught at min region 2
    probabilities[1, 0, 0] = 0.9    # defective, 1 px: missed at min region 2
    probabilities[2, 1, 1] = 0.6    # good, 1 px: no alarm at min region 2
    predictions = split_predictions(truths, probabilities)
    strict = scores(predictions, at(0.5, min_region=2), truth_of(truths))
    assert strict["detection_rate"] == 0.5 and strict["false_alarm_rate"] == 0.0
    loose = scores(predictions, at(0.5, min_region=1), truth_of(truths))
    assert loose["detection_rate"] == 1.0 and loose["false_alarm_rate"] == 0.5


def test_a_part_is_called_on_one_region_not_on_scattered_specks():
    specks = np.zeros((9, 9))
    specks[::4, ::4] = 0.9                              # 9 isolated dust specks
    scratch = np.zeros((9, 9))
    scratch[np.arange(5), np.arange(5)] = 0.9           # a 5-px diagonal hairline
    assert decision.region_call(specks >= 0.5, "area", 1)[0] == 1
    assert decision.region_call(scratch >= 0.5, "area", 1)[0] == 5   # diagonal pixels connect
    assert decision.region_call(np.zeros((3, 3), bool), "area", 1)[0] == 0
    truths = [np.zeros((9, 9), bool), scratch > 0]
    result = scores(split_predictions(truths, [specks, scratch]), at(0.5, min_region=4), truth_of(truths))
    assert result["detection_rate"] == 1.0 and result["false_alarm_rate"] == 0.0


def test_auroc():
    assert metrics.auroc([1, 1, 0, 0], [0.9, 0.8, 0.1, 0.2]) == 1.0
    assert metrics.auroc([1, 0], [0.5, 0.5]) == 0.5
    assert metrics.auroc([1, 1, 0], [0.2, 0.9, 0.5]) == 0.5


def test_a_blank_mask_scores_zero_where_pixel_accuracy_would_flatter_it():
    truths = [np.zeros((20, 20), bool) for _ in range(10)]
    for t in truths[:5]:
        t[10, 5:15] = True                               # 1.25% of the pixels
    result = scores(split_predictions(truths, [np.zeros((20, 20))] * 10), at(0.5), truth_of(truths))
    assert result["dice"] == 0.0 and result["recall"] == 0.0 and result["detection_rate"] == 0.0
    assert "pixel_accuracy" not in result


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


def test_operating_point_meets_the_target_with_fewest_false_alarms():
    from scratch_utils.decision import choose_operating_point
    truths = np.zeros((6, 4, 4), bool)
    truths[:3, 0, 0] = True                       # parts 0-2 defective, 3-5 good
    probabilities = np.zeros((6, 4, 4))
    probabilities[0, 0, :3] = 0.9                 # strong 3-px response
    probabilities[1, 0, :2] = 0.6                 # weaker 2-px response
    probabilities[2, 0, 0] = 0.3                  # faint 1-px response
    probabilities[3, 1, 1] = 0.7                  # a good part with a 1-px false alarm
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    point = choose_operating_point(predictions, target=0.95, min_regions=(1, 2, 3))
    # Catching all three needs threshold 0.25 and area 1, which also flags part 3.
    assert (point.decision_threshold, point.min_region, point.detection_target_met) == (0.25, 1, True)
    assert not point.target_met, "a third of the good parts flagged: the plant's whole target is missed"
    assert point.detection_rate == 1.0 and point.false_alarm_rate == pytest.approx(1 / 3)
    relaxed = choose_operating_point(predictions, target=0.6, min_regions=(1, 2, 3))
    # 60% with a margin of one standard error at 3 parts is 88%: still all three
    assert relaxed.required_detection == pytest.approx(0.6 + np.sqrt(0.6 * 0.4 / 3))
    assert relaxed.detection_rate == 1.0
    impossible = choose_operating_point(split_predictions(truths, np.zeros_like(probabilities)),
                                        target=0.95)
    assert not impossible.target_met and not impossible.detection_target_met


def test_mask_threshold_is_chosen_for_dice_apart_from_the_decision_rule():
    from scratch_utils.decision import choose_operating_point
    from scratch_utils.evaluation import scores
    truths = np.zeros((3, 4, 4), bool)
    truths[0, 0, :] = True                        # a 4-px scratch
    truths[1, 0, 0] = True                        # a faint 1-px defect
    probabilities = np.zeros((3, 4, 4))           # part 2 is good and quiet
    probabilities[0, 0, :] = 0.9
    probabilities[0, 1, :] = 0.3                  # a halo beside the scratch
    probabilities[1, 0, 0] = 0.3
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    point = choose_operating_point(predictions, target=0.95, min_regions=(1, 2))
    # Catching the faint part needs 0.25; the mask is best (Dice 8/9) at 0.5, without the halo.
    assert (point.decision_threshold, point.min_region, point.mask_threshold) == (0.25, 1, 0.5)
    truths_by_stem = lambda stem: truths[int(stem)]  # noqa: E731
    result = scores(predictions, point, truths=truths_by_stem)
    assert result["dice"] == pytest.approx(8 / 9) and result["detection_rate"] == 1.0
    assert result["dice_defective_parts"] == pytest.approx(0.5)   # the scratch 1.0, the faint part 0.0
    one_threshold = scores(predictions, at(0.25), truths=truths_by_stem)
    assert one_threshold["dice"] == pytest.approx(10 / 14)


def test_threshold_sweep_counts_pixels_like_a_direct_comparison():
    from scratch_utils.evaluation import pixel_curve
    rng = np.random.default_rng(1)
    truths = rng.random((5, 9, 7)) > 0.8
    probabilities = np.clip(truths * 0.5 + rng.random((5, 9, 7)) * 0.6, 0, 1)
    predictions = split_predictions(truths, probabilities)
    curve = pixel_curve(predictions)
    for k, threshold in enumerate(predictions.thresholds):
        predicted = probabilities.astype(np.float32) >= np.float32(threshold)
        tp, fp = np.sum(truths & predicted), np.sum(~truths & predicted)
        fn, tn = np.sum(truths & ~predicted), np.sum(~truths & ~predicted)
        direct = metrics.scores_from_counts(tp, fp, fn, tn)
        for key in ("dice", "iou", "miou", "precision", "recall"):
            assert curve[key][k] == pytest.approx(direct[key]), (threshold, key)


def test_detection_curve_is_the_best_of_the_searched_grid_and_the_chosen_point_lies_under_it():
    from scratch_utils.decision import choose_operating_point, detection_curve
    from scratch_utils.metrics import detection_rates
    truths = np.zeros((6, 8, 8), bool)
    truths[:3, 0, :4] = True
    rng = np.random.default_rng(0)
    probabilities = rng.random((6, 8, 8)) * 0.4
    probabilities[0, 0, :4] = 0.9                 # clear scratch
    probabilities[1, 0, :2] = 0.6                 # weaker, shorter
    probabilities[4, 3, 3:6] = 0.7                # a good part with a 3-px false alarm
    predictions = split_predictions(truths, probabilities, (0.25, 0.5, 0.8))
    false_alarms, detections = detection_curve(predictions, min_regions=(1, 2, 3, 4))
    assert false_alarms[0] == 0 and false_alarms[-1] == 1 and detections[-1] == 1
    assert np.all(np.diff(false_alarms) > 0) and np.all(np.diff(detections) >= 0)
    for measure in ("length", "area"):            # every point of the grid lies on or under the curve
        for k in range(3):
            for level in (1, 2, 3, 4):
                rates = detection_rates(predictions.is_defective, predictions.stats[measure][:, k] >= level)
                on_curve = detections[np.searchsorted(false_alarms, rates["false_alarm_rate"])]
                assert rates["detection_rate"] <= on_curve
    point = choose_operating_point(predictions, target=0.6, min_regions=(1, 2, 3, 4))
    assert point.detection_rate <= detections[np.searchsorted(false_alarms, point.false_alarm_rate)]


def test_located_detection_curve_ends_at_its_best_value_not_at_a_corner():
    """Flagging every part locates nothing new: a defect no region touches keeps the located
    curve below 100% at every false-alarm rate, and 95% located is then not reached."""
    from scratch_utils.decision import detection_curve, false_alarms_at
    truths = np.zeros((4, 8, 8), bool)
    truths[0, 0, :4] = truths[1, 7, :4] = True
    probabilities = np.zeros((4, 8, 8))
    probabilities[0, 0, :4] = 0.9                 # found where it is
    probabilities[1, 3, 3:6] = 0.9                # defective, but the mask is elsewhere
    probabilities[2, 4, 4] = 0.9                  # a good part with a speck
    predictions = split_predictions(truths, probabilities, (0.5,))
    false_alarms, located = detection_curve(predictions, min_regions=(1,))
    assert false_alarms[-1] == 1 and located[-1] == 0.5
    _, caught = detection_curve(predictions, located=False, min_regions=(1,))
    assert caught[-1] == 1                        # any call: flagging every part catches all
    assert false_alarms_at(predictions, target=0.95, unreached=None) is None


def test_readme_table_is_replaced_between_markers(tmp_path):
    from scratch_utils.report import markdown_table, update_readme
    row = {"name": "unet", "loss": "bce_dice", "encoder_weights": "", "epochs": 10, "parameters": 2.2e6,
           "input": "scale 0.5, 128 px tiles",
           "train_seconds": 240.0, "inference_ms_per_photo": 12.5, "mask_threshold": 0.7, "decision_threshold": 0.4, "min_region": 3,
           "region_measure": "length", "val_detection_rate": 0.9, "val_false_alarm_rate": 0.25, "target_met_on_val": False}
    row.update({f"test_{k}": 0.5 for k in ("dice", "iou", "miou", "tolerance_f1", "precision",
                                            "recall", "detection_rate", "false_alarm_rate", "auroc")})
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:start -->\nold\n<!-- results:end -->\noutro\n")
    assert update_readme(readme, [row])
    text = readme.read_text()
    assert "\nold\n" not in text and text.startswith("intro") and text.rstrip().endswith("outro")
    row.update({"test_located_detection_rate": 0.45, "test_located_detection_rate_low": 0.3,
                "test_located_detection_rate_high": 0.6, "test_false_alarm_rate_low": 0.4,
                "test_false_alarm_rate_high": 0.6})
    table = markdown_table([row])
    assert ("| unet | scale 0.5, 128 px tiles | 4.0 | length ≥ 3 px above 0.4 | 0.50 | – | 45% [30%, 60%] "
            "| 50% [40%, 60%] | 50% | 0.50 |") in table
    assert "| part head ≥ 0.413 |" in markdown_table([{**row, "rule": "head", "decision_threshold": 0.41269}])
    reference = {**row, "decision_threshold": None, "train_seconds": 0.0}
    assert "| every part, always |" in markdown_table([reference])


def test_mask_captions_say_dice_on_a_defect_and_masked_pixels_on_a_good_part():
    from scratch_utils.figures import mask_caption
    empty = np.zeros((3, 3), bool)
    assert mask_caption(T, P) == "Dice 0.50"
    assert mask_caption(empty, empty) == "empty mask"
    assert mask_caption(empty, P) == "2 px masked"   # not "Dice 0.00"
    assert mask_caption(T, empty) == "empty mask (Dice 0.00)"   # an empty mask is called so on a defect too


def test_the_gallery_carries_its_legend_and_names_the_regions_behind_a_false_alarm():
    """A good part called defective by faint regions while its mask is empty: the panel says so
    (not "empty mask" under dashed outlines with nothing to explain them)."""
    import matplotlib
    matplotlib.use("Agg")
    from scratch_utils.figures import show_photo_predictions
    from scratch_utils.predict import PhotoPrediction
    photo, good = np.full((120, 200, 3), 128, np.uint8), np.zeros((120, 200), bool)
    faint = good.copy()
    faint[20:24, 30:90] = faint[80:84, 150:160] = True
    call = PhotoPrediction(probability=faint * 0.01, mask=good, defective=True, score=240.0, rule="regions",
                           deciding_regions=faint, model_mask=good, scale=(1.0, 1.0))
    fig = show_photo_predictions([photo], [good], {"unet": [call]}, ["p0"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "true defect (outlined a few px out)", "model's mask", "mask region of 40 px or fewer",
        "regions that made the part's call"]
    assert fig.axes[1].get_title().endswith("mask: empty mask; call from 2 dashed regions")


def test_a_few_pixels_masked_on_a_whole_good_photo_are_circled_and_a_call_near_the_defect_says_how_near():
    import matplotlib
    matplotlib.use("Agg")
    from scratch_utils.figures import show_photo_predictions
    from scratch_utils.predict import PhotoPrediction
    photo, good = np.full((300, 400, 3), 128, np.uint8), np.zeros((300, 400), bool)
    speck, big = good.copy(), good.copy()
    speck[100:103, 200:203] = True          # 9 px on a 400 x 300 photo: invisible unless circled
    big[10:40, 10:40] = True
    truth = good.copy()
    truth[150, 50:150] = True
    beside = good.copy()
    beside[152, 60:70] = True               # 10 px, 2 px off the scratch: located, no overlap, not circled
    def call(mask):
        return PhotoPrediction(probability=mask * 0.9, mask=mask, defective=True, score=1.0, rule="regions",
                               deciding_regions=mask, model_mask=mask, scale=(1.0, 1.0))
    fig = show_photo_predictions([photo, photo], [good, truth], {"unet": [call(speck | big), call(beside)]},
                                 ["good", "defective"])
    circles = [line for line in fig.axes[1].lines if line.get_marker() == "o"]
    assert len(circles) == 1 and circles[0].get_xdata().tolist() == [201.0], "only the small region is circled"
    assert not [line for line in fig.axes[3].lines if line.get_marker() == "o"], "none at the defect"
    assert fig.axes[3].get_title().startswith("unet: called defective, within 2 px of the defect\nmask: Dice 0.00")


def test_the_worst_false_alarms_are_the_most_confident_not_the_first_named():
    from scratch_utils.compare import worst_cases
    truth, good = np.zeros((6, 6), bool), np.zeros((6, 6), bool)
    truth[1, 1:4] = True
    small, large = np.zeros((6, 6)), np.zeros((6, 6))
    small[4, 4] = 1.0
    large[2:5, 2:5] = 1.0
    predictions = split_predictions([truth, good, good], [truth.astype(float), small, large])
    # both good parts are called defective; the one with the 9-px region is the worse alarm
    assert worst_cases(predictions, at(0.5), n=2) == [0, 2]
