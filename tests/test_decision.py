"""The part-level decision: region length against area, the part head, where a call points, the
margin, exact and bootstrap intervals, hard negatives, and the ridge-filter reference."""
import numpy as np
import pytest

from scratch_utils.decision import called_defective, region_call
from scratch_utils.metrics import bootstrap_interval
from test_metrics import split_predictions


def region_sizes(mask) -> dict:
    """The largest region by each measure, by the rule the product runs (region_call)."""
    return {measure: region_call(mask, measure, 1)[0] for measure in ("length", "area")}


def deciding_regions(mask, measure, minimum):
    return region_call(mask, measure, minimum)[1]



def line_and_blob(size=(40, 60)):
    """A 1-px-wide diagonal-free line of 24 px and a compact 5 x 5 blob (25 px), apart."""
    line, blob = np.zeros(size, bool), np.zeros(size, bool)
    line[10, 5:29] = True
    blob[25:30, 40:45] = True
    return line, blob


def test_length_separates_a_thin_line_from_a_compact_blob_of_the_same_area():
    line, blob = line_and_blob()
    assert region_sizes(line) == {"length": 24, "area": 24}
    blob_sizes = region_sizes(blob)
    assert blob_sizes["area"] == 25 and blob_sizes["length"] <= 5     # its skeleton is a few px
    assert region_sizes(np.zeros((4, 4), bool)) == {"length": 0, "area": 0}
    # by area the two compete (a speck as large as a scratch is called), by length they do not
    assert called_defective(region_sizes(blob)["area"], 20) and called_defective(region_sizes(line)["area"], 20)
    assert called_defective(region_sizes(line)["length"], 20)
    assert not called_defective(blob_sizes["length"], 20)


def test_deciding_regions_keep_only_the_regions_that_made_the_call():
    line, blob = line_and_blob()
    both = line | blob
    by_length = deciding_regions(both, "length", 20)
    assert np.array_equal(by_length, line)
    assert np.array_equal(deciding_regions(both, "area", 20), both)
    assert not deciding_regions(both, "length", 25).any()


def test_a_length_decision_is_chosen_on_validation_when_specks_are_as_large_as_scratches():
    from tests.test_metrics import split_predictions
    from scratch_utils.decision import choose_operating_point
    truths = np.zeros((6, 40, 60), bool)
    probabilities = np.zeros((6, 40, 60), np.float32)
    line, blob = line_and_blob()
    for k in range(3):                        # defective parts: a thin scratch
        truths[k] = line
        probabilities[k][line] = 0.9
    for k in range(3, 6):                     # good parts: a speck of the scratch's area
        probabilities[k][blob] = 0.9
    predictions = split_predictions(truths, probabilities, (0.5,))
    point = choose_operating_point(predictions, target=0.95, min_regions=(1, 8, 16, 24, 32))
    assert point.region_measure == "length" and point.min_region in (8, 16, 24)
    assert (point.detection_rate, point.false_alarm_rate) == (1.0, 0.0)
    area_only = choose_operating_point(predictions, target=0.95, min_regions=(1, 8, 16, 24, 32), measures=("area",))
    assert area_only.false_alarm_rate == 1.0


def test_caught_where_the_defect_is_counts_only_calls_that_overlap_the_truth():
    from tests.test_metrics import split_predictions
    from scratch_utils.evaluation import scores
    from scratch_utils.decision import OperatingPoint
    truths = np.zeros((3, 40, 60), bool)
    probabilities = np.zeros((3, 40, 60), np.float32)
    line, blob = line_and_blob()
    truths[0] = truths[1] = line
    probabilities[0][line] = 0.9                        # caught on the scratch
    probabilities[1][np.roll(line, 20, axis=0)] = 0.9   # caught, but 20 rows away from it
    predictions = split_predictions(truths, probabilities, (0.5,))
    result = scores(predictions, OperatingPoint(mask_threshold=0.5, decision_threshold=0.5, min_region=10),
                    lambda stem: truths[int(stem)])
    assert result["detection_rate"] == 1.0 and result["located_detection_rate"] == 0.5
    assert result["detection_rate_low"] <= result["detection_rate"] <= result["detection_rate_high"]


def test_the_bootstrap_interval_of_a_binomial_rate_covers_it_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    rate, parts, trials = 0.7, 40, 300
    covered = 0
    for trial in range(trials):
        outcomes = rng.random(parts) < rate
        low, high = bootstrap_interval(lambda picked: outcomes[picked].mean(), (np.arange(parts),),
                                       resamples=500, seed=trial)
        covered += low <= rate <= high
    # the percentile bootstrap runs a little under its level at 40 parts; far from 95% is a bug
    assert 0.88 <= covered / trials <= 0.99


