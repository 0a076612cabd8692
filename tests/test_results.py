"""The committed results of the default-profile run are complete and finite."""
import csv
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
MODELS = {"encoder_decoder", "unet", "unet_bce", "unet_dice", "vgg16_unet", "unet_squashed"}
REFERENCES = {"ridge_filter", "flag_every_part"}   # rows that judge the models
SCORES = ["dice", "iou", "miou", "tolerance_f1", "precision", "recall", "detection_rate",
          "false_alarm_rate", "auroc"]
COSTS = ["parameters", "train_seconds", "train_tiles_per_s", "inference_ms_per_photo"]


@pytest.fixture(scope="module")
def rows():
    path = RESULTS / "comparison.json"
    assert path.is_file(), "results/comparison.json is missing: run `make report`"
    return json.loads(path.read_text())["models"]


def models(rows):
    return [row for row in rows if row["name"] in MODELS or row["name"].endswith("_rule")]


def test_every_model_and_reference_row_is_compared(rows):
    names = {row["name"] for row in rows}
    assert MODELS | REFERENCES <= names, f"missing: {(MODELS | REFERENCES) - names}"
    assert {row["model"] for row in models(rows)} == {"encoder_decoder", "unet", "vgg16_unet"}
    assert {row["loss"] for row in models(rows) if row["model"] == "unet"} == {"bce", "dice", "bce_dice"}
    flag = next(row for row in rows if row["name"] == "flag_every_part")
    assert flag["test_detection_rate"] == 1 and flag["test_false_alarm_rate"] == 1


def test_test_scores_carry_intervals_around_them(rows):
    for row in rows:
        if row["name"] == "flag_every_part":
            continue
        for key in ("dice", "detection_rate", "located_detection_rate", "false_alarm_rate"):
            low, value, high = (row[f"test_{key}{end}"] for end in ("_low", "", "_high"))
            assert 0 <= low <= high <= 1 and low - 1e-4 <= value <= high + 1e-4, (row["name"], key)
        assert 0 <= row["test_located_detection_rate"] <= row["test_detection_rate"], row["name"]


def test_every_metric_is_there_and_finite(rows):
    for row in models(rows):
        for key in COSTS + ["mask_threshold", "decision_threshold", "min_region", "val_detection_rate",
                            "val_false_alarm_rate"]:
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), (row["name"], key)
        for split in ("val", "test"):
            for score in SCORES:
                value = row[f"{split}_{score}"]
                assert isinstance(value, (int, float)) and 0 <= value <= 1, (row["name"], split, score)


def test_the_seeds_squash_is_the_baseline_row_and_the_rest_keep_resolution(rows):
    inputs = {row["name"]: row["input"] for row in rows}
    assert inputs["unet_squashed"].endswith("px square")
    assert all(value.startswith("scale") for name, value in inputs.items()
               if name in MODELS - {"unet_squashed"})


def test_committed_operating_points_lie_on_their_search_and_agree_with_validation(rows):
    """A region rule's point lies on its grid; a head's threshold is one of its validation scores
    (a probability). target_met_on_val is the plant's whole target; its detection half is located,
    with the margin the split's size asks for."""
    from scratch_utils.decision import MIN_REGIONS
    from scratch_utils.evaluation import THRESHOLDS
    for row in rows:
        if row["name"] == "flag_every_part":
            continue
        assert row["mask_threshold"] in THRESHOLDS, row["name"]
        if row["rule"] == "regions":
            assert row["decision_threshold"] in THRESHOLDS and row["min_region"] in MIN_REGIONS, row["name"]
            assert row["region_measure"] in ("length", "area"), row["name"]
        else:
            assert row["rule"] == "head" and 0 <= row["decision_threshold"] <= 1, row["name"]
        located, false_alarms = row["val_located_detection_rate"], row["val_false_alarm_rate"]
        assert row["detection_target_met_on_val"] == (located >= 0.95), row["name"]
        assert row["target_met_on_val"] == (located >= 0.95 and false_alarms <= 0.05), row["name"]


def test_the_split_can_resolve_the_plants_limit():
    """At least 150 good and 100 defective parts on validation, 300 and 100 on test: 5% of the
    good parts is at least 8 and 15 parts."""
    from scratch_utils.profiles import get_profile
    from scratch_utils.synthetic import _rng
    for split, (good, defective) in (("val", (150, 100)), ("test", (300, 100))):
        spec = get_profile("default").synthetic[split]
        goods = sum(_rng(spec.seed, i).random() < spec.good_fraction for i in range(spec.count))
        assert goods >= good and spec.count - goods >= defective, (split, goods, spec.count - goods)


def test_chosen_points_lie_inside_their_grids_or_at_a_real_limit(rows):
    """A point chosen at a grid's edge means the optimum may lie beyond it. The threshold grid
    reaches 0.001 and 0.999 (as far as 0 and 1 can matter), the region grid starts at 1 px (a
    real limit) and must never be chosen at its top."""
    from scratch_utils.decision import MIN_REGIONS
    from scratch_utils.evaluation import THRESHOLDS
    assert THRESHOLDS[0] <= 0.001 and THRESHOLDS[-1] >= 0.999 and MIN_REGIONS[0] == 1
    for row in rows:
        if row.get("rule") == "regions" and row["val_false_alarm_rate"] < 1:   # 1: flags every part anyway
            assert row["min_region"] < MIN_REGIONS[-1], row["name"]


