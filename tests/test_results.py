"""The committed results of the default-profile run are complete and finite."""
import csv
import json
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
MODELS = {"encoder_decoder", "unet", "unet_bce", "unet_dice", "vgg16_unet", "unet_squashed"}
SCORES = ["dice", "iou", "miou", "tolerance_f1", "precision", "recall", "detection_rate",
          "false_alarm_rate", "auroc"]
COSTS = ["parameters", "train_seconds", "train_tiles_per_s", "inference_ms_per_photo"]


@pytest.fixture(scope="module")
def rows():
    path = RESULTS / "comparison.json"
    assert path.is_file(), "results/comparison.json is missing: run `make report`"
    return json.loads(path.read_text())["models"]


def test_every_model_is_compared(rows):
    names = {row["name"] for row in rows}
    assert MODELS <= names, f"missing: {MODELS - names}"
    assert {row["model"] for row in rows} == {"encoder_decoder", "unet", "vgg16_unet"}
    assert {row["loss"] for row in rows if row["model"] == "unet"} == {"bce", "dice", "bce_dice"}


def test_every_metric_is_there_and_finite(rows):
    for row in rows:
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
    assert all(value.startswith("scale") for name, value in inputs.items() if name != "unet_squashed")


def test_committed_operating_points_lie_on_the_search_grid_and_agree_with_validation(rows):
    from scratch_utils.compare import MIN_REGIONS
    from scratch_utils.evaluation import THRESHOLDS
    for row in rows:
        assert row["mask_threshold"] in THRESHOLDS and row["decision_threshold"] in THRESHOLDS, row["name"]
        assert row["min_region"] in MIN_REGIONS, row["name"]
        assert row["target_met_on_val"] == (row["val_detection_rate"] >= 0.95), row["name"]


def test_csv_matches_json(rows):
    with (RESULTS / "comparison.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [r["name"] for r in table] == [r["name"] for r in rows]
    for row, line in zip(rows, table):
        assert float(line["test_dice"]) == pytest.approx(row["test_dice"])


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