def test_the_ridge_filter_finds_a_one_pixel_line_on_noise_and_ignores_a_dark_speck():
    from scratch_utils.reference import ridge_response
    rng = np.random.default_rng(0)
    image = 0.5 + 0.03 * rng.standard_normal((80, 120))
    image[40, 10:70] = 0.3                      # a 1-px dark scratch, 60 px long
    image[10:14, 90:94] = 0.3                   # a dark 4 x 4 speck
    response = ridge_response(image)
    assert response[40, 10:70].mean() > 1.5 * np.percentile(response, 99)   # the line stands out
    called = deciding_regions(response >= 0.5 * np.median(response[40, 10:70]), "length", 20)
    assert called[38:43, 10:70].sum() >= 55                                   # along the line
    assert not called[5:20, 85:100].any()                                    # not the speck


@pytest.mark.parametrize("good", [0, 4])
def test_flag_every_part_catches_all_and_flags_all(good):
    from scratch_utils.reference import flag_every_part
    rows = [{"quality": "defective"}] * 3 + [{"quality": "good"}] * good
    result = flag_every_part(rows)
    assert result["detection_rate"] == 1.0 and result["false_alarm_rate"] == (1.0 if good else 0.0)


def test_a_model_that_masks_every_photo_is_told_it_has_not_learned():
    """The collapse of a run on real photos: every good photo mostly masked, the decision at the
    top of its grid, most good parts flagged. Each cause gets its own warning; a model that masks
    the defects alone gets none, and target_met means the whole target, caught and false alarms."""
    from scratch_utils.decision import choose_operating_point, learning_warnings
    truths = np.zeros((8, 16, 16), bool)
    truths[:4, 8, 2:14] = True                      # 4 defective parts (a scratch each), 4 good
    painted = np.full((8, 16, 16), 0.7, np.float32)  # every photo painted whole, scratch or not
    collapsed = split_predictions(truths, painted)
    point = choose_operating_point(collapsed)
    warnings = learning_warnings(collapsed, point)
    assert point.detection_target_met and not point.target_met and point.false_alarm_rate == 1.0
    assert any("flags 100% of the good validation parts" in w for w in warnings)
    assert any("mostly masked" in w for w in warnings)
    assert any("4 good parts" in w and "cannot be resolved" in w for w in warnings)
    truths = np.concatenate([truths, np.zeros((16, 16, 16), bool)])      # 20 good parts: 5% is one
    learned = split_predictions(truths, np.where(truths, 0.9, 0.01).astype(np.float32))
    good_point = choose_operating_point(learned)
    assert good_point.target_met and good_point.detection_target_met
    assert learning_warnings(learned, good_point) == []


def test_a_decision_at_the_edge_of_its_grid_is_flagged():
    from scratch_utils.decision import choose_operating_point, learning_warnings
    truths = np.zeros((4, 16, 16), bool)
    truths[:2, 8, 2:14] = True
    faint = np.where(truths, 0.0015, 0.0).astype(np.float32)   # only the lowest threshold sees the scratch
    predictions = split_predictions(truths, faint)
    point = choose_operating_point(predictions)
    assert point.decision_threshold == 0.001
    assert any("edge of its search (threshold 0.001)" in w for w in learning_warnings(predictions, point))


def test_the_decision_keeps_a_margin_and_sits_inside_its_plateau():
    """40 defective parts, 40 good: 39/40 (97.5%) passes the 95% target but not its margin of one
    standard error (95% + 3.4 points), so the point that catches all 40 is taken even at one more
    false alarm; among equally good thresholds the middle one is chosen, not the strictest."""
    from scratch_utils.decision import choose_operating_point, required_detection
    truths = np.zeros((80, 8, 8), bool)
    truths[:40, 4, 1:7] = True
    probabilities = np.zeros((80, 8, 8), np.float32)
    probabilities[:39][truths[:39]] = 0.9      # 39 clear scratches
    probabilities[39][truths[39]] = 0.3        # one faint scratch
    probabilities[40, 1, 1:7] = 0.35           # one good part with a faint line (flagged below 0.35)
    predictions = split_predictions(truths, probabilities, (0.1, 0.2, 0.3, 0.5, 0.7, 0.8))
    point = choose_operating_point(predictions, min_regions=(1, 2))
    assert required_detection(40) == pytest.approx(0.95 + np.sqrt(0.95 * 0.05 / 40))
    assert point.located_detection_rate == 1.0 and point.false_alarm_rate == pytest.approx(1 / 40)
    assert point.decision_threshold in (0.1, 0.2, 0.3)
    clear = choose_operating_point(split_predictions(truths[:39].tolist() + truths[40:].tolist(),
                                                     np.concatenate([probabilities[:39], probabilities[40:]]),
                                                     (0.1, 0.2, 0.3, 0.5, 0.7, 0.8)), min_regions=(1,))
    assert clear.false_alarm_rate == 0.0 and clear.decision_threshold == 0.5, \
        "0.5, 0.7, 0.8 all catch every part without a false alarm: the middle one"