def test_csv_matches_json(rows):
    with (RESULTS / "comparison.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    for row, line in zip(rows, table):
        for key in ("test_dice", "test_detection_rate", "test_false_alarm_rate"):
            if row[key] is None:                      # flag_every_part draws no mask
                assert line[key] == "", (row["name"], key)
            else:
                assert float(line[key]) == pytest.approx(row[key]), (row["name"], key)


def test_readme_shows_the_committed_results(rows):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for row in rows:
        assert f"| {row['name']} |" in readme, f"README results table lacks {row['name']}"


def test_the_recipe_page_shows_the_committed_benchmark_numbers():
    """docs/recipe.md's tables are what the benchmark JSON says (benchmarks/docs_tables.py)."""
    import sys
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from docs_tables import DOC, block, tables
    text = DOC.read_text(encoding="utf-8")
    for name, table in tables().items():
        assert block(text, name) == table, f"docs/recipe.md's {name} table is stale: run benchmarks/docs_tables.py"


def test_readme_conclusions_are_the_ones_the_committed_numbers_give(rows):
    """The README's verdict and rankings are written from results/comparison.json, not by hand:
    a ranking that contradicts the committed numbers fails here."""
    from scratch_utils.report import (README_RANKINGS, README_SPLIT, README_VERDICT, rankings_block, split_block,
                                      verdict_block)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for (start, end), block in ((README_VERDICT, verdict_block), (README_RANKINGS, rankings_block),
                                (README_SPLIT, split_block)):
        assert start in readme and end in readme, f"README lacks {start}"
        assert readme.split(start, 1)[1].split(end, 1)[0].strip() == block(rows).strip()


def test_notebook_05_prints_the_verdict_of_the_committed_numbers(rows):
    from scratch_utils.compare import verdict
    assert verdict(rows) in printed_lines("05_model_comparison.ipynb")


def test_notebook_05_prints_the_rankings_of_the_committed_numbers(rows):
    """The notebook ranks from its rows as results/ holds them (rounded to 4 places), so it prints
    the README's digits (0.6565 is 0.656 in both, not 0.657 in one)."""
    from scratch_utils.compare import rankings
    for line in rankings(rows):
        assert line in printed_lines("05_model_comparison.ipynb"), line


def test_a_run_scored_once_is_not_called_finished(rows):
    """One scored epoch gives no trend: the summary says so, and does not call the run finished."""
    from scratch_utils.compare import summary_lines
    by_name = {row["name"]: row for row in rows}
    once = {**by_name["vgg16_unet"], "improving_at_end": None}
    line = summary_lines([once])[-1]
    assert "Not known for vgg16_unet" in line and "No run" not in line, line
    stopped = {**by_name["unet"], "improving_at_end": False}
    line = summary_lines([once, stopped])[-1]
    assert line.startswith("No run scored twice was still improving") and "Not known for vgg16_unet" in line


def printed_lines(name: str) -> str:
    notebook = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
    return "".join("".join(output.get("text", "")) for cell in notebook["cells"] if cell["cell_type"] == "code"
                   for output in cell.get("outputs", []))


@pytest.mark.parametrize("notebook, names", [("03_train_unet.ipynb", ("encoder_decoder", "unet", "unet_squashed")),
                                              ("04_train_vgg16_unet.ipynb", ("vgg16_unet", "unet"))])
def test_the_training_notebooks_summaries_state_the_committed_numbers(rows, notebook, names):
    """Notebooks 03 and 04 end with result lines written from their runs: the same runs notebook 05
    compared, so their lines are the ones the committed rows give."""
    from scratch_utils.compare import summary_lines
    by_name = {row["name"]: row for row in rows}
    for line in summary_lines([by_name[name] for name in names]):
        assert line in printed_lines(notebook), line


def test_the_readme_opens_with_the_course_the_two_commands_and_the_verdict(rows):
    from scratch_utils.compare import verdict
    readme = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(readme) <= 150
    top = "\n".join(readme[:25])
    assert "make report" in top and "make test" in top
    assert verdict(rows).splitlines()[0] in top, "the verdict within the README's first 25 lines"


def test_the_readmes_where_it_breaks_states_the_committed_operating_points(rows):
    """The README's paragraph on where the part call breaks quotes benchmarks/results/operating_points.json
    (validation) and the U-Net's committed test Dice."""
    points = json.loads((ROOT / "benchmarks" / "results" / "operating_points.json").read_text())["models"]
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    unet = points["unet"]["located"]
    assert (f"catches 85% of the defective parts where the defect is at {unet['0.85']:.0%} false alarms, "
            f"and 90% at {unet['0.90']:.0%}") in readme
    worst_case = min(p["located"]["0.95"] for p in points.values() if p["located"]["0.95"] is not None)
    assert f"At 95% every trained model flags {worst_case:.0%} or more of the good parts" in readme
    dice = next(r for r in rows if r["name"] == "unet")["test_dice"]
    assert f"(Dice {dice:.2f})" in readme


def test_the_readme_states_the_committed_report_time():
    timings = json.loads((RESULTS / "report_timings.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert f"`make report` took {round(timings['total_seconds'] / 60)} minutes" in readme


def test_the_readmes_real_photo_sentence_states_the_committed_means():
    """The README's line on the magnetic tiles quotes benchmarks/results/real_magnetic_tile.json (masks as
    published, mean over seeds): the squash, the working scale and the letterbox."""
    runs = json.loads((ROOT / "benchmarks" / "results" / "real_magnetic_tile.json").read_text())["runs"]

    def mean_dice(path):
        values = [r["test"]["dice"] for r in runs
                  if r["masks"] == "published" and r["path"] == path and r.get("split_seed", 0) == 0]
        assert len(values) >= 2, f"two seeds of {path}"
        return sum(values) / len(values)
    squash, scale, letterbox = (mean_dice(p) for p in ("128-px squash", "working scale", "128-px letterbox"))
    assert squash > max(scale, letterbox), "the sentence says the squash wins"
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"the squash wins, test Dice {squash:.3f} against {scale:.3f} ({letterbox:.3f} letterboxed" in readme)
    by_split = {}   # training seed 0 on each split: (squash's lead on val, on test)
    for r in runs:
        if r["masks"] == "published" and r["seed"] == 0 and r["path"] in ("128-px squash", "working scale"):
            sign = 1 if r["path"] == "128-px squash" else -1
            cell = by_split.setdefault(r.get("split_seed", 0), [0.0, 0.0])
            cell[0], cell[1] = cell[0] + sign * r["val"]["dice"], cell[1] + sign * r["test"]["dice"]
    leads = sum(lead > 0 for cells in by_split.values() for lead in cells)
    words = {3: "three", 5: "five", 6: "six"}
    assert (f"over {words[len(by_split)]} splits it leads on {words[leads]} of {words[2 * len(by_split)]} "
            "validation and test scores") in readme


def test_the_unet_against_squash_line_calls_equal_what_it_prints_equal():
    """At the three decimals the line prints, 0.8936 against 0.8941 is "equal", not a trail."""
    from scratch_utils.compare import rankings
    base = {"epochs": 8, "test_dice_low": 0.0, "test_dice_high": 1.0}
    unet = {**base, "name": "unet", "val_dice": 0.55, "test_dice": 0.48, "test_dice_defective_parts": 0.51,
            "val_auroc": 0.8936, "test_auroc": 0.90}
    squash = {**base, "name": "unet_squashed", "val_dice": 0.60, "test_dice": 0.59, "test_dice_defective_parts": 0.40,
              "val_auroc": 0.8941, "test_auroc": 0.89}
    line = rankings([unet, squash])[-1]
    assert line.endswith("the U-Net trails on validation Dice, test Dice (equal on validation AUROC).")


def test_galleries_of_one_split_can_show_other_parts():
    from scratch_utils.evaluation import pick_parts
    rows = [{"stem": f"d{k}", "quality": "defective"} for k in range(6)] + [{"stem": f"g{k}", "quality": "good"} for k in range(4)]
    assert [r["stem"] for r in pick_parts(rows)] == ["d0", "d1", "d2", "g0"]
    assert [r["stem"] for r in pick_parts(rows, offset=3)] == ["d3", "d4", "d5", "g3"]


def test_the_verdict_never_rounds_a_miss_up_to_the_target(rows):
    """94.7% caught where the defect is is printed with its decimal, not as the target's 95%."""
    from scratch_utils.compare import chosen_model, verdict
    best = chosen_model(rows)
    shifted = [{**r, "test_located_detection_rate": 0.9469} if r["name"] == best["name"] else r for r in rows]
    assert "it catches 94.7% (95% interval" in verdict(shifted)
    shifted = [{**r, "test_located_detection_rate": 0.9735} if r["name"] == best["name"] else r for r in rows]
    assert "it catches 97% (95% interval" in verdict(shifted)


def test_the_readmes_visibility_sentence_states_the_committed_numbers():
    """The README's line on faint labels quotes benchmarks/results/visibility_default_prepared-scaled_val.json."""
    result = json.loads((ROOT / "benchmarks" / "results" / "visibility_default_prepared-scaled_val.json").read_text())
    calls = result["visible"]["calls"]

    def mean_at_95(runs):
        return sum(r["located"]["0.95"] for r in runs) / len(runs)
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"{result['summary']['under_levels']['8']} of the {result['summary']['defective_parts']} defective "
            "validation parts carry only a defect under 8 levels") in readme
    assert (f"flags {mean_at_95(calls['visible defects']):.0%} at 95% located against "
            f"{mean_at_95(calls['as generated']):.0%} (two seeds each") in readme
    assert len(calls["visible defects"]) == len(calls["as generated"]) == 2