def test_a_call_away_from_the_defect_does_not_count_as_located():
    from scratch_utils.decision import calls, choose_operating_point
    truths = np.zeros((2, 40, 40), bool)
    truths[0, 10, 5:30] = True
    probabilities = np.zeros((2, 40, 40), np.float32)
    probabilities[0, 30, 5:30] = 0.9          # a line 20 rows away from the scratch
    predictions = split_predictions(truths, probabilities, (0.5,))
    point = choose_operating_point(predictions, min_regions=(1,))
    decided = calls(predictions, point)
    assert decided["called"][0] and not decided["located"][0]
    assert point.detection_rate == 1.0 and point.located_detection_rate == 0.0


def test_with_no_good_part_on_validation_the_false_alarm_rate_is_said_to_be_unknown():
    from scratch_utils.decision import choose_operating_point, learning_warnings
    truths = np.zeros((20, 8, 8), bool)
    truths[:, 4, 1:7] = True
    predictions = split_predictions(truths, np.where(truths, 0.8, 0.0).astype(np.float32))
    point = choose_operating_point(predictions)
    assert point.located_detection_rate == 1.0
    assert any("no good part" in w for w in learning_warnings(predictions, point))


def test_the_part_head_learns_what_the_region_rule_cannot_tell_apart():
    """Good parts with a long bright seam, defective parts with a scratch of the same length but a
    feature channel that says 'scratch': the region rule sees two equal regions, the head
    separates them from the features."""
    from scratch_utils.decision import fit_head, head_input, head_scores
    rng = np.random.default_rng(0)
    inputs, labels = [], []
    for k in range(60):
        defective = k % 2 == 0
        probability = np.zeros((32, 48), np.float32)
        row = rng.integers(4, 28)
        probability[row, 8:40] = 0.9                      # a long line on every part
        features = rng.normal(0, 0.05, (32, 48, 4)).clip(0).astype(np.float32)
        features[row, 8:40, 1 if defective else 2] = 1.0  # which feature fires tells them apart
        inputs.append(head_input(probability, features))
        labels.append(defective)
    assert inputs[0].shape == (8, 12, 5) and inputs[0].dtype == np.float16
    head = fit_head(inputs[:40], labels[:40], seed=0, epochs=40)
    scores = head_scores(head, inputs[40:])
    held_out = np.asarray(labels[40:])
    assert scores[held_out].min() > scores[~held_out].max(), "every held-out defective part above every good one"


def test_hard_negative_tiles_come_from_the_places_mined(scaled):
    """With places mined on good photos, the hard share of tiles lands on them (within a quarter
    tile), and the others keep their kinds."""
    import tensorflow as tf  # noqa: F401
    from scratch_utils.dataset import Prepared
    from scratch_utils.pipeline import HardNegatives, sample_tiles
    prepared = Prepared.of(scaled)
    rows = prepared.split("train")
    good = [k for k, row in enumerate(rows) if row["quality"] == "good"]
    hard = HardNegatives()
    hard.update(np.array([[good[0], 20, 30]]))
    tiles = sample_tiles(prepared, 200, tile_size=32, defect_share=0.5, seed=3, hard_negatives=hard, hard_share=0.3)
    on_place = [t for t in tiles if t["stem"] == rows[good[0]]["stem"] and abs(t["y0"] + 16 - 20) <= 16]
    share = len(on_place) / len(tiles)
    assert 0.2 < share < 0.45, share
    assert abs(np.mean([t["centred"] for t in tiles]) - 0.5) < 0.1
    with pytest.raises(ValueError, match="add up to at most 1"):
        sample_tiles(prepared, 1, tile_size=32, defect_share=0.8, hard_negatives=hard, hard_share=0.3)


def test_the_ridge_response_is_scikit_images_sato_both_polarities_from_one_hessian():
    from skimage.filters import sato

    from scratch_utils.reference import RIDGE_SIGMAS, ridge_response
    rng = np.random.default_rng(0)
    image = rng.random((40, 60)).astype(np.float32)
    image[20, 5:55] += 1.0                                # a bright line
    image[5:35, 30] -= 1.0                                # a dark one
    expected = np.maximum(sato(image, sigmas=RIDGE_SIGMAS, black_ridges=True),
                          sato(image, sigmas=RIDGE_SIGMAS, black_ridges=False))
    assert np.allclose(ridge_response(image), expected, atol=1e-4)
